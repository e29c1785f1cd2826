"""Small routing helpers shared by the route modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query

from runtime import ids, limits
from runtime.errors import NotFound, ValidationFailed
from runtime.store import Store


def collection(router: APIRouter, method: str, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """Route ``path/`` (what the SDKs send for collections) and ``path`` alike, without a redirect."""

    def register(endpoint: Callable) -> Callable:
        router.add_api_route(path + "/", endpoint, methods=[method], **kwargs)
        router.add_api_route(path, endpoint, methods=[method], include_in_schema=False, **kwargs)
        return endpoint

    return register


# A client's key for one send, on both surfaces: a retry with the same key gets the original run.
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]

# The page size of every list route: outside its range is a 422 on Letta, a 400 on OpenAI.
PageLimit = Annotated[int, Query(ge=1, le=limits.LETTA_MAX_PAGE)]
OpenAIPageLimit = Annotated[int, Query(ge=1, le=limits.OPENAI_MAX_PAGE)]

T = TypeVar("T")


def relative_window(
    items: Sequence[T], key: Callable[[T], str], after: str | None, before: str | None, limit: int, order: str
) -> list[T]:
    """One page of a small in-memory listing with cursors relative to ``order`` (as the store's
    relative listings): after an unknown cursor the page is empty, so a paging client stops."""
    ordered = list(items) if order == "asc" else list(items)[::-1]
    ids_in_order = [key(item) for item in ordered]
    start, stop = 0, len(ordered)
    if after is not None:
        start = ids_in_order.index(after) + 1 if after in ids_in_order else len(ordered)
    if before is not None and before in ids_in_order:
        stop = ids_in_order.index(before)
    window = ordered[start:stop]
    return window[-limit:] if before is not None and after is None else window[:limit]


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
