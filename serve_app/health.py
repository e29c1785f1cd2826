"""Health: ``GET /v1/health`` is readiness, ``GET /v1/health/live`` is liveness.

Readiness answers 200 only when the server takes work: ``{"version", "status": "ok", "state":
"ready"}`` (Letta's body, plus the state). While starting or draining it answers 503 with
``Retry-After`` and ``status`` and ``state`` both naming the state, so a load balancer stops
sending. Liveness answers 200 in every state: the process is up, do not restart it. Neither
waits on Ray or the store, and neither needs the API key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from actors.lifecycle import ServerState
from runtime import __version__

from . import services
from .lifecycle import RETRY_AFTER_SECONDS
from .routing import collection

router = APIRouter()


@collection(router, "GET", "/v1/health")
async def health() -> JSONResponse:
    state = services.server_state()
    if state is ServerState.ready:
        return JSONResponse({"version": __version__, "status": "ok", "state": state.value})
    return JSONResponse(
        {"version": __version__, "status": state.value, "state": state.value},
        status_code=503,
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


@collection(router, "GET", "/v1/health/live")
async def live() -> dict[str, str]:
    return {"version": __version__, "status": "ok", "state": services.server_state().value}
