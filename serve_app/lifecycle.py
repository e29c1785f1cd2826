"""503 with ``Retry-After`` while the server is starting, and for new work while it drains.

What counts as new work while draining: any write (POST, PUT, PATCH, DELETE), except a cancel
and a stream read (``.../cancel``, ``.../stream``; Letta's run and conversation streams are POST).
Reads keep being served, so a client can follow its running turn to its end and list what it
wrote. Health answers in every state: it says which one.

A plain ASGI middleware, like ``auth``: no task or queue per request. It reads the replica's last
known state without an await.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from actors.lifecycle import ServerState

from . import services
from .errors import send_json_error

HEALTH_PATH = "/v1/health"
RETRY_AFTER_SECONDS = 2
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STILL_SERVED_WRITES = ("/cancel", "/stream", "/cancel/", "/stream/")


def refuses(state: ServerState, method: str, path: str) -> bool:
    """Whether a request gets 503 in ``state``."""
    if path.startswith(HEALTH_PATH) or state is ServerState.ready:
        return False
    if state is ServerState.starting:
        return True
    return method in WRITES and not path.endswith(STILL_SERVED_WRITES)


class LifecycleGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = services.server_state()
        if not refuses(state, scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        await unavailable(scope, send, state)


async def unavailable(scope: Scope, send: Send, state: ServerState) -> None:
    if state is ServerState.starting:
        message = "Parley is starting; try again shortly."
    else:
        message = "Parley is shutting down and takes no new work; try again shortly (or on another server)."
    retry_after = {"retry-after": str(RETRY_AFTER_SECONDS)}
    await send_json_error(scope, send, 503, message, f"server_{state}", retry_after)
