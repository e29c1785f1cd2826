"""Domain objects -> Letta wire JSON (plain dicts, encoded once by the caller).

One stored message expands into several Letta messages: an assistant turn with reasoning and text
becomes ``reasoning_message`` + ``assistant_message``, both with the stored message's id, told
apart by their otid (the message uuid with its low bits set to the Letta message's index).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from runtime import ids
from runtime.agent import Agent, Block
from runtime.clock import utcnow
from runtime.conversation import Conversation
from runtime.events import Delta, Done, MessageDone, Ping, RunEvent, RunStarted, Stopped
from runtime.message import Message, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from runtime.run import Run, Usage
from runtime.tools.tool import Tool
from serve_app import sse


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


# --- agents, blocks, conversations, runs ---------------------------------------------------------
def block(b: Block) -> dict[str, Any]:
    return {
        "id": b.id,
        "label": b.label,
        "value": b.value,
        "limit": b.limit,
        "description": b.description,
        "read_only": b.read_only,
        "hidden": b.hidden,
        "metadata": b.metadata,
        "tags": b.tags,
        "is_template": False,
        "template_name": None,
        "template_id": None,
        "base_template_id": None,
        "project_id": None,
        "created_by_id": None,
        "last_updated_by_id": None,
        "preserve_on_migration": False,
    }


def tool(t: Tool) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "tool_type": t.tool_type,
        "source_type": t.source_type,
        "source_code": t.source_code,
        "json_schema": t.json_schema,
        "args_json_schema": t.args_json_schema,
        "tags": t.tags,
        "return_char_limit": t.return_char_limit,
        "pip_requirements": t.pip_requirements,
        "npm_requirements": t.npm_requirements,
        "default_requires_approval": t.default_requires_approval,
        "enable_parallel_execution": t.enable_parallel_execution,
        "metadata_": t.metadata,
        "created_by_id": None,
        "last_updated_by_id": None,
        "project_id": None,
    }


def agent_state(
    agent: Agent, blocks: Sequence[Block], tools: Sequence[Tool] = (), message_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """``message_ids``: the in-context ids of the agent's default conversation, system message first."""
    rendered_blocks = [block(b) for b in blocks]
    return {
        "id": agent.id,
        "name": agent.name,
        "agent_type": agent.agent_type,
        "system": agent.system,
        "description": agent.description,
        "metadata": agent.metadata,
        "tags": agent.tags,
        "model": agent.model,
        "embedding": agent.embedding,
        "llm_config": agent.llm_config.model_dump(),
        "embedding_config": agent.embedding_config.model_dump() if agent.embedding_config else None,
        "model_settings": agent.model_settings,
        "memory": {
            "agent_type": agent.agent_type,
            "blocks": rendered_blocks,
            "file_blocks": [],
            "git_enabled": False,
            "prompt_template": None,
        },
        "blocks": rendered_blocks,
        "tools": [tool(t) for t in tools],
        "tool_ids": [t.id for t in tools],
        "sources": [],
        "tool_rules": [],
        "message_ids": list(message_ids),
        "identities": [],
        "identity_ids": [],
        "secrets": [],
        "tool_exec_environment_variables": [],
        "timezone": agent.timezone,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
        "last_run_completion": iso(agent.last_run_completion),
        "last_stop_reason": agent.last_stop_reason,
        "message_buffer_autoclear": False,
        "enable_sleeptime": None,
        "multi_agent_group": None,
        "managed_group": None,
        "pending_approval": None,
        "response_format": None,
        "hidden": None,
        "project_id": None,
        "template_id": None,
        "base_template_id": None,
        "created_by_id": None,
        "last_updated_by_id": None,
    }


def conversation(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "agent_id": c.agent_id,
        "summary": c.summary,
        "description": c.description,
        "in_context_message_ids": c.in_context_message_ids,
        "model": c.model,
        "model_settings": c.model_settings,
        "context_window_limit": c.context_window_limit,
        "archived": c.archived,
        "archived_at": iso(c.archived_at),
        "last_message_at": iso(c.last_message_at),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "created_by_id": None,
        "last_updated_by_id": None,
        "isolated_block_ids": [],
    }


def run(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "agent_id": r.agent_id,
        # Runs of an agent's default conversation belong to no conversation, as Letta shows them.
        "conversation_id": None if r.conversation_id == r.agent_id else r.conversation_id,
        "status": r.status.value,
        "stop_reason": r.stop_reason.value if r.stop_reason else None,
        "background": r.background,
        "created_at": iso(r.created_at),
        "completed_at": iso(r.completed_at),
        "metadata": r.metadata,
        "request_config": r.request_config,
        "ttft_ns": r.ttft_ns,
        "total_duration_ns": r.total_duration_ns,
        "callback_url": None,
        "callback_sent_at": None,
        "callback_status_code": None,
        "callback_error": None,
        "base_template_id": None,
    }


