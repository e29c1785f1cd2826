"""Server-sent events framing as the official SDKs parse it.

Only ``data:`` lines, one blank line after each event, and ``event: error`` for a failure inside
a started stream. No ``id:`` lines: the SDKs' decoders keep the last id and turn a later blank
line into an empty event, which they fail to parse.
"""

from __future__ import annotations

import json
from typing import Any

MEDIA_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def data(obj: Any) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()


def named(event: str, obj: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(obj)}\n\n".encode()
