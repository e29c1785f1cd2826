"""Sending messages to a conversation and reading them back, through letta-client."""

from __future__ import annotations

import uuid

import httpx
import pytest
from letta_client import UnprocessableEntityError

from .helpers import assistant_text, of_type, send


def test_send_streams_letta_messages(client, conversation):
    chunks = send(client, conversation.id, "hi")
    assert [c.message_type for c in chunks] == [
        "ping",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    ping, reply, stop, usage = chunks
    assert ping.run_id and ping.run_id.startswith("run-")
    assert reply.content == "Hello! How can I help you today?"
    assert reply.id.startswith("message-")
    assert reply.run_id == ping.run_id
    assert reply.otid and reply.otid[-1] == "0"  # first Letta message of its stored message
    assert stop.stop_reason == "end_turn"
    assert usage.step_count == 1
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_conversations_of_one_agent_are_isolated(client, agent):
    apple = client.conversations.create(agent_id=agent.id)
    banana = client.conversations.create(agent_id=agent.id)
    send(client, apple.id, "Remember the word: APPLE")
    send(client, banana.id, "Remember the word: BANANA")
    assert "APPLE" in assistant_text(send(client, apple.id, "What word did I ask you to remember?"))
    assert "BANANA" in assistant_text(send(client, banana.id, "What word did I ask you to remember?"))
    assert "BANANA" not in assistant_text(send(client, apple.id, "What word did I ask you to remember?"))


def test_input_shorthand_and_content_parts(client, conversation):
    chunks = list(client.conversations.messages.create(conversation.id, input="echo via input"))
    assert assistant_text(chunks) == "via input"
    chunks = send(
        client, conversation.id, [{"type": "text", "text": "echo "}, {"type": "text", "text": "parts"}]
    )
    assert assistant_text(chunks) == "parts"


def test_list_order_and_cursor_pagination(client, conversation):
    for i in range(3):
        send(client, conversation.id, f"echo turn {i}")
    oldest_first = client.conversations.messages.list(conversation.id, order="asc", limit=100).items
    assert [m.message_type for m in oldest_first] == ["system_message"] + [
        "user_message",
        "assistant_message",
    ] * 3
    assert [m.content for m in oldest_first[1:]] == [
        "echo turn 0",
        "turn 0",
        "echo turn 1",
        "turn 1",
        "echo turn 2",
        "turn 2",
    ]

    newest_first = client.conversations.messages.list(conversation.id).items  # default order is desc
    assert [m.id for m in newest_first] == [m.id for m in oldest_first][::-1]

    # Walk forward two at a time with `after`: every message once, in order, then an empty page.
    seen: list[str] = []
    cursor = None
    while True:
        page = client.conversations.messages.list(conversation.id, order="asc", limit=2, after=cursor).items
        if not page:
            break
        seen += [m.id for m in page]
        cursor = page[-1].id
    assert seen == [m.id for m in oldest_first]

    # `before` is absolute too: the two messages older than the last user message.
    last_user = oldest_first[-2]
    older = client.conversations.messages.list(conversation.id, before=last_user.id, limit=2).items
    assert [m.id for m in older] == [oldest_first[-3].id, oldest_first[-4].id]

    # Auto-pagination over the SDK page object terminates.
    assert len(list(client.conversations.messages.list(conversation.id, order="asc", limit=3))) == 7


def test_client_otid_is_kept(client, conversation):
    otid = str(uuid.uuid4())
    list(
        client.conversations.messages.create(
            conversation.id, messages=[{"role": "user", "content": "hello", "otid": otid}]
        )
    )
    users = of_type(client.conversations.messages.list(conversation.id).items, "user_message")
    assert users[0].otid == otid


def test_include_return_message_types(client, conversation):
    chunks = send(client, conversation.id, "hi", include_return_message_types=["assistant_message"])
    assert [c.message_type for c in chunks] == [
        "ping",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    chunks = send(client, conversation.id, "hi", include_pings=False)
    assert "ping" not in [c.message_type for c in chunks]
    listed = client.conversations.messages.list(
        conversation.id, include_return_message_types=["user_message"]
    ).items
    assert {m.message_type for m in listed} == {"user_message"}


def test_stream_tokens_sends_chunks_of_one_message(client, conversation):
    chunks = send(client, conversation.id, "[[token_delay=0.02]] count to 40", stream_tokens=True)
    pieces = of_type(chunks, "assistant_message")
    assert len(pieces) > 1
    assert len({p.id for p in pieces}) == 1
    assert len({p.otid for p in pieces}) == 1
    assert "".join(p.content for p in pieces) == " ".join(str(i) for i in range(1, 41))
    assert chunks[-2].stop_reason == "end_turn"
    stored = of_type(client.conversations.messages.list(conversation.id).items, "assistant_message")
    assert stored[0].id == pieces[0].id
    assert stored[0].content == "".join(p.content for p in pieces)


def test_non_streaming_send_returns_json(server, client, conversation):
    response = httpx.post(
        f"{server.url}/v1/conversations/{conversation.id}/messages",
        json={"messages": [{"role": "user", "content": "say json please"}], "streaming": False},
        timeout=30,
    )
    assert response.status_code == 200
    body = response.json()
    assert [m["message_type"] for m in body["messages"]] == ["assistant_message"]
    assert body["messages"][0]["content"] == "json please"
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    assert body["usage"]["step_count"] == 1


def test_invalid_sends_are_422(client, conversation, server):
    with pytest.raises(UnprocessableEntityError, match="must not be empty"):
        list(client.conversations.messages.create(conversation.id, messages=[]))
    with pytest.raises(UnprocessableEntityError, match="role"):
        list(
            client.conversations.messages.create(
                conversation.id, messages=[{"role": "robot", "content": "x"}]
            )
        )
    response = httpx.post(f"{server.url}/v1/conversations/{conversation.id}/messages", json={}, timeout=10)
    assert response.status_code == 422
    assert "messages" in response.json()["detail"]
    # Nothing was stored by the refused sends.
    assert [m.message_type for m in client.conversations.messages.list(conversation.id).items] == [
        "system_message"
    ]
