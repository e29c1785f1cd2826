"""Conversation actors activate on demand, passivate when idle, and come back from the store."""

from __future__ import annotations

import time

from tests.conftest import IDLE_SECONDS

from .helpers import assistant_text, send


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_idle_actor_passivates_and_reactivates_from_store(client, server, conversation):
    # Other tests' conversations passivate within IDLE_SECONDS of their last use.
    assert _wait_for(lambda: not server.conversation_actor_processes(), IDLE_SECONDS + 20)

    send(client, conversation.id, "Remember the word: CHERRY")
    actors = server.conversation_actor_processes()
    assert len(actors) == 1
    first_pid = actors[0].pid

    assert _wait_for(lambda: not server.conversation_actor_processes(), IDLE_SECONDS + 20)

    reply = assistant_text(send(client, conversation.id, "What word did I ask you to remember?"))
    assert "CHERRY" in reply
    actors = server.conversation_actor_processes()
    assert len(actors) == 1 and actors[0].pid != first_pid
    listed = client.conversations.messages.list(conversation.id, order="asc").items
    assert [m.message_type for m in listed].count("system_message") == 1
    assert len(listed) == 5
