"""``GET /v1/_parley/activations``: which conversations are live, where (operators and tests).

Not part of either API surface, so it is left out of the OpenAPI document; it needs the API key
like every route but health.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from .services import ServicesDep

router = APIRouter()


@router.get("/v1/_parley/activations", include_in_schema=False)
async def activations(services: ServicesDep) -> dict[str, Any]:
    reports = await services.conversations.reports()
    return {
        "hosts": [
            {k: v for k, v in asdict(r).items() if k != "activations"}
            for r in sorted(reports, key=lambda r: r.name)
        ],
        "activations": [asdict(a) for r in reports for a in r.activations],
    }
