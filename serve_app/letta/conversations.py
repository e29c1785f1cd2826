"""``/v1/conversations``: conversations of an agent, their messages, sends and stream resumes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from runtime import ids
from runtime.clock import utcnow
from runtime.conversation import Conversation
from runtime.conversation_state import ConversationState
from runtime.errors import Conflict, InvalidArgument, NotFound, ValidationFailed
from runtime.handles import split_handle
from runtime.store import Page
from serve_app.routing import IdempotencyKey, PageLimit, collection, require_id
from serve_app.services import Services, ServicesDep
from serve_app.sse import STREAMING, EventStreamResponse

from . import render
from .agents import load_agent
from .schemas import CreateConversation, RetrieveStream, SendMessages, UpdateConversation
from .sending import sse_response, start_send

router = APIRouter()


async def load_conversation(services: Services, conversation_id: str) -> Conversation:
    require_id(ids.CONVERSATION, conversation_id, "conversation_id")
    conversation = await services.store.get_conversation(conversation_id)
    if conversation is None:
        raise NotFound(f"Conversation {conversation_id} not found")
    return conversation


async def default_conversation(services: Services, agent_id: str) -> Conversation:
    """The agent's default conversation: made with the agent, or for an agent older than that the
    first time it is addressed (its actor then writes its system message on the first turn)."""
    agent, _ = await load_agent(services, agent_id)
    conversation = await services.store.get_conversation(agent.id)
    if conversation is None:
        await services.store.create_conversation(Conversation.default_for(agent.id))  # a racing twin is fine
        conversation = await services.store.get_conversation(agent.id)
    if conversation is None:
        raise NotFound(f"Agent with ID {agent_id} not found")
    return conversation


async def addressed(services: Services, conversation_id: str, agent_id: str | None) -> Conversation:
    """What a conversation path names: a ``conv-…`` id, ``default`` with ``agent_id`` (agent-direct
    mode) or, as Letta still accepts, an agent id standing for that agent's default conversation."""
    if conversation_id == "default":
        if not agent_id:
            raise ValidationFailed("agent_id: required when conversation_id is 'default'")
        return await default_conversation(services, agent_id)
    if conversation_id.startswith(f"{ids.AGENT}-"):
        return await default_conversation(services, conversation_id)
    return await load_conversation(services, conversation_id)


@collection(router, "POST", "/v1/conversations")
async def create_conversation(
    services: ServicesDep, agent_id: str, body: CreateConversation | None = None
) -> dict[str, Any]:
    agent, blocks = await load_agent(services, agent_id)
    body = body or CreateConversation()
    if body.model:
        split_handle(body.model, compatible=services.settings.compatible_providers)
    conversation = Conversation(
        id=ids.new_id(ids.CONVERSATION),
        agent_id=agent.id,
        summary=body.summary,
        description=body.description,
        model=body.model,
        model_settings=body.model_settings,
        context_window_limit=body.context_window_limit,
    )
    return render.conversation(await ConversationState.start(services.store, conversation, agent, blocks))


@collection(router, "GET", "/v1/conversations")
async def list_conversations(
    services: ServicesDep,
    agent_id: str | None = None,
    after: str | None = None,
    limit: PageLimit = 50,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    if agent_id is not None:
        require_id(ids.AGENT, agent_id, "agent_id")
    found = await services.store.list_conversations(agent_id, Page(limit=limit, order=order, after=after))
    return [render.conversation(c) for c in found]


@router.get("/v1/conversations/{conversation_id}")
async def retrieve_conversation(conversation_id: str, services: ServicesDep) -> dict[str, Any]:
    return render.conversation(await load_conversation(services, conversation_id))


@router.patch("/v1/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: UpdateConversation, services: ServicesDep
) -> dict[str, Any]:
    # Only the given fields are written: the conversation's actor owns the in-context ids.
    await load_conversation(services, conversation_id)
    given = body.model_fields_set
    if "model" in given and body.model:
        split_handle(body.model, compatible=services.settings.compatible_providers)
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("summary", "description", "model", "model_settings", "context_window_limit")
        if name in given
    }
    if "archived" in given and body.archived is not None:
        changes["archived"] = body.archived
        changes["archived_at"] = utcnow() if body.archived else None
    updated = await services.store.update_conversation(conversation_id, {**changes, "updated_at": utcnow()})
    if updated is None:
        raise NotFound(f"Conversation {conversation_id} not found")
    return render.conversation(updated)


@router.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, services: ServicesDep) -> None:
    conversation = await load_conversation(services, conversation_id)
    await services.conversations.retire(conversation.id)
    await services.store.delete_conversation(conversation.id)


@router.post("/v1/conversations/{conversation_id}/messages", response_model=None, responses=STREAMING)
async def send_message(
    conversation_id: str,
    body: SendMessages,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> EventStreamResponse | JSONResponse:
    conversation = await addressed(services, conversation_id, body.agent_id)
    # Streams unless told not to (the SDK always reads this route as a stream).
    streaming = body.streaming is not False
    return await start_send(
        services, conversation, body, "send_conversation_message", streaming, idempotency_key
    )


@router.get("/v1/conversations/{conversation_id}/messages")
async def list_messages(
    conversation_id: str,
    services: ServicesDep,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 100,
    order: Literal["asc", "desc"] = "desc",
    include_return_message_types: Annotated[list[str] | None, Query()] = None,
    agent_id: str | None = None,
) -> list[dict[str, Any]]:
    conversation = await addressed(services, conversation_id, agent_id)
    page = Page(limit=limit, order=order, after=after, before=before)
    messages = await services.store.list_messages(conversation.id, page)
    return render.expand(messages, include_return_message_types)


@router.post("/v1/conversations/{conversation_id}/stream", response_model=None, responses=STREAMING)
async def resume_stream(
    conversation_id: str, services: ServicesDep, body: RetrieveStream | None = None
) -> EventStreamResponse:
    body = body or RetrieveStream()
    conversation = await addressed(services, conversation_id, body.agent_id)
    if body.run_id is None and not await services.conversations.is_live(conversation.id):
        raise InvalidArgument("No active runs found for this conversation.")
    # Read from the run's first event: the renderer numbers chunks, not events (its invariant).
    stream = await services.conversations.follow(conversation.id, body.run_id, 0)
    renderer = render.StreamRenderer(body.include_pings, starting_after=body.starting_after)
    return sse_response(stream, renderer, services.settings.heartbeat_seconds)


@router.post("/v1/conversations/{conversation_id}/cancel")
async def cancel(conversation_id: str, services: ServicesDep, agent_id: str | None = None) -> dict[str, str]:
    conversation = await addressed(services, conversation_id, agent_id)
    cancelled = await services.conversations.cancel(conversation.id)
    if not cancelled:
        raise Conflict(f"No active runs to cancel for conversation {conversation.id}")
    return dict.fromkeys(cancelled, "cancelled")
