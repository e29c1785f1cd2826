"""Memory blocks through letta-client; an edit reaches every conversation's next turn."""

from __future__ import annotations

import pytest
from letta_client import NotFoundError, UnprocessableEntityError

from .helpers import send


def test_retrieve_and_list_by_label(client, agent):
    human = client.agents.blocks.retrieve("human", agent_id=agent.id)
    assert human.value == "The user is called Ada."
    assert human.id.startswith("block-")
    assert {b.label for b in client.agents.blocks.list(agent.id)} == {"persona", "human"}
    with pytest.raises(NotFoundError):
        client.agents.blocks.retrieve("nope", agent_id=agent.id)


def test_update_recompiles_the_system_message_in_place(client, agent, conversation):
    send(client, conversation.id, "hi")
    before = client.conversations.messages.list(conversation.id, order="asc").items[0]
    assert "The user is called Ada." in before.content

    updated = client.agents.blocks.update("human", agent_id=agent.id, value="The user is called Bob.")
    assert updated.value == "The user is called Bob."
    send(client, conversation.id, "hi again")
    after = client.conversations.messages.list(conversation.id, order="asc").items[0]
    assert after.id == before.id
    assert "The user is called Bob." in after.content and "Ada" not in after.content


def test_update_by_id_and_limits(client, agent):
    persona = client.agents.blocks.retrieve("persona", agent_id=agent.id)
    assert client.blocks.retrieve(persona.id).value == persona.value
    assert client.blocks.update(persona.id, value="I am terse.").value == "I am terse."
    assert client.agents.blocks.retrieve("persona", agent_id=agent.id).value == "I am terse."
    with pytest.raises(UnprocessableEntityError, match="limit"):
        client.blocks.update(persona.id, value="x" * 20, limit=10)
    with pytest.raises(NotFoundError):
        client.blocks.retrieve("block-00000000-0000-4000-8000-000000000000")
