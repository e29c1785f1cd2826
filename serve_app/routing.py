"""Small routing helpers shared by the route modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from runtime import ids
from runtime.errors import NotFound, ValidationFailed
from runtime.store import Store


def collection(router: APIRouter, method: str, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """Route ``path/`` (what the SDKs send for collections) and ``path`` alike, without a redirect."""

    def register(endpoint: Callable) -> Callable:
        router.add_api_route(path + "/", endpoint, methods=[method], **kwargs)
        router.add_api_route(path, endpoint, methods=[method], include_in_schema=False, **kwargs)
        return endpoint

    return register


def require_id(prefix: str, value: str, field: str) -> str:
    """A malformed id is a 422 naming the field; a well-formed unknown one becomes a 404 later."""
    if not ids.is_valid(prefix, value):
        raise ValidationFailed(f"{field}: {value!r} is not a valid id; expected '{prefix}-<uuid4>'")
    return value


async def require_cursors(store: Store, after: str | None, before: str | None) -> None:
    """Message cursors must name stored messages (404 otherwise), as on Letta's agent and run lists."""
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and not await store.get_messages([cursor]):
            raise NotFound(f"{name}: message {cursor} not found")
