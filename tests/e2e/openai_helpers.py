"""Helpers for end-to-end tests of the OpenAI Conversations + Responses surface (``/openai/v1``)."""

from __future__ import annotations

import itertools
import secrets
import threading
import uuid
from typing import Any

import openai

MODEL = "openai/gpt-4o-mini"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": False,
}

CALL_WEATHER = 'call get_weather with {"city": "Paris"}'
RECALL = "What word did I ask you to remember?"


def unique_word() -> str:
    return "W" + uuid.uuid4().hex[:8].upper()


def missing_conversation_id() -> str:
    """Well-formed (``conv_`` + 48 lowercase hex) but never created."""
    return "conv_" + secrets.token_hex(24)


def part_texts(item: Any) -> list[str]:
    """The text of each content part of a message item."""
    return [part.text for part in item.content]


def message_text(item: Any) -> str:
    return "".join(part_texts(item))


def items_asc(oai: openai.OpenAI, conversation_id: str) -> list[Any]:
    """Every item of a conversation, oldest first (auto-pagination)."""
    return list(oai.conversations.items.list(conversation_id, order="asc", limit=100))


def summarize(items: list[Any]) -> list[tuple[str, ...]]:
    """(type, role, text) for messages, (type, name/call_id or output) for the rest: easy to compare."""
    out: list[tuple[str, ...]] = []
    for item in items:
        if item.type == "message":
            out.append(("message", item.role, message_text(item)))
        elif item.type == "function_call":
            out.append(("function_call", item.name, item.call_id))
        elif item.type == "function_call_output":
            out.append(("function_call_output", item.call_id, item.output))
        else:
            out.append((item.type,))
    return out


def assert_openai_error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``; returns the inner object."""
    body = error.body
    assert isinstance(body, dict), f"error body is not an OpenAI error object: {body!r}"
    assert {"message", "type", "param", "code"} <= body.keys(), body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def assert_sequence_numbers(events: list[Any]) -> None:
    """``sequence_number`` starts at 0 and strictly increases."""
    numbers = [event.sequence_number for event in events]
    assert numbers and numbers[0] == 0, numbers
    assert all(later > earlier for earlier, later in itertools.pairwise(numbers)), numbers


class BackgroundStream:
    """Stream one ``responses.create`` on a thread; ``created`` is set at the first event."""

    def __init__(self, oai: openai.OpenAI, **kwargs: Any) -> None:
        self.created = threading.Event()
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(oai, kwargs), daemon=True)
        self._thread.start()

    def _run(self, oai: openai.OpenAI, kwargs: dict[str, Any]) -> None:
        try:
            for event in oai.responses.create(stream=True, **kwargs):
                self.events.append(event)
                self.created.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.created.set()

    def join(self, timeout: float = 30) -> list[Any]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background response did not finish"
        if self.error is not None:
            raise self.error
        return self.events


def race(calls: list[Any]) -> list[str]:
    """Start the calls at the same instant; "ok", "409" or the exception's name for each, sorted."""
    results: list[str] = []
    barrier = threading.Barrier(len(calls))

    def racer(call: Any) -> None:
        barrier.wait()
        try:
            call()
            results.append("ok")
        except openai.ConflictError:
            results.append("409")
        except Exception as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=racer, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(results)
