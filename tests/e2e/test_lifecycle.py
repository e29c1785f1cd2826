"""Conversations activate on demand, passivate when idle, and come back from the store, on
conversation actors that outlive them (no process starts or ends with a conversation)."""

from __future__ import annotations

import time

from tests.e2e.conftest import IDLE_SECONDS

from .helpers import assistant_text, live_conversations, send


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_idle_conversation_passivates_and_reactivates_from_store(client, server, conversation):
    actors = {p.pid for p in server.conversation_actor_processes()}
    assert actors  # the pool is up before the first conversation

    send(client, conversation.id, "Remember the word: CHERRY")
    assert conversation.id in live_conversations(server.url)

    assert _wait_for(lambda: conversation.id not in live_conversations(server.url), IDLE_SECONDS + 20)

    reply = assistant_text(send(client, conversation.id, "What word did I ask you to remember?"))
    assert "CHERRY" in reply
    assert conversation.id in live_conversations(server.url)  # activated again, from the store
    # The same actor processes served both activations: none started, none exited.
    assert {p.pid for p in server.conversation_actor_processes()} == actors
    listed = client.conversations.messages.list(conversation.id, order="asc").items
    assert [m.message_type for m in listed].count("system_message") == 1
    assert len(listed) == 5


def test_deleted_conversation_is_no_longer_live(client, server, agent):
    conversation = client.conversations.create(agent_id=agent.id)
    send(client, conversation.id, "say hello")
    assert conversation.id in live_conversations(server.url)
    client.conversations.delete(conversation.id)
    assert conversation.id not in live_conversations(server.url)
