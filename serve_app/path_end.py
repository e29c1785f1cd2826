"""404 for a path that ends in a line feed, before routing sees it.

Starlette compiles each route to ``^...$``, and Python's ``$`` also matches just before a final
``\\n``. So ``GET /v1/tools/%0A`` (the path ``/v1/tools/\\n`` once decoded) was served by the
collection route ``/v1/tools/`` and answered 200 with the list; every fixed path had the same twin.
No route of either surface takes such a path, so it gets the 404 of an unknown route, in the
surface's body shape (as ``errors.on_http_error`` gives it). A line feed anywhere else is not
special to ``$``: it stays part of an id and gets that id's own 4xx.

A plain ASGI middleware, like ``auth``; it runs just before routing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_json_error


class PathEnd:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("\n"):
            await send_json_error(scope, send, 404, "Not Found", None, {})
            return
        await self.app(scope, receive, send)