# --- messages -------------------------------------------------------------------------------------
def _common(message: Message, message_type: str, otid: str | None, seq_id: int | None) -> dict[str, Any]:
    return {
        "id": message.id,
        "date": iso(message.created_at),
        "message_type": message_type,
        "name": message.name,
        "otid": otid,
        "sender_id": message.sender_id,
        "step_id": message.step_id,
        "run_id": message.run_id,
        "seq_id": seq_id,
    }


def _tool_call(part: ToolCallPart) -> dict[str, Any]:
    return {"name": part.name, "arguments": part.arguments, "tool_call_id": part.id}


def letta_messages(message: Message, seq_id: int | None = None) -> list[dict[str, Any]]:
    """The Letta messages one stored message stands for, in their natural order."""
    if message.role == "system":
        return [{**_common(message, "system_message", message.otid, seq_id), "content": message.text()}]
    if message.role == "user":
        return [{**_common(message, "user_message", message.otid, seq_id), "content": message.text()}]
    if message.role == "tool":
        returns = [part for part in message.parts if isinstance(part, ToolReturnPart)]
        return [_tool_return(message, part, index, seq_id) for index, part in enumerate(returns)]
    out: list[dict[str, Any]] = []
    parts = message.parts
    i = 0
    while i < len(parts):
        part = parts[i]
        otid = ids.otid_for(message.id, len(out))
        if isinstance(part, ReasoningPart):
            out.append(
                {
                    **_common(message, "reasoning_message", otid, seq_id),
                    "reasoning": part.text,
                    "source": part.source,
                    "signature": part.signature,
                }
            )
        elif isinstance(part, TextPart):
            out.append({**_common(message, "assistant_message", otid, seq_id), "content": part.text})
        elif isinstance(part, ToolCallPart):
            # Parallel calls of one turn are one tool_call_message listing all of them.
            calls = [part]
            while i + 1 < len(parts) and isinstance(parts[i + 1], ToolCallPart):
                i += 1
                calls.append(parts[i])  # type: ignore[arg-type]
            out.append(
                {
                    **_common(message, "tool_call_message", otid, seq_id),
                    "tool_call": _tool_call(calls[0]),
                    "tool_calls": [_tool_call(c) for c in calls],
                }
            )
        i += 1
    return out


def _tool_return(message: Message, part: ToolReturnPart, index: int, seq_id: int | None) -> dict[str, Any]:
    entry = {
        "type": "tool",
        "tool_call_id": part.tool_call_id,
        "status": part.status,
        "tool_return": part.content,
        "stdout": part.stdout,
        "stderr": part.stderr,
    }
    return {
        **_common(message, "tool_return_message", ids.otid_for(message.id, index), seq_id),
        "name": part.name,
        "tool_return": part.content,
        "status": part.status,
        "tool_call_id": part.tool_call_id,
        "stdout": part.stdout,
        "stderr": part.stderr,
        "tool_returns": [entry],
    }


def expand(messages: Iterable[Message], include_types: Sequence[str] | None = None) -> list[dict[str, Any]]:
    out = [m for message in messages for m in letta_messages(message)]
    if include_types:
        out = [m for m in out if m["message_type"] in include_types]
    return out


def stop_reason(reason: str) -> dict[str, Any]:
    return {"message_type": "stop_reason", "stop_reason": reason}


def usage_statistics(usage: Usage, run_id: str) -> dict[str, Any]:
    return {
        "message_type": "usage_statistics",
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "total_tokens": usage.total_tokens,
        "step_count": usage.step_count,
        "run_ids": [run_id],
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": None,
        "reasoning_tokens": usage.reasoning_tokens,
        "context_tokens": None,
    }


# --- streams --------------------------------------------------------------------------------------
_DONE = "done"
_ERROR = "error"
_DATA = "data"


