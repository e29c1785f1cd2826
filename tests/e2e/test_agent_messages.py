"""An agent's default conversation through letta-client: agents.messages.* and agent-direct mode."""

from __future__ import annotations

import pytest
from letta_client import NotFoundError, UnprocessableEntityError

from .helpers import assistant_text, race_two


def _say(client, agent_id: str, text: str):
    return client.agents.messages.create(agent_id, messages=[{"role": "user", "content": text}])


def test_create_returns_letta_response(client, agent):
    response = _say(client, agent.id, "hi")
    assert [m.message_type for m in response.messages] == ["assistant_message"]
    assert response.messages[0].content == "Hello! How can I help you today?"
    assert response.stop_reason.stop_reason == "end_turn"
    assert response.usage.step_count == 1 and response.usage.total_tokens > 0
    run = client.runs.retrieve(response.messages[0].run_id)
    assert run.status == "completed" and run.conversation_id is None
    assert run.metadata["run_type"] == "send_message"


def test_default_conversation_remembers_and_is_not_listed(client, agent):
    _say(client, agent.id, "Remember the word: PLUM")
    assert "PLUM" in _say(client, agent.id, "What word did I ask you to remember?").messages[0].content
    assert client.conversations.list(agent_id=agent.id) == []
    # A named conversation does not see the default conversation's history.
    named = client.conversations.create(agent_id=agent.id)
    chunks = list(
        client.conversations.messages.create(named.id, input="What word did I ask you to remember?")
    )
    assert "PLUM" not in assistant_text(chunks)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream
def test_stream_and_streaming_flag(client, agent):
    chunks = list(
        client.agents.messages.stream(agent.id, messages=[{"role": "user", "content": "say streamed"}])
    )
    assert [c.message_type for c in chunks] == [
        "ping",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    assert assistant_text(chunks) == "streamed"
    chunks = list(
        client.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": "say flag"}], streaming=True
        )
    )
    assert assistant_text(chunks) == "flag"
    with pytest.raises(UnprocessableEntityError, match="streaming"):
        client.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": "x"}], stream_tokens=True
        )


def test_agent_direct_mode_shares_the_default_conversation(client, agent):
    _say(client, agent.id, "Remember the word: FIG")
    chunks = list(
        client.conversations.messages.create(
            "default", agent_id=agent.id, input="What word did I ask you to remember?"
        )
    )
    assert "FIG" in assistant_text(chunks)
    listed = client.conversations.messages.list("default", agent_id=agent.id, order="asc").items
    assert [m.message_type for m in listed][:3] == ["system_message", "user_message", "assistant_message"]
    assert "- CONVERSATION_ID: default" in listed[0].content


def test_agent_messages_list_is_chronological(client, agent):
    for i in range(3):
        _say(client, agent.id, f"echo turn {i}")
    everything = client.agents.messages.list(agent.id, limit=100).items
    assert [m.message_type for m in everything] == ["system_message"] + [
        "user_message",
        "assistant_message",
    ] * 3
    newest = client.agents.messages.list(agent.id, limit=1).items
    assert [m.content for m in newest] == ["turn 2"]
    oldest = client.agents.messages.list(agent.id, limit=1, order="asc").items
    assert [m.message_type for m in oldest] == ["system_message"]
    # After a message: the following turn, starting with its user message.
    after_first_reply = client.agents.messages.list(
        agent.id, after=everything[2].id, limit=2, order="asc"
    ).items
    assert [m.content for m in after_first_reply] == ["echo turn 1", "turn 1"]
    with pytest.raises(NotFoundError):
        client.agents.messages.list(agent.id, after="message-00000000-0000-4000-8000-000000000000")


def test_overlapping_sends_to_the_default_conversation(client, agent):
    assert race_two(lambda: _say(client, agent.id, "[[latency=0.5]] say raced")) == ["409", "ok"]


def test_unknown_agent(client):
    with pytest.raises(NotFoundError):
        _say(client, "agent-00000000-0000-4000-8000-000000000000", "hello?")
    with pytest.raises(UnprocessableEntityError, match="agent_id"):
        list(client.conversations.messages.create("default", input="no agent given"))
