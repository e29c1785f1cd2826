"""Conversation actors activate on demand, passivate when idle, and come back from the store."""

from __future__ import annotations

import time

from tests.conftest import IDLE_SECONDS, SPARE_TTL_SECONDS

from .helpers import assistant_text, send


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_idle_actor_passivates_and_reactivates_from_store(client, server, conversation):
    # Other tests' conversations passivate within IDLE_SECONDS of their last use, and unclaimed
    # warm-pool actors exit after SPARE_TTL_SECONDS.
    settle = IDLE_SECONDS + SPARE_TTL_SECONDS + 20
    assert _wait_for(lambda: not server.conversation_actor_processes(), settle)

    send(client, conversation.id, "Remember the word: CHERRY")
    first = {p.pid for p in server.conversation_actor_processes()}
    assert first  # this conversation's actor (no other conversation is in use)

    assert _wait_for(lambda: not server.conversation_actor_processes(), settle)

    reply = assistant_text(send(client, conversation.id, "What word did I ask you to remember?"))
    assert "CHERRY" in reply
    again = {p.pid for p in server.conversation_actor_processes()}
    assert again and not again & first  # a fresh actor, activated from the store
    listed = client.conversations.messages.list(conversation.id, order="asc").items
    assert [m.message_type for m in listed].count("system_message") == 1
    assert len(listed) == 5
