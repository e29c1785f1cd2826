"""A request's input messages as stored messages, checked against the conversation so far."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import ids
from .errors import InvalidArgument
from .message import Message, ToolCallPart, ToolReturnPart
from .turn import InputMessage


def stored_inputs(
    messages: Sequence[InputMessage],
    agent_id: str,
    conversation_id: str,
    run_id: str | None,
    history: Iterable[Message] = (),
    field: str = "input",
) -> list[Message]:
    """Messages to store for ``messages``. A tool result must answer a call made before it (in
    ``history`` or earlier in ``messages``), and takes that call's tool name."""
    calls: dict[str, ToolCallPart] = {}
    searched = False  # the history is only scanned for a tool result: it grows with every turn
    out: list[Message] = []
    for index, m in enumerate(messages):
        parts = m.message_parts()
        for i, part in enumerate(parts):
            if isinstance(part, ToolCallPart):
                calls[part.id] = part
            elif isinstance(part, ToolReturnPart):
                if not searched:
                    calls = {**{c.id: c for m in history for c in m.tool_calls()}, **calls}
                    searched = True
                call = calls.get(part.tool_call_id)
                if call is None:
                    error = InvalidArgument(
                        f"{field}[{index}]: no function call with call_id {part.tool_call_id!r} "
                        "precedes this function call output"
                    )
                    error.param = f"{field}[{index}].call_id"  # type: ignore[attr-defined]
                    raise error
                if not part.name:
                    parts[i] = part.model_copy(update={"name": call.name})
        out.append(
            Message(
                role=m.role,
                parts=parts,
                agent_id=agent_id,
                conversation_id=conversation_id,
                run_id=run_id,
                otid=m.otid or ids.new_otid(),
                name=m.name,
                sender_id=m.sender_id,
            )
        )
    return out
