"""Idempotent sends: a retried request with the same client ``otid`` (Letta) or ``Idempotency-Key``
header (both surfaces) gets the original run back instead of starting a second turn."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import openai
import pytest

from .helpers import assistant_text, of_type
from .openai_helpers import MODEL


def user_texts(client, conversation_id: str) -> list[str]:
    listed = client.conversations.messages.list(conversation_id, order="asc").items
    return [m.content for m in listed if m.message_type == "user_message"]


def test_a_resent_otid_returns_the_original_reply(client, conversation):
    otid = str(uuid.uuid4())
    message = {"role": "user", "content": "say once", "otid": otid}
    first = list(client.conversations.messages.create(conversation.id, messages=[message]))
    again = list(client.conversations.messages.create(conversation.id, messages=[message]))
    assert assistant_text(again) == assistant_text(first) == "once"
    assert [c.id for c in of_type(again, "assistant_message")] == [
        c.id for c in of_type(first, "assistant_message")
    ]
    assert again[0].run_id == first[0].run_id
    assert user_texts(client, conversation.id) == ["say once"]
    # A new otid is a new turn.
    fresh = {"role": "user", "content": "say twice", "otid": str(uuid.uuid4())}
    assert assistant_text(list(client.conversations.messages.create(conversation.id, messages=[fresh]))) == (
        "twice"
    )
    assert user_texts(client, conversation.id) == ["say once", "say twice"]


def test_a_retry_during_the_run_follows_it_instead_of_409(client, conversation):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    message = [{"role": "user", "content": "[[latency=1.5]] say patient"}]
    results: dict[str, list] = {}

    def original() -> None:
        results["first"] = list(
            client.conversations.messages.create(conversation.id, messages=message, extra_headers=key)
        )

    thread = threading.Thread(target=original)
    thread.start()
    time.sleep(0.5)  # the first request is in flight
    results["retry"] = list(
        client.conversations.messages.create(conversation.id, messages=message, extra_headers=key)
    )
    thread.join(30)
    assert assistant_text(results["retry"]) == assistant_text(results["first"]) == "patient"
    assert results["retry"][0].run_id == results["first"][0].run_id
    assert user_texts(client, conversation.id) == ["[[latency=1.5]] say patient"]


def test_a_keyed_send_outlives_a_dropped_connection(client, conversation):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    message = [{"role": "user", "content": "[[latency=1]] say survived"}]
    stream = client.conversations.messages.create(conversation.id, messages=message, extra_headers=key)
    run_id = next(iter(stream)).run_id
    stream.close()  # the client goes away; the run goes on, as the same key may come back
    retried = list(client.conversations.messages.create(conversation.id, messages=message, extra_headers=key))
    assert retried[0].run_id == run_id
    assert assistant_text(retried) == "survived"
    assert client.runs.retrieve(run_id).status == "completed"


def test_a_resent_async_send_returns_the_original_run(client, agent):
    message = [{"role": "user", "content": "say async once", "otid": str(uuid.uuid4())}]
    first = client.agents.messages.create_async(agent.id, messages=message)
    again = client.agents.messages.create_async(agent.id, messages=message)
    assert again.id == first.id
    deadline = time.monotonic() + 30
    while client.runs.retrieve(first.id).status not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    texts = [
        m.content
        for m in client.agents.messages.list(agent.id, order="asc").items
        if m.message_type == "user_message"
    ]
    assert texts.count("say async once") == 1


@pytest.fixture(scope="module")
def oai(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="parley", timeout=30) as client:
        yield client


def test_openai_response_with_an_idempotency_key_is_created_once(oai):
    conversation = oai.conversations.create()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = oai.responses.create(
        model=MODEL, input="say hello once", conversation=conversation.id, extra_headers=key
    )
    again = oai.responses.create(
        model=MODEL, input="say hello once", conversation=conversation.id, extra_headers=key
    )
    assert again.id == first.id
    assert again.output_text == first.output_text == "hello once"
    items = oai.conversations.items.list(conversation.id).data
    assert len(items) == 2  # one input, one output


def test_openai_response_without_a_conversation_is_created_once(oai):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = oai.responses.create(model=MODEL, input="say standalone", extra_headers=key)
    again = oai.responses.create(model=MODEL, input="say standalone", extra_headers=key)
    assert again.id == first.id
    assert again.output_text == "standalone"
    # Chained on it, with a key of its own: the retry is the same response again.
    chained_key = {"Idempotency-Key": uuid.uuid4().hex}
    second = oai.responses.create(
        model=MODEL, input="say chained", previous_response_id=first.id, extra_headers=chained_key
    )
    retried = oai.responses.create(
        model=MODEL, input="say chained", previous_response_id=first.id, extra_headers=chained_key
    )
    assert retried.id == second.id
    assert [i.type for i in oai.responses.input_items.list(second.id).data].count("message") >= 1
    # Without a key, the same request is a new response.
    assert oai.responses.create(model=MODEL, input="say standalone").id != first.id
