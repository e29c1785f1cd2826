"""Turning a Letta send into a run, and a run's events into a Letta response (SSE or JSON)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from actors.conversation_client import RunStream
from runtime.conversation import Conversation
from runtime.errors import ValidationFailed
from runtime.events import MessageDone, RunEvent, Stopped
from runtime.turn import InputMessage, TurnRequest
from serve_app import sse
from serve_app.services import Services
from serve_app.sse import EventStreamResponse

from . import render
from .schemas import SendMessages

log = logging.getLogger(__name__)


async def start_send(
    services: Services,
    conversation: Conversation,
    body: SendMessages,
    run_type: str,
    streaming: bool,
    idempotency_key: str | None,
) -> EventStreamResponse | JSONResponse:
    """Start a run on the conversation's actor; answer as SSE or, when not streaming, as one
    ``LettaResponse``. A busy conversation raises ``ConversationBusy`` here, before any byte."""
    body.check_limits(services.limits)
    if not streaming and (body.stream_tokens or body.background):
        raise ValidationFailed("stream_tokens / background: only with streaming=true")
    stream = await services.conversations.send(conversation.id, turn_request(body, run_type, idempotency_key))
    if not streaming:
        return await json_response(stream, body.include_return_message_types)
    renderer = render.StreamRenderer(body.include_pings, body.include_return_message_types)
    return sse_response(stream, renderer, services.settings.heartbeat_seconds)


def turn_request(body: SendMessages, run_type: str, idempotency_key: str | None) -> TurnRequest:
    """The turn a Letta send asks for. Its idempotency key is the Idempotency-Key header, else the
    client's ``otid`` on its input: the same otid sent again is a retry of that message."""
    messages = [
        InputMessage(role=m.role, text=m.text(), otid=m.otid, name=m.name, sender_id=m.sender_id)
        for m in body.input_messages()
    ]
    if idempotency_key is None:
        idempotency_key = next((m.otid for m in messages if m.otid), None)
    return TurnRequest(
        messages=messages,
        idempotency_key=idempotency_key,
        max_steps=body.max_steps,
        stream_tokens=body.stream_tokens,
        background=body.background,
        request_config={
            "use_assistant_message": body.use_assistant_message,
            "assistant_message_tool_name": body.assistant_message_tool_name,
            "assistant_message_tool_kwarg": body.assistant_message_tool_kwarg,
            "include_return_message_types": body.include_return_message_types,
        },
        run_metadata={"run_type": run_type},
    )


def sse_response(
    stream: RunStream, renderer: render.StreamRenderer, heartbeat: float
) -> sse.EventStreamResponse:
    return sse.EventStreamResponse(_sse_body(stream, renderer), heartbeat)


async def _sse_body(stream: RunStream, renderer: render.StreamRenderer) -> AsyncIterator[bytes]:
    try:
        async for batch in stream:
            yield renderer.render(batch)
    except Exception as exc:  # the run's actor went away mid-stream: say so, then end the stream
        log.warning("stream ended by %s: %s", type(exc).__name__, exc)
        yield sse.named(
            "error",
            {
                "message_type": "error_message",
                "run_id": None,
                "error_type": "stream_incomplete",
                "message": f"the stream was interrupted: {type(exc).__name__}",
                "detail": str(exc),
                "seq_id": None,
            },
        )
        yield sse.DONE
    finally:
        stream.close()


async def collect(stream: RunStream) -> tuple[list[MessageDone], Stopped | None]:
    """Read a run to its end (non-streaming sends)."""
    produced: list[MessageDone] = []
    stopped: Stopped | None = None

    def take(batch: Sequence[RunEvent]) -> None:
        nonlocal stopped
        for event in batch:
            if isinstance(event, MessageDone):
                produced.append(event)
            elif isinstance(event, Stopped):
                stopped = event

    async for batch in stream:
        take(batch)
    return produced, stopped


async def json_response(stream: RunStream, include_types: Sequence[str] | None) -> JSONResponse:
    """``LettaResponse``: the produced messages (not the input), the stop reason and the usage."""
    produced, stopped = await collect(stream)
    messages: list[dict[str, Any]] = []
    for event in produced:
        messages.extend(render.letta_messages(event.message))
    if include_types:
        messages = [m for m in messages if m["message_type"] in include_types]
    body: dict[str, Any] = {"messages": messages, "logprobs": None, "turns": None}
    if stopped is not None:
        body["stop_reason"] = render.stop_reason(stopped.stop_reason.value)
        body["usage"] = render.usage_statistics(stopped.usage, stopped.run_id)
        if stopped.error is not None:
            body["error"] = stopped.error.model_dump()
    return JSONResponse(body)
