"""The OpenAI-compatible API, mounted at ``/openai/v1``: conversations, items and responses."""

from __future__ import annotations

from fastapi import APIRouter

from . import conversation_routes, response_routes

PREFIX = "/openai/v1"

router = APIRouter(prefix=PREFIX)
router.include_router(conversation_routes.router)
router.include_router(response_routes.router)
