"""``GET /v1/health``: answers as soon as the replica is up, without waiting on Ray or the store."""

from __future__ import annotations

from fastapi import APIRouter

from runtime import __version__

from .routing import collection

router = APIRouter()


@collection(router, "GET", "/v1/health")
async def health() -> dict[str, str]:
    return {"version": __version__, "status": "ok"}
