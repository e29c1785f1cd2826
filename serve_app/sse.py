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
    """A streaming response that always watches for the client leaving.

    Starlette skips that watch on ASGI servers speaking spec 2.4 and relies on the next write
    failing; a run can be silent for a long time (a slow model), and a foreground run must stop
    as soon as its client is gone, not at the next keepalive.
    """

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type=MEDIA_TYPE, headers=HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def with_heartbeat(source: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """``source``'s chunks, plus a ``HEARTBEAT`` after each ``interval`` seconds of silence.

    In front of the replicas HAProxy treats a client's FIN as a half-close and notices that the
    client is gone only when it next writes to it; the heartbeat is that write, so a foreground
    run whose client left is cancelled within about two intervals instead of running on.
    """
    iterator = source.__aiter__()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield HEARTBEAT
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if pending is not None:
            # Stops the source where it waits; its own clean-up (cancelling the run) runs now.
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
