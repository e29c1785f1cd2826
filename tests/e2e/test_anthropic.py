"""An agent on an Anthropic model handle: the messages API through the official anthropic SDK."""

from __future__ import annotations

import pytest

from .helpers import assistant_text, of_type, send


@pytest.fixture
def claude(client):
    created = client.agents.create(
        model="anthropic/claude-sonnet-4-5",
        memory_blocks=[{"label": "human", "value": "The user is called Grace."}],
    )
    yield created
    client.agents.delete(created.id)


def test_anthropic_turns_remember(client, claude):
    assert claude.llm_config.model_endpoint_type == "anthropic"
    conversation = client.conversations.create(agent_id=claude.id)
    first = send(client, conversation.id, "Remember the word: KIWI")
    assert assistant_text(first) == "Okay, I will remember the word KIWI."
    assert first[-1].prompt_tokens > 0
    assert "KIWI" in assistant_text(send(client, conversation.id, "What word did I ask you to remember?"))


def test_anthropic_stream_tokens(client, claude):
    conversation = client.conversations.create(agent_id=claude.id)
    chunks = send(client, conversation.id, "[[token_delay=0.02]] count to 30", stream_tokens=True)
    pieces = of_type(chunks, "assistant_message")
    assert len(pieces) > 1 and len({p.otid for p in pieces}) == 1
    assert "".join(p.content for p in pieces) == " ".join(str(i) for i in range(1, 31))
    assert of_type(chunks, "stop_reason")[0].stop_reason == "end_turn"


def test_anthropic_thinking_is_a_reasoning_message(client):
    thinker = client.agents.create(
        model="anthropic/claude-sonnet-4-5",
        model_settings={"provider_type": "anthropic", "thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    try:
        conversation = client.conversations.create(agent_id=thinker.id)
        chunks = send(client, conversation.id, "think about tea")
        kinds = [c.message_type for c in chunks]
        assert kinds[1:3] == ["reasoning_message", "assistant_message"]
        reasoning, reply = chunks[1], chunks[2]
        assert reasoning.reasoning == "Thinking about tea."
        assert reply.content == "I thought about tea."
        assert reasoning.id == reply.id
        assert reasoning.otid[-1] == "0" and reply.otid[-1] == "1"
        # The signed thinking goes back to the provider on the next turn without an error.
        assert assistant_text(send(client, conversation.id, "say next")) == "next"
    finally:
        client.agents.delete(thinker.id)
