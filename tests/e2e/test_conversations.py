"""Conversations of an agent through letta-client: create, list, retrieve, update, delete."""

from __future__ import annotations

import httpx
import pytest
from letta_client import NotFoundError, UnprocessableEntityError

from .helpers import assistant_text, send


def test_create_list_retrieve(client, agent):
    first = client.conversations.create(agent_id=agent.id)
    second = client.conversations.create(agent_id=agent.id, summary="second one")
    assert first.id.startswith("conv-")
    assert first.agent_id == agent.id
    # Its own system message from the start, as Letta writes it at creation.
    [system_id] = first.in_context_message_ids
    assert system_id.startswith("message-")
    [system] = client.conversations.messages.list(first.id).items
    assert (system.id, system.message_type) == (system_id, "system_message")
    assert f"- CONVERSATION_ID: {first.id}" in system.content
    assert second.summary == "second one"

    listed = [c.id for c in client.conversations.list(agent_id=agent.id)]
    assert listed == [second.id, first.id]  # newest first
    assert [c.id for c in client.conversations.list(agent_id=agent.id, order="asc")] == [first.id, second.id]
    assert [c.id for c in client.conversations.list(agent_id=agent.id, limit=1, after=second.id)] == [
        first.id
    ]

    fetched = client.conversations.retrieve(first.id)
    assert fetched.id == first.id
    assert fetched.agent_id == agent.id


def test_other_agents_conversations_are_not_listed(client, agent):
    other = client.agents.create(model="openai/gpt-4o-mini")
    try:
        mine = client.conversations.create(agent_id=agent.id)
        theirs = client.conversations.create(agent_id=other.id)
        listed = [c.id for c in client.conversations.list(agent_id=agent.id)]
        assert mine.id in listed
        assert theirs.id not in listed
    finally:
        client.agents.delete(other.id)


def test_in_context_ids_after_first_message(client, agent, conversation):
    send(client, conversation.id, "hello")
    ids = client.conversations.retrieve(conversation.id).in_context_message_ids
    assert len(ids) == 3
    assert all(i.startswith("message-") for i in ids)
    listed = client.conversations.messages.list(conversation.id, order="asc").items
    assert [m.id for m in listed] == ids
    assert [m.message_type for m in listed] == ["system_message", "user_message", "assistant_message"]
    system = listed[0].content
    assert "I am Parley's test assistant." in system and "The user is called Ada." in system
    assert f"- CONVERSATION_ID: {conversation.id}" in system
    assert f"- AGENT_ID: {agent.id}" in system
    assert "<memory_metadata>" in system


def test_update_and_delete(client, conversation):
    updated = client.conversations.update(conversation.id, summary="renamed")
    assert updated.summary == "renamed"
    assert client.conversations.retrieve(conversation.id).summary == "renamed"
    client.conversations.delete(conversation.id)
    with pytest.raises(NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(NotFoundError):
        send(client, conversation.id, "anyone there?")


def test_deleted_conversation_with_live_actor(client, conversation):
    assert assistant_text(send(client, conversation.id, "say still here")) == "still here"
    client.conversations.delete(conversation.id)
    with pytest.raises(NotFoundError):
        send(client, conversation.id, "hello again")


def test_unknown_and_malformed_ids(client, server):
    with pytest.raises(NotFoundError):
        client.conversations.create(agent_id="agent-00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFoundError):
        client.conversations.retrieve("conv-00000000-0000-4000-8000-000000000000")
    with pytest.raises(UnprocessableEntityError, match="conversation_id"):
        client.conversations.retrieve("conv-123")
    response = httpx.post(f"{server.url}/v1/conversations/", json={})
    assert response.status_code == 422
    assert "agent_id" in response.json()["detail"]
