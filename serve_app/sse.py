"""Server-sent events framing as the official SDKs parse it.

Only ``data:`` lines, one blank line after each event, and ``event: error`` for a failure inside
a started stream. No ``id:`` lines: the SDKs' decoders keep the last id and turn a later blank
line into an empty event, which they fail to parse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

MEDIA_TYPE = "text/event-stream"
# An SSE comment: ignored by every client (we never send ``id:``, so no empty event results).
HEARTBEAT = b": \n\n"
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# The OpenAPI 200 of a route that may answer with a stream (beside its JSON answer); in OpenAPI 3.1
# the schema of text/event-stream describes one event.
STREAMING: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or server-sent events when streaming",
        "content": {
            MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "description": "One event: `data` is a JSON object, or `[DONE]` at the end",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                    "required": ["data"],
                }
            }
        },
    }
}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def data(obj: Any) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()


def named(event: str, obj: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(obj)}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A streaming response that always watches for the client leaving, and with ``heartbeat``
    sends ``HEARTBEAT`` after each that many seconds of silence.

    Starlette skips that watch on ASGI servers speaking spec 2.4 and relies on the next write
    failing; a run can be silent for a long time (a slow model), and a foreground run must stop
    as soon as its client is gone, not at the next keepalive.

    Why the heartbeat: in front of the replicas HAProxy treats a client's FIN as a half-close and
    notices that the client is gone only when it next writes to it; the heartbeat is that write,
    so a foreground run whose client left is cancelled within about two intervals instead of
    running on. It costs one timer per interval, not a task per chunk: a token stream sends a
    chunk every few tens of milliseconds.
    """

    def __init__(self, content: AsyncIterator[bytes], heartbeat: float = 0.0) -> None:
        super().__init__(content, media_type=MEDIA_TYPE, headers=HEADERS)
        self._heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        beat = _Heartbeat(send, self._heartbeat) if self._heartbeat > 0 else None
        try:
            async for chunk in self.body_iterator:
                if beat is None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                beat.sending = True
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                finally:
                    beat.sending = False
                    beat.last = beat.loop.time()
        finally:
            if beat is not None:
                beat.stop()
            # Cancelled while sending (the client left), the source is closed now, not when
            # collected: its clean-up cancels the run.
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Heartbeat:
    """One stream's heartbeat: a timer that looks at the time of the last chunk when it fires and
    is re-armed for ``interval`` after it, so a chunk only records its time.

    Invariant: a heartbeat is sent only while no chunk is being sent and the stream is open
    (``stop`` cancels the timer and any heartbeat in flight before the stream's last message)."""

    def __init__(self, send: Send, interval: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.sending = False
        self._send = send
        self._interval = interval
        self._beating: asyncio.Task[None] | None = None
        self._timer = self.loop.call_at(self.last + interval, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        due = self.last + self._interval
        if now < due or self.sending:
            self._timer = self.loop.call_at(max(due, now + self._interval / 4), self._check)
            return
        if self._beating is None or self._beating.done():
            self._beating = self.loop.create_task(
                self._send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
            )
            # A client gone makes the write fail; the disconnect watch ends the stream for that.
            self._beating.add_done_callback(_retrieved)
        self.last = now
        self._timer = self.loop.call_at(now + self._interval, self._check)

    def stop(self) -> None:
        self._timer.cancel()
        if self._beating is not None and not self._beating.done():
            self._beating.cancel()


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
