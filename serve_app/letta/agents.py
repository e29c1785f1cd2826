"""``/v1/agents``: create, retrieve, list, update, delete."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import ValidationError

from runtime import ids
from runtime.agent import DEFAULT_BLOCK_LIMIT, Agent, Block, EmbeddingConfig, LLMConfig
from runtime.clock import utcnow
from runtime.conversation import Conversation
from runtime.conversation_state import ConversationState
from runtime.errors import InvalidArgument, NotFound, ValidationFailed
from runtime.handles import embedding_config_for, llm_config_for
from runtime.store import Page
from serve_app.routing import PageLimit, collection, require_id
from serve_app.services import Services, ServicesDep

from . import render
from .schemas import CreateAgent, CreateBlock, UpdateAgent
from .tools import resolve_tools

router = APIRouter()

# Our own words for the two conventional labels, used when the client gives no description.
_DEFAULT_DESCRIPTIONS = {
    "persona": "Who you are: your character, tone and the way you answer.",
    "human": "What you know about the user you are talking with.",
}
_REQUIRED_ON_UPDATE = ("name", "system")
_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fond", "keen", "lucid", "merry", "nimble")
_NOUNS = ("otter", "heron", "lynx", "finch", "marten", "ibis", "puffin", "wren", "stoat", "koi")


def _describe(field: str, exc: ValidationError) -> str:
    return "; ".join(
        ".".join([field, *(str(part) for part in error["loc"])]) + f": {error['msg']}"
        for error in exc.errors()
    )


def _random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"


def _llm_config(
    services: Services,
    field_config: dict[str, Any] | None,
    handle: str | None,
    window: int | None,
    max_tokens: int | None,
) -> LLMConfig:
    if field_config is not None:
        try:
            config = LLMConfig.model_validate(field_config)
        except ValidationError as exc:
            raise ValidationFailed(_describe("llm_config", exc)) from None
        if window:
            config.context_window = min(config.context_window, window)
        if max_tokens:
            config.max_tokens = max_tokens
        return config
    if handle:
        return llm_config_for(handle, window, max_tokens, services.settings.compatible_providers)
    raise InvalidArgument("Must specify either model or llm_config")


def _embedding_config(field_config: dict[str, Any] | None, handle: str | None) -> EmbeddingConfig | None:
    if field_config is not None:
        try:
            return EmbeddingConfig.model_validate(field_config)
        except ValidationError as exc:
            raise ValidationFailed(_describe("embedding_config", exc)) from None
    return embedding_config_for(handle) if handle else None


def _new_block(spec: CreateBlock, index: int) -> Block:
    if spec.limit is not None and len(spec.value) > spec.limit:
        raise ValidationFailed(
            f"memory_blocks[{index}].value: {len(spec.value)} characters exceed the block's limit of "
            f"{spec.limit}"
        )
    return Block(
        label=spec.label,
        value=spec.value,
        limit=spec.limit or max(DEFAULT_BLOCK_LIMIT, len(spec.value)),
        description=spec.description or _DEFAULT_DESCRIPTIONS.get(spec.label),
        read_only=spec.read_only,
        metadata=spec.metadata or {},
        hidden=spec.hidden,
        tags=spec.tags,
    )


async def _existing_blocks(services: Services, block_ids: list[str]) -> list[Block]:
    for block_id in block_ids:
        require_id(ids.BLOCK, block_id, "block_ids")
    found = await services.store.get_blocks(block_ids)
    missing = set(block_ids) - {b.id for b in found}
    if missing:
        raise NotFound(f"Block {sorted(missing)[0]} not found")
    return found


async def agent_view(services: Services, agent: Agent, blocks: list[Block] | None = None) -> dict[str, Any]:
    """The AgentState of ``agent`` with its blocks and tools as stored now."""
    if blocks is None:
        blocks = await services.store.get_blocks(agent.block_ids)
    default = await services.store.get_conversation(agent.id)
    message_ids = default.in_context_message_ids if default is not None else []
    return render.agent_state(agent, blocks, await services.store.get_tools(agent.tool_ids), message_ids)


async def load_agent(services: Services, agent_id: str) -> tuple[Agent, list[Block]]:
    require_id(ids.AGENT, agent_id, "agent_id")
    agent = await services.store.get_agent(agent_id)
    # A hidden agent (the one owning the OpenAI surface's conversations) is not the Letta API's to
    # read, change or delete.
    if agent is None or agent.hidden:
        raise NotFound(f"Agent with ID {agent_id} not found")
    return agent, await services.store.get_blocks(agent.block_ids)


@collection(router, "POST", "/v1/agents")
async def create_agent(body: CreateAgent, services: ServicesDep) -> dict[str, Any]:
    base_for = (body.agent_type or "letta_v1_agent") if body.include_base_tools else None
    tool_ids = await resolve_tools(services, body.tool_ids, body.tools, base_for)
    llm_config = _llm_config(
        services, body.llm_config, body.model, body.context_window_limit, body.max_tokens
    )
    embedding_config = _embedding_config(body.embedding_config, body.embedding)
    new_blocks = [_new_block(spec, index) for index, spec in enumerate(body.memory_blocks or [])]
    attached = await _existing_blocks(services, body.block_ids or [])
    blocks = new_blocks + attached
    labels = [b.label for b in blocks]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate is not None:
        raise ValidationFailed(f"memory_blocks: more than one block has the label {duplicate!r}")
    fields: dict[str, Any] = {
        "name": body.name or _random_name(),
        "description": body.description,
        "metadata": body.metadata,
        "tags": body.tags or [],
        "model": body.model or llm_config.handle,
        "embedding": body.embedding or (embedding_config.handle if embedding_config else None),
        "llm_config": llm_config,
        "embedding_config": embedding_config,
        "model_settings": body.model_settings,
        "block_ids": [b.id for b in blocks],
        "tool_ids": tool_ids,
    }
    if body.agent_type:
        fields["agent_type"] = body.agent_type
    if body.system is not None:
        fields["system"] = body.system
    if body.timezone:
        fields["timezone"] = body.timezone
    agent = Agent(**fields)
    await services.store.create_agent(agent, new_blocks)
    # Letta writes the agent's system message at creation: its history starts with it.
    await ConversationState.start(services.store, Conversation.default_for(agent.id), agent, blocks)
    return await agent_view(services, agent, blocks)


@collection(router, "GET", "/v1/agents")
async def list_agents(
    services: ServicesDep,
    name: str | None = None,
    tags: Annotated[list[str] | None, Query()] = None,
    match_all_tags: bool = False,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 50,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    agents = await services.store.list_agents(
        Page(limit=limit, order=order, after=after, before=before), name, tags or (), match_all_tags
    )
    return [await agent_view(services, a) for a in agents]


@router.get("/v1/agents/{agent_id}")
async def retrieve_agent(agent_id: str, services: ServicesDep) -> dict[str, Any]:
    agent, blocks = await load_agent(services, agent_id)
    return await agent_view(services, agent, blocks)


@router.patch("/v1/agents/{agent_id}")
async def update_agent(agent_id: str, body: UpdateAgent, services: ServicesDep) -> dict[str, Any]:
    agent, _ = await load_agent(services, agent_id)
    given = body.model_fields_set
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("name", "system", "description", "metadata", "model_settings", "timezone")
        if name in given
    }
    # An agent always has a name and a system prompt: an explicit null leaves them as they are.
    for name in _REQUIRED_ON_UPDATE:
        if changes.get(name, "") is None:
            del changes[name]
    if "tags" in given:
        changes["tags"] = body.tags or []
    if "llm_config" in given and body.llm_config is not None:
        changes["llm_config"] = _llm_config(
            services, body.llm_config, None, body.context_window_limit, body.max_tokens
        )
        changes["model"] = changes["llm_config"].handle
    elif given & {"model", "context_window_limit", "max_tokens"}:
        handle = body.model or agent.model or agent.llm_config.handle
        if handle is None:
            raise InvalidArgument("model: the agent has no model handle to rebuild llm_config from")
        changes["llm_config"] = llm_config_for(
            handle,
            body.context_window_limit,
            body.max_tokens or agent.llm_config.max_tokens,
            services.settings.compatible_providers,
        )
        changes["model"] = handle
    if "embedding_config" in given or "embedding" in given:
        changes["embedding_config"] = _embedding_config(body.embedding_config, body.embedding)
        changes["embedding"] = changes["embedding_config"].handle if changes["embedding_config"] else None
    if "tool_ids" in given:
        changes["tool_ids"] = await resolve_tools(services, body.tool_ids, None, None)
    if "block_ids" in given:
        changes["block_ids"] = [b.id for b in await _existing_blocks(services, body.block_ids or [])]
    updated = agent.model_copy(update={**changes, "updated_at": utcnow()})
    await services.store.update_agent(updated)
    return await agent_view(services, updated)


@router.delete("/v1/agents/{agent_id}")
async def delete_agent(agent_id: str, services: ServicesDep) -> dict[str, str]:
    agent, _ = await load_agent(services, agent_id)
    # Stop the agent's live conversation actors before their rows disappear.
    conversations = await services.store.list_conversations(agent.id, Page(limit=1_000_000))
    for conversation in conversations:
        await services.conversations.retire(conversation.id)
    await services.store.delete_agent(agent.id)
    return {"message": f"Agent id={agent.id} successfully deleted"}
