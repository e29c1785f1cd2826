"""Request bodies: a bound on their size, and JSON that the store can hold.

``BodySizeLimit`` (``PARLEY_MAX_REQUEST_BYTES``) answers 413 in the surface's error shape: a declared
``Content-Length`` over the limit is refused without the body being kept, a chunked body is counted
as it arrives and refused once it goes over; either way the rest of the body is read and dropped
(up to the limit again) so that the client, still writing it, gets the answer. A plain ASGI middleware, as ``auth``: the limit comes from
the replica's settings at request time.

``check_json_body``, a dependency of every route, refuses a JSON body nested too deep or holding
half a surrogate pair (``runtime.limits.check_json``) before any route acts on it.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.limits import check_json

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
            complete = await _discard(receive, limit)
            await _too_large(scope, send, limit, complete)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _discard(receive, limit)
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


async def _discard(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of the body, up to ``budget`` bytes; True when it was all read.

    A client writes its whole body before it reads the answer: closing on an unread body would
    reset the connection under it, and it would see a broken connection instead of the 413."""
    dropped = 0
    while dropped <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client left
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def _too_large(scope: Scope, send: Send, limit: int, complete: bool) -> None:
    if scope["path"].startswith("/openai/"):
        body = errors.openai_body(413, _message(limit), None, None)
    else:
        body = {"detail": _message(limit)}
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if not complete:
        headers.append((b"connection", b"close"))  # the rest of the body is not worth reading
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def check_json_body(request: Request) -> None:
    """Runs after FastAPI has read and parsed the body (``request.json()`` is then cached)."""
    if request.method not in METHODS_WITH_BODY:
        return
    try:
        parsed = await request.json()
    except (ValueError, RecursionError):  # not JSON: the route's own validation answers
        return
    check_json(parsed)
