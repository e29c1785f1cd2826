"""``GET /v1/health``: answers as soon as the replica is up, without waiting on Ray or the store.

The first health check (a load balancer's, or ``parley serve`` waiting for readiness) also starts
filling the warm pool of conversation actors in the background."""

from __future__ import annotations

from fastapi import APIRouter

from runtime import __version__

from .routing import collection
from .services import warm_up_once

router = APIRouter()


@collection(router, "GET", "/v1/health")
async def health() -> dict[str, str]:
    warm_up_once()
    return {"version": __version__, "status": "ok"}
