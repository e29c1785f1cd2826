"""``/openai/v1/conversations`` and their items: thin views over the stored conversation.

Items are derived from stored messages (``items.items_of``); adding or deleting items goes through
the conversation's actor, which owns its cached context and refuses while a response runs (409).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from runtime.clock import utcnow
from runtime.conversation import Conversation
from runtime.errors import NotFound
from runtime.ids import CONVERSATION, new_id
from runtime.inputs import stored_inputs
from runtime.limits import MAX_ITEMS_PER_ADD, check_metadata
from runtime.message import Message
from runtime.store import Page
from serve_app.routing import OpenAIPageLimit
from serve_app.services import Services, ServicesDep

from . import ids
from .home import conversation_object, home_agent, invalid, load_conversation
from .items import items_of, page, parse_input

router = APIRouter()

ALL = 1_000_000  # a conversation's items are derived from all of its messages


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # as OpenAI: no true for 1, no 1 for true


class CreateConversation(_Body):
    items: list[Any] | None = None
    metadata: Any = None


class UpdateConversation(_Body):
    metadata: Any = None


class AddItems(_Body):
    items: Any = None


# --- conversations --------------------------------------------------------------------------------
@router.post("/conversations")
async def create_conversation(body: CreateConversation, services: ServicesDep) -> dict[str, Any]:
    metadata = check_metadata(body.metadata)
    inputs = parse_input(body.items, "items", services.limits) if body.items else []
    agent = await home_agent(services)
    conversation = Conversation(id=new_id(CONVERSATION), agent_id=agent.id, metadata=metadata)
    # No actor can hold a conversation that does not exist yet: its first items go straight in.
    messages = stored_inputs(inputs, agent.id, conversation.id, None, field="items")
    conversation.in_context_message_ids = [m.id for m in messages]
    if messages:
        conversation.last_message_at = utcnow()
    await services.store.create_conversation(conversation)
    if messages:
        await services.store.append_messages(messages)
    return conversation_object(conversation)


@router.get("/conversations/{conversation_id}")
async def retrieve_conversation(conversation_id: str, services: ServicesDep) -> dict[str, Any]:
    return conversation_object(await load_conversation(services, conversation_id))


@router.post("/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: UpdateConversation, services: ServicesDep
) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    updated = await services.store.update_conversation(
        conversation.id, {"metadata": check_metadata(body.metadata), "updated_at": utcnow()}
    )
    if updated is None:
        raise NotFound(f"Conversation {conversation_id!r} not found.")
    return conversation_object(updated)


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, services: ServicesDep) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    await services.conversations.retire(conversation.id)
    await services.store.delete_conversation(conversation.id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


# --- items ----------------------------------------------------------------------------------------
async def conversation_items(services: Services, conversation: Conversation) -> list[dict[str, Any]]:
    """Every item of the conversation, oldest first (its compiled Letta system prompt excluded)."""
    messages = await services.store.list_messages(conversation.id, Page(limit=ALL, order="asc"))
    return [item for m in messages if not is_compiled_prompt(m) for item in items_of(m)]


def is_compiled_prompt(message: Message) -> bool:
    return message.role == "system" and message.run_id is None and message.otid is None


def cursor_page(items: list[dict[str, Any]], after: str | None, limit: int, order: str) -> dict[str, Any]:
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        positions = [item["id"] for item in ordered]
        if after not in positions:
            raise invalid(f"Invalid 'after': no item {after!r} in this list.", "after")
        ordered = ordered[positions.index(after) + 1 :]
    return page(ordered[:limit], has_more=len(ordered) > limit)


def include_values(request: Request) -> list[str]:
    # The SDK sends include[]=..., other clients include=...: read both.
    return request.query_params.getlist("include[]") + request.query_params.getlist("include")


@router.post("/conversations/{conversation_id}/items")
async def add_items(conversation_id: str, body: AddItems, services: ServicesDep) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    if not isinstance(body.items, list):
        raise invalid("Invalid 'items': expected an array of items.", "items")
    if len(body.items) > MAX_ITEMS_PER_ADD:
        raise invalid(
            f"Invalid 'items': at most {MAX_ITEMS_PER_ADD} items at a time, got {len(body.items)}.", "items"
        )
    inputs = parse_input(body.items, "items", services.limits)
    stored = await services.conversations.add_messages(conversation.id, inputs)
    return page([item for m in stored for item in items_of(m)], has_more=False)


@router.get("/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: OpenAIPageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    return cursor_page(await conversation_items(services, conversation), after, limit, order)


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, services: ServicesDep) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    message_id, _ = ids.parse_item_id(item_id)
    for message in await services.store.get_messages([message_id]):
        if message.conversation_id == conversation.id:
            for item in items_of(message):
                if item["id"] == item_id:
                    return item
    raise NotFound(f"Conversation item {item_id!r} not found in conversation {conversation_id!r}.")


@router.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, services: ServicesDep) -> dict[str, Any]:
    conversation = await load_conversation(services, conversation_id)
    message_id, part_index = ids.parse_item_id(item_id)
    if not await services.conversations.remove_part(conversation.id, message_id, part_index):
        raise NotFound(f"Conversation item {item_id!r} not found in conversation {conversation_id!r}.")
    return conversation_object(conversation)
