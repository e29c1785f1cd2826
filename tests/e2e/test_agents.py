"""Agents through the official letta-client SDK."""

from __future__ import annotations

import httpx
import pytest
from letta_client import BadRequestError, NotFoundError, UnprocessableEntityError


def test_health(client):
    health = client.health()
    assert health.status == "ok"
    assert health.version


def test_create_returns_full_agent_state(client, agent):
    assert agent.id.startswith("agent-")
    assert agent.name == "test-agent"
    assert agent.model == "openai/gpt-4o-mini"
    assert agent.llm_config.model == "gpt-4o-mini"
    assert agent.llm_config.model_endpoint_type == "openai"
    assert agent.llm_config.context_window > 0
    assert agent.embedding == "openai/text-embedding-3-small"
    assert agent.embedding_config.embedding_model == "text-embedding-3-small"
    assert agent.tags == ["test"]
    assert {b.label: b.value for b in agent.blocks} == {
        "persona": "I am Parley's test assistant.",
        "human": "The user is called Ada.",
    }
    assert all(b.id.startswith("block-") for b in agent.blocks)
    assert [b.label for b in agent.memory.blocks] == [b.label for b in agent.blocks]
    assert agent.agent_type == "letta_v1_agent"
    assert agent.system
    # Base tools by default (letta_v1_agent): search and the two memory editors.
    assert sorted(t.name for t in agent.tools) == ["conversation_search", "memory_insert", "memory_replace"]
    assert {t.tool_type for t in agent.tools} == {"letta_core", "letta_memory_core"}


def test_custom_system_prompt(client):
    created = client.agents.create(model="openai/gpt-4o-mini", system="You are terse.")
    try:
        assert created.system == "You are terse."
        assert created.name  # a generated name
    finally:
        client.agents.delete(created.id)


def test_retrieve_and_list(client, agent):
    fetched = client.agents.retrieve(agent.id)
    assert fetched.id == agent.id
    assert fetched.name == agent.name
    assert [b.value for b in fetched.blocks] == [b.value for b in agent.blocks]

    listed = client.agents.list(name="test-agent").items
    assert agent.id in [a.id for a in listed]
    assert agent.id in [a.id for a in client.agents.list(tags=["test"]).items]
    assert agent.id not in [a.id for a in client.agents.list(tags=["no-such-tag"]).items]


def test_list_pagination_terminates_and_orders(client):
    made = [client.agents.create(name="page-agent", model="openai/gpt-4o-mini").id for _ in range(5)]
    try:
        newest_first = [a.id for a in client.agents.list(name="page-agent", limit=2)]  # iterates every page
        assert newest_first == made[::-1]
        oldest_first = [a.id for a in client.agents.list(name="page-agent", order="asc").items]
        assert oldest_first == made
        first_page = client.agents.list(name="page-agent", limit=2).items
        second_page = client.agents.list(name="page-agent", limit=2, after=first_page[-1].id).items
        assert [a.id for a in first_page + second_page] == made[::-1][:4]
    finally:
        for agent_id in made:
            client.agents.delete(agent_id)


def test_update(client, agent):
    updated = client.agents.update(
        agent.id,
        name="renamed",
        system="New system prompt.",
        tags=["a", "b"],
        model="anthropic/claude-sonnet-4",
    )
    assert updated.name == "renamed"
    assert updated.system == "New system prompt."
    assert sorted(updated.tags) == ["a", "b"]
    assert updated.llm_config.model_endpoint_type == "anthropic"
    assert updated.llm_config.model == "claude-sonnet-4"
    fetched = client.agents.retrieve(agent.id)
    assert fetched.name == "renamed"
    assert fetched.model == "anthropic/claude-sonnet-4"
    assert [b.value for b in fetched.blocks] == [b.value for b in agent.blocks]


def test_delete(client):
    created = client.agents.create(model="openai/gpt-4o-mini")
    conversation = client.conversations.create(agent_id=created.id)
    client.agents.delete(created.id)
    with pytest.raises(NotFoundError):
        client.agents.retrieve(created.id)
    with pytest.raises(NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(NotFoundError):
        client.agents.delete(created.id)


def test_bad_input_gets_clear_4xx(client, server):
    with pytest.raises(BadRequestError, match="model"):
        client.agents.create(name="no-model")
    with pytest.raises(NotFoundError, match="handle"):
        client.agents.create(model="nosuchprovider/some-model")
    with pytest.raises(UnprocessableEntityError, match="agent_id"):
        client.agents.retrieve("not-an-agent-id")
    with pytest.raises(NotFoundError):
        client.agents.retrieve("agent-00000000-0000-4000-8000-000000000000")
    # A block without a value: the message names the field.
    response = httpx.post(
        f"{server.url}/v1/agents/",
        json={"model": "openai/gpt-4o-mini", "memory_blocks": [{"label": "human"}]},
    )
    assert response.status_code == 422
    assert "memory_blocks.0.value" in response.json()["detail"]
    # Malformed JSON is a 422 too, never a 500.
    response = httpx.post(
        f"{server.url}/v1/agents/", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
