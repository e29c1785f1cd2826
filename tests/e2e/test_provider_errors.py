"""Provider faults through ``letta-client``: transient ones are retried, the rest end the run
with stop reason ``error`` and a readable message, and the conversation stays usable."""

from __future__ import annotations

import uuid

import pytest
from letta_client import APIStatusError

from .helpers import assistant_text, send

MODELS = ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5")


@pytest.fixture(params=MODELS, ids=["openai", "anthropic"])
def conversation_on(request, client):
    agent = client.agents.create(model=request.param, embedding="openai/text-embedding-3-small")
    yield client.conversations.create(agent_id=agent.id)
    client.agents.delete(agent.id)


def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried(client, conversation_on, status):
    word = unique()
    chunks = send(client, conversation_on.id, f"[[fail_first=1]] [[status={status}]] say {word}")
    assert assistant_text(chunks) == word


def test_persistent_rate_limit_ends_the_run_with_a_readable_error(client, conversation_on):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation_on.id, "[[status=429]] say never")
    body = caught.value.body
    assert "429" in body["message"]
    assert body["error_type"] == "llm_rate_limit"
    run = client.runs.list(conversation_id=conversation_on.id, limit=1).items[0]
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert "429" in run.metadata["error"]["message"]
    assert assistant_text(send(client, conversation_on.id, "say recovered")) == "recovered"


def test_bad_request_is_not_retried_and_is_reported(client, conversation_on):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation_on.id, "[[status=401]] say never")
    assert caught.value.body["error_type"] == "llm_auth"
    assert assistant_text(send(client, conversation_on.id, "say usable")) == "usable"


def test_stream_cut_mid_reply_ends_the_run(client, conversation_on):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation_on.id, "[[cut=3]] count to 50", stream_tokens=True)
    assert caught.value.body["error_type"] in ("llm_connection", "llm_other", "llm_server")
    assert assistant_text(send(client, conversation_on.id, "say after the cut")) == "after the cut"