class StreamRenderer:
    """Renders a run's events as Letta SSE bytes, one write per batch of events.

    Invariant: every chunk a run's events stand for (its opening ping, each message or delta, the
    stop reason, the usage, an error, ``[DONE]``) takes the next ``seq_id`` of the run, 1, 2, 3, ...
    with no gaps and no repeats. The numbers are counted over the whole run whatever this reader
    shows (pings, message types), so a live stream, a replay and a resume number alike; a renderer
    must therefore be fed the run from its first event. Chunks numbered up to ``starting_after``
    are counted but not sent. A keepalive ping is no chunk of the run: it takes no number and
    carries the last one given, as Letta's keepalives carry the last seq_id seen.
    """

    def __init__(
        self,
        include_pings: bool = True,
        include_types: Sequence[str] | None = None,
        starting_after: int = 0,
    ) -> None:
        self.include_pings = include_pings
        self.include_types = set(include_types) if include_types else None
        self.starting_after = starting_after
        self._numbered = 0  # the seq_id of the run's last chunk counted so far
        # Token streaming: which Letta message (by index) each delta's part belongs to.
        self._letta_index: dict[tuple[str, int], int] = {}
        self._last_part: dict[str, tuple[str, int]] = {}
        self._otids: dict[tuple[str, int], str] = {}  # (message, Letta index) -> otid
        self._date: tuple[int, str | None] = (-1, None)  # (second, its ISO form)

    def render(self, batch: Sequence[RunEvent]) -> bytes:
        out = bytearray()
        for event in batch:
            for chunk in self.chunks(event):
                out += chunk
        return bytes(out)

    def chunks(self, event: RunEvent) -> list[bytes]:
        if isinstance(event, Ping):
            if not self.include_pings:
                return []
            return [sse.data(self._ping(event.run_id, self._numbered or None))]
        out: list[bytes] = []
        for kind, payload in self._payloads(event):
            self._numbered += 1
            if kind == _DONE:
                out.append(sse.DONE)  # the end of every reader's stream, however late it came in
                continue
            if self._numbered <= self.starting_after or not self._shown(payload):
                continue
            payload["seq_id"] = self._numbered
            out.append(sse.named("error", payload) if kind == _ERROR else sse.data(payload))
        return out

    def _payloads(self, event: RunEvent) -> list[tuple[str, dict[str, Any]]]:
        """The run's chunks ``event`` stands for, before numbering and before this reader's filters."""
        if isinstance(event, RunStarted):
            return [(_DATA, self._ping(event.run_id, None))]
        if isinstance(event, MessageDone):
            if event.streamed and event.message.role == "assistant":
                return []  # already sent as deltas
            return [(_DATA, m) for m in letta_messages(event.message)]
        if isinstance(event, Delta):
            return [(_DATA, self._delta(event))]
        if isinstance(event, Stopped):
            payloads = [
                (_DATA, stop_reason(event.stop_reason.value)),
                (_DATA, usage_statistics(event.usage, event.run_id)),
            ]
            if event.error is not None:
                error = {
                    "message_type": "error_message",
                    "run_id": event.run_id,
                    "error_type": event.error.error_type,
                    "message": event.error.message,
                    "detail": event.error.detail,
                }
                payloads.append((_ERROR, error))
            return payloads
        if isinstance(event, Done):
            return [(_DONE, {})]
        return []

    def _shown(self, payload: dict[str, Any]) -> bool:
        message_type = payload.get("message_type")
        if message_type == "ping":
            return self.include_pings
        if self.include_types is None or message_type is None:
            return True
        if message_type in ("stop_reason", "usage_statistics", "error_message"):
            return True
        return message_type in self.include_types

    @staticmethod
    def _ping(run_id: str, seq: int | None) -> dict[str, Any]:
        return {
            "message_type": "ping",
            "id": ids.new_id(ids.PING),
            "date": iso(utcnow()),
            "run_id": run_id,
            "seq_id": seq,
        }

    def _index(self, delta: Delta) -> int:
        key = (delta.message_id, delta.index)
        index = self._letta_index.get(key)
        if index is None:
            last = self._last_part.get(delta.message_id)
            if last is not None and last[0] == "tool_call" == delta.part:
                index = last[1]  # parallel tool calls share one tool_call_message
            else:
                index = 0 if last is None else last[1] + 1
            self._letta_index[key] = index
            self._last_part[delta.message_id] = (delta.part, index)
        return index

    def _delta(self, delta: Delta) -> dict[str, Any]:
        # The date and otid are worked out once per second and per message part, not per delta.
        now = utcnow()
        if self._date[0] != (second := int(now.timestamp())):
            self._date = (second, iso(now))
        key = (delta.message_id, self._index(delta))
        otid = self._otids.get(key)
        if otid is None:
            otid = self._otids[key] = ids.otid_for(*key)
        common = {
            "id": delta.message_id,
            "date": self._date[1],
            "name": None,
            "otid": otid,
            "sender_id": None,
            "step_id": None,
            "run_id": delta.run_id,
            "seq_id": None,  # numbered by chunks()
        }
        if delta.part == "text":
            return {**common, "message_type": "assistant_message", "content": delta.text}
        if delta.part == "reasoning":
            return {
                **common,
                "message_type": "reasoning_message",
                "reasoning": delta.text,
                "source": "reasoner_model",
                "signature": None,
            }
        # A delta carries one partial call; the SDK types ``tool_calls`` on a delta as that one object.
        call = {"name": delta.tool_name, "arguments": delta.text, "tool_call_id": delta.tool_call_id}
        return {**common, "message_type": "tool_call_message", "tool_call": call, "tool_calls": call}
