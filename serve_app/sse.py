"""Server-sent events framing as the official SDKs parse it.

Only ``data:`` lines, one blank line after each event, and ``event: error`` for a failure inside
a started stream. No ``id:`` lines: the SDKs' decoders keep the last id and turn a later blank
line into an empty event, which they fail to parse.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

MEDIA_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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
