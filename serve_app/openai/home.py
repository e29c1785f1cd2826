"""Where OpenAI-surface conversations live: one hidden agent, and lookups shared by the routes.

The OpenAI API has no agents; its conversations belong to one hidden agent with no memory blocks,
no tools and no system prompt (each response brings its own ``instructions`` and ``model``). They
are ordinary conversations otherwise: the same actors, runner and store as Letta's.
"""

from __future__ import annotations

from typing import Any

from runtime.agent import Agent
from runtime.conversation import Conversation
from runtime.errors import InvalidArgument, NotFound
from runtime.handles import llm_config_for
from serve_app.services import Services

from . import ids

HOME_AGENT_ID = "agent-00000000-0000-4000-8000-000000000000"


def invalid(message: str, param: str | None) -> InvalidArgument:
    error = InvalidArgument(message)
    error.param = param  # type: ignore[attr-defined]
    return error


async def home_agent(services: Services) -> Agent:
    found = await services.store.get_agent(HOME_AGENT_ID)
    if found is not None:
        return found
    agent = Agent(
        id=HOME_AGENT_ID,
        name="openai-conversations",
        system="",
        hidden=True,
        llm_config=llm_config_for(services.settings.openai_default_model),
        description="Owns the conversations of the OpenAI-compatible API.",
    )
    try:
        await services.store.create_agent(agent, [])
    except Exception:  # another replica created it first
        existing = await services.store.get_agent(HOME_AGENT_ID)
        if existing is None:
            raise
        return existing
    return agent


def model_handle(services: Services, model: str | None) -> str:
    """A provider handle for ``model``: handles pass, a bare name is an OpenAI model."""
    if not model:
        return services.settings.openai_default_model
    handle = model if "/" in model else f"openai/{model}"
    try:
        llm_config_for(handle, compatible=services.settings.compatible_providers)
    except NotFound as exc:
        raise invalid(f"Invalid value for 'model': {exc.message}", "model") from None
    return handle


async def load_conversation(services: Services, openai_id: str) -> Conversation:
    conversation_id = ids.from_openai_conversation(openai_id)
    found = await services.store.get_conversation(conversation_id)
    if found is None:
        raise NotFound(f"Conversation {openai_id!r} not found.")
    return found


def conversation_object(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": ids.to_openai_conversation(conversation.id),
        "object": "conversation",
        "created_at": int(conversation.created_at.timestamp()),
        "metadata": conversation.metadata or {},
    }
