"""Optional bearer-token auth: with ``PARLEY_API_KEY`` set, every route but health needs
``Authorization: Bearer <key>`` (what the Letta and OpenAI SDKs send); 401 otherwise.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: it wraps every request, streams
included, and that one costs a task and a queue per request. The key is read from the replica's
settings at request time (the app object is built before the settings are known).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from . import services
from .errors import send_json_error

OPEN_PATHS = ("/v1/health",)  # load balancers and readiness probes carry no key


class BearerAuth:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = services.api_key()
        if key is None or scope["type"] != "http" or scope["path"].startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        token = _presented(scope)
        if token is not None and hmac.compare_digest(token.encode(), key.encode()):
            await self.app(scope, receive, send)
            return
        await _unauthorized(scope, send)


def _presented(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def _unauthorized(scope: Scope, send: Send) -> None:
    message = "Missing or invalid API key: send 'Authorization: Bearer <key>'."
    await send_json_error(scope, send, 401, message, "invalid_api_key", {"www-authenticate": "Bearer"})
