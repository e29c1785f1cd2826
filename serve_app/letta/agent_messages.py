"""``/v1/agents/{agent_id}/messages``: sends to an agent's default conversation, and the agent's history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from runtime.errors import NotFound
from runtime.store import Page
from serve_app.routing import IdempotencyKey, PageLimit, require_cursors
from serve_app.services import ServicesDep
from serve_app.sse import STREAMING, EventStreamResponse

from . import render
from .agents import load_agent
from .conversations import addressed, default_conversation
from .runs import cancel_runs, load_run
from .schemas import CancelRuns, SendMessages
from .sending import start_send, turn_request

router = APIRouter()


@router.post("/v1/agents/{agent_id}/messages", response_model=None, responses=STREAMING)
async def send(
    agent_id: str, body: SendMessages, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> EventStreamResponse | JSONResponse:
    """One JSON ``LettaResponse`` by default; SSE with ``streaming: true``."""
    conversation = await default_conversation(services, agent_id)
    return await start_send(
        services, conversation, body, "send_message", bool(body.streaming), idempotency_key
    )


@router.post("/v1/agents/{agent_id}/messages/stream", response_model=None, responses=STREAMING)
async def send_streaming(
    agent_id: str, body: SendMessages, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> EventStreamResponse | JSONResponse:
    conversation = await default_conversation(services, agent_id)
    return await start_send(services, conversation, body, "send_message", True, idempotency_key)


@router.get("/v1/agents/{agent_id}/messages")
async def list_messages(
    agent_id: str,
    services: ServicesDep,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 100,
    order: Literal["asc", "desc"] = "desc",
    conversation_id: str | None = None,
    include_return_message_types: Annotated[list[str] | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Letta's agent history: ``order`` picks the newest or the oldest ``limit`` messages (cursors
    are absolute: ``after`` = newer than), and the answer is always oldest first."""
    agent, _ = await load_agent(services, agent_id)
    await require_cursors(services.store, after, before)
    page = Page(limit=limit, order=order, after=after, before=before)
    if conversation_id is None:
        messages = await services.store.list_agent_messages(agent.id, page)
    else:
        conversation = await addressed(services, conversation_id, agent.id)
        if conversation.agent_id != agent.id:
            raise NotFound(f"Conversation {conversation_id} of agent {agent.id} not found")
        messages = await services.store.list_messages(conversation.id, page)
    if order == "desc":
        messages.reverse()
    return render.expand(messages, include_return_message_types)


@router.post("/v1/agents/{agent_id}/messages/async")
async def send_async(
    agent_id: str, body: SendMessages, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Start a background run and answer with it at once; poll ``GET /v1/runs/{id}`` for its end."""
    body.check_limits(services.limits)
    conversation = await default_conversation(services, agent_id)
    background = body.model_copy(update={"background": True})
    turn = turn_request(background, "send_message_async", idempotency_key)
    stream = await services.conversations.send(conversation.id, turn)
    stream.close()  # a background run outlives its first reader
    run_id = stream.run_id
    if run_id is None:
        raise NotFound("the run did not start")
    run = await services.store.get_run(run_id)
    if run is None:
        raise NotFound(f"Run {run_id} not found")
    return render.run(run)


@router.post("/v1/agents/{agent_id}/messages/cancel")
async def cancel(agent_id: str, services: ServicesDep, body: CancelRuns | None = None) -> dict[str, str]:
    """Cancel the given runs of the agent, or every active one."""
    agent, _ = await load_agent(services, agent_id)
    if body is not None and body.run_ids:
        runs = [await load_run(services, run_id) for run_id in body.run_ids]
        runs = [r for r in runs if r.agent_id == agent.id]
    else:
        runs = await services.store.list_runs(
            Page(limit=1000), agent_ids=[agent.id], statuses=("created", "running")
        )
    return await cancel_runs(services, runs)
