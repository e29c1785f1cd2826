"""A bound on request bodies (``PARLEY_MAX_REQUEST_BYTES``): 413 in the surface's error shape.

A declared ``Content-Length`` over the limit is refused before the body is read; a chunked body is
counted as it arrives and refused once it goes over. A plain ASGI middleware, as ``auth``: the
limit comes from the replica's settings at request time.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors, services

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` while a chunked body is read; the HTTPException handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))


def _message(limit: int) -> str:
    return f"Request body too large: at most {limit} bytes are accepted."


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = services.max_request_bytes()
        if limit is None or scope["type"] != "http" or scope["method"] not in METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _too_large(scope, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    if scope["path"].startswith("/openai/"):
        body = errors.openai_body(413, _message(limit), None, "request_too_large")
    else:
        body = {"detail": _message(limit)}
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),  # the unread body is not worth keeping the connection for
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
