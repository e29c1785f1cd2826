"""``/v1/runs``: what a send did, after the fact — status, stop reason, the messages it stored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from actors.conversation_client import RunStream
from runtime import ids
from runtime.errors import Conflict, InvalidArgument, NotFound, ValidationFailed
from runtime.run import Run, RunStatus
from runtime.run_log import load_run_log
from runtime.store import Page
from serve_app.routing import PageLimit, collection, require_cursors, require_id
from serve_app.services import Services, ServicesDep
from serve_app.sse import STREAMING, EventStreamResponse

from . import render
from .schemas import RetrieveStream
from .sending import sse_response

router = APIRouter()

_STATUSES = {status.value for status in RunStatus}
_ACTIVE = (RunStatus.created.value, RunStatus.running.value)


async def load_run(services: Services, run_id: str) -> Run:
    if not ids.is_valid(ids.RUN, run_id):
        raise InvalidArgument(f"Invalid run ID format: {run_id!r}; expected 'run-<uuid4>'")
    run = await services.store.get_run(run_id)
    if run is None:
        raise NotFound(f"Run {run_id} not found")
    return run


@router.get("/v1/runs/{run_id}")
async def retrieve_run(run_id: str, services: ServicesDep) -> dict[str, Any]:
    return render.run(await load_run(services, run_id))


@collection(router, "GET", "/v1/runs")
async def list_runs(
    services: ServicesDep,
    agent_id: str | None = None,
    agent_ids: Annotated[list[str] | None, Query()] = None,
    conversation_id: str | None = None,
    statuses: Annotated[list[str] | None, Query()] = None,
    background: bool | None = None,
    active: bool = False,
    stop_reason: str | None = None,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 100,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    agents = [*(agent_ids or []), *([agent_id] if agent_id else [])]
    for value in agents:
        require_id(ids.AGENT, value, "agent_id")
    unknown = sorted(set(statuses or []) - _STATUSES)
    if unknown:
        raise ValidationFailed(f"statuses: {unknown[0]!r} is not one of {', '.join(sorted(_STATUSES))}")
    wanted = list(_ACTIVE) if active else list(statuses or [])
    runs = await services.store.list_runs(
        Page(limit=limit, order=order, after=after, before=before),
        agent_ids=agents,
        conversation_id=conversation_id,
        statuses=wanted,
        background=background,
        stop_reason=stop_reason,
    )
    return [render.run(r) for r in runs]


@router.get("/v1/runs/{run_id}/messages")
async def list_run_messages(
    run_id: str,
    services: ServicesDep,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 100,
    order: Literal["asc", "desc"] = "asc",
) -> list[dict[str, Any]]:
    run = await load_run(services, run_id)
    await require_cursors(services.store, after, before)
    messages = await services.store.list_run_messages(
        run.id, Page(limit=limit, order=order, after=after, before=before)
    )
    include = run.request_config.get("include_return_message_types")
    if order == "asc":
        return render.expand(messages, include)
    # Newest first means everything reversed, the Letta messages of one stored message included.
    return [m for message in messages for m in reversed(render.expand([message], include))]


@router.post("/v1/runs/{run_id}/stream", response_model=None, responses=STREAMING)
async def stream_run(
    run_id: str, services: ServicesDep, body: RetrieveStream | None = None
) -> EventStreamResponse:
    """Replay a background run's events after ``starting_after``, then follow it live to its end."""
    run = await load_run(services, run_id)
    body = body or RetrieveStream()
    if not run.background:
        raise InvalidArgument("Run was not created in background mode, so it cannot be retrieved.")
    if run.conversation_id is None:
        raise NotFound(f"Run {run_id} has no stream")
    stored = await load_run_log(services.store, run) if run.status.terminal else None
    # Read from the run's first event: the renderer numbers chunks, not events (its invariant).
    if stored is not None:
        # A finished run replays from the store, here: no need to wake its conversation's actor.
        stream = RunStream.of(stored.read(0))
    else:
        stream = await services.conversations.follow(run.conversation_id, run.id, 0)
    renderer = render.StreamRenderer(body.include_pings, starting_after=body.starting_after)
    return sse_response(stream, renderer, services.settings.heartbeat_seconds)


async def cancel_runs(services: Services, runs: list[Run]) -> dict[str, str]:
    """Cancel each run on its conversation's actor; a 409 when none of them was active."""
    cancelled: dict[str, str] = {}
    for run in runs:
        if run.conversation_id is None or run.status.terminal:
            continue
        done = await services.conversations.cancel(run.conversation_id, run.id)
        cancelled.update(dict.fromkeys(done, "cancelled"))
    if not cancelled:
        raise Conflict("No active runs to cancel")
    return cancelled
