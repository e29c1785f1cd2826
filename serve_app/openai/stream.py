"""A run's events -> the Responses API stream (``responses.create(stream=True)``).

The SDK's ``responses.stream()`` helper checks the stream as it reads it (spec §7.4) and raises on
any slip, so this renderer keeps one state per output item: every item is announced once
(``output_item.added``, plus its content part) before any delta, is finished once with the same id,
type and call_id, and all of them are finished before the terminal lifecycle event. Item ids are
the ones ``items_of`` gives the stored message, so streamed and listed items agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.events import Delta, MessageDone, RunEvent
from runtime.message import Message

from . import ids
from .items import Item, items_of, output_text

Event = dict[str, Any]

_KIND_OF_PART: dict[str, ids.ItemType] = {
    "text": "message",
    "reasoning": "reasoning",
    "tool_call": "function_call",
}
_TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete"}


@dataclass
class _ItemState:
    item_id: str
    kind: str
    message_id: str
    output_index: int
    text: str = ""  # what the client has so far: message text, reasoning summary or call arguments
    call_id: str = ""
    name: str = ""
    done: bool = False


def _text_of(item: Item) -> str:
    if item["type"] == "message":
        return item["content"][0]["text"]
    if item["type"] == "reasoning":
        return item["summary"][0]["text"]
    if item["type"] == "function_call":
        return item["arguments"]
    return ""


def _added_item(state: _ItemState) -> Item:
    """The item as first announced: no content yet (the SDK appends parts and deltas to it)."""
    if state.kind == "message":
        return {
            "id": state.item_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
    if state.kind == "reasoning":
        return {"id": state.item_id, "type": "reasoning", "summary": [], "status": "in_progress"}
    return {
        "id": state.item_id,
        "type": "function_call",
        "call_id": state.call_id,
        "name": state.name,
        "arguments": "",
        "status": "in_progress",
    }


def _item_from_state(state: _ItemState) -> Item:
    """The finished item when no stored message describes it (a stream cut short)."""
    item = {**_added_item(state), "status": "completed"}
    if state.kind == "message":
        item["content"] = [output_text(state.text)]
    elif state.kind == "reasoning":
        item["summary"] = [{"type": "summary_text", "text": state.text}]
    else:
        item["arguments"] = state.text
    return item


class ResponseStream:
    """Renders one response's SSE events; ``sequence_number`` runs 0, 1, 2, ... across all calls.

    ``created`` is the response as it was created (``responses.created_response``): in progress,
    with no output (items in it would take output indexes of their own, §7.4 rule 3), no usage and
    no error. ``response.created`` and ``response.in_progress`` carry it unchanged, so the stream's
    first events never depend on how far the run got before the stream began.
    """

    def __init__(self, created: dict[str, Any]) -> None:
        if created.get("status") != "in_progress" or created.get("output") or created.get("usage"):
            raise ValueError("a response stream starts from the response as created")
        self.snapshot = created
        self._sequence = 0
        self._items: dict[str, _ItemState] = {}  # by item id, in order of first appearance

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> list[Event]:
        return [
            self._emit("response.created", response=self.snapshot),
            self._emit("response.in_progress", response=self.snapshot),
        ]

    def feed(self, event: RunEvent) -> list[Event]:
        if isinstance(event, Delta):
            return self._delta(event)
        if isinstance(event, MessageDone):
            return self._message_done(event.message)
        return []

    def finish(self, final: dict[str, Any]) -> list[Event]:
        """Close whatever is still open, then the terminal event (the SDK has no cancelled event:
        a cancelled response ends with ``response.failed`` carrying its cancelled snapshot)."""
        known = {item.get("id"): item for item in final.get("output") or []}
        out: list[Event] = []
        for state in list(self._items.values()):
            if not state.done:
                out += self._close(state, known.get(state.item_id) or _item_from_state(state))
        out.append(self._emit(_TERMINAL.get(final.get("status", ""), "response.failed"), response=final))
        return out

    # --- run events --------------------------------------------------------------------------------
    def _delta(self, delta: Delta) -> list[Event]:
        kind = _KIND_OF_PART[delta.part]
        item_id = ids.item_id(delta.message_id, delta.index, kind)
        state = self._items.get(item_id)
        out: list[Event] = []
        if state is None:
            if not delta.text and kind != "function_call":
                return []  # an empty text may never become an item: announce it with its first text
            state = self._new(
                item_id, kind, delta.message_id, delta.tool_call_id or "", delta.tool_name or ""
            )
            out += self._open(state)
        if delta.text and not state.done:
            out.append(self._delta_event(state, delta.text))
        return out

    def _message_done(self, message: Message) -> list[Event]:
        if message.role == "tool":
            return [event for item in items_of(message) for event in self._whole_item(message, item)]
        if message.role != "assistant":
            return []  # the run's input: not output
        out: list[Event] = []
        for item in items_of(message):
            state = self._items.get(item["id"])
            if state is None:  # step streaming, or a part that had no deltas
                state = self._new(
                    item["id"], item["type"], message.id, item.get("call_id", ""), item.get("name", "")
                )
                out += self._open(state)
            if not state.done:
                out += self._close(state, item)
        # Streamed parts the stored message does not list (an empty text) must still be finished.
        for state in list(self._items.values()):
            if state.message_id == message.id and not state.done:
                out += self._close(state, _item_from_state(state))
        return out

    def _whole_item(self, message: Message, item: Item) -> list[Event]:
        """A finished item announced and finished at once (a tool's output)."""
        if item["id"] in self._items:
            return []
        state = self._new(item["id"], item["type"], message.id, item.get("call_id", ""), "")
        state.done = True
        return [
            self._emit(
                "response.output_item.added",
                output_index=state.output_index,
                item={**item, "status": "in_progress"},
            ),
            self._emit("response.output_item.done", output_index=state.output_index, item=item),
        ]

    # --- items -------------------------------------------------------------------------------------
    def _new(self, item_id: str, kind: str, message_id: str, call_id: str, name: str) -> _ItemState:
        state = _ItemState(item_id, kind, message_id, len(self._items), call_id=call_id, name=name)
        self._items[item_id] = state
        return state

    def _open(self, state: _ItemState) -> list[Event]:
        where = {"item_id": state.item_id, "output_index": state.output_index}
        out = [
            self._emit("response.output_item.added", output_index=state.output_index, item=_added_item(state))
        ]
        if state.kind == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(self._emit("response.content_part.added", **where, content_index=0, part=part))
        elif state.kind == "reasoning":
            part = {"type": "summary_text", "text": ""}
            out.append(
                self._emit("response.reasoning_summary_part.added", **where, summary_index=0, part=part)
            )
        return out

    def _delta_event(self, state: _ItemState, text: str) -> Event:
        state.text += text
        where = {"item_id": state.item_id, "output_index": state.output_index}
        if state.kind == "message":
            return self._emit("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])
        if state.kind == "reasoning":
            return self._emit("response.reasoning_summary_text.delta", **where, summary_index=0, delta=text)
        return self._emit("response.function_call_arguments.delta", **where, delta=text)

    def _close(self, state: _ItemState, item: Item) -> list[Event]:
        text = _text_of(item)
        out: list[Event] = []
        # Whatever the deltas did not carry (all of it under step streaming) goes out as one delta.
        if text.startswith(state.text) and len(text) > len(state.text):
            out.append(self._delta_event(state, text[len(state.text) :]))
        state.done = True
        where = {"item_id": state.item_id, "output_index": state.output_index}
        if state.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(
                self._emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            )
            out.append(self._emit("response.content_part.done", **where, content_index=0, part=part))
        elif state.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            out.append(
                self._emit("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            )
            out.append(
                self._emit("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
            )
        elif state.kind == "function_call":
            out.append(self._emit("response.function_call_arguments.done", **where, arguments=text))
        out.append(self._emit("response.output_item.done", output_index=state.output_index, item=item))
        return out

    def error(self, message: str, code: str = "server_error") -> Event:
        """A typed ``error`` event: the stream broke off before the response ended."""
        return self._emit("error", code=code, message=message, param=None)

    def _emit(self, event_type: str, **fields: Any) -> Event:
        event = {"type": event_type, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event


def sse(event: Event) -> bytes:
    """One SSE frame; the SDK reads only ``data:``, hosted OpenAI also names the event."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
