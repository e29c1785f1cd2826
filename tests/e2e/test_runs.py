"""Runs through letta-client: every send leaves a run with its status, stop reason and messages."""

from __future__ import annotations

import pytest
from letta_client import APIStatusError, BadRequestError, NotFoundError

from .helpers import of_type, send


def _run_id(chunks) -> str:
    return chunks[0].run_id


def test_completed_run(client, agent, conversation):
    chunks = send(client, conversation.id, "say done")
    run = client.runs.retrieve(_run_id(chunks))
    assert run.status == "completed"
    assert run.stop_reason == "end_turn"
    assert run.agent_id == agent.id
    assert run.conversation_id == conversation.id
    assert run.background is False
    assert run.completed_at is not None
    assert run.metadata["run_type"] == "send_conversation_message"

    messages = client.runs.messages.list(run.id).items
    assert [m.message_type for m in messages] == ["user_message", "assistant_message"]
    assert [m.content for m in messages] == ["say done", "done"]
    assert all(m.run_id == run.id for m in messages)
    newest_first = client.runs.messages.list(run.id, order="desc").items
    assert [m.id for m in newest_first] == [m.id for m in messages][::-1]


def test_list_runs_by_conversation_and_status(client, agent, conversation):
    first = _run_id(send(client, conversation.id, "say one"))
    with pytest.raises(APIStatusError):
        send(client, conversation.id, "y" * 200_000)  # the provider refuses it: context length
    listed = client.runs.list(conversation_id=conversation.id).items
    assert len(listed) == 2
    failed = listed[0]
    assert failed.status == "failed" and failed.stop_reason == "error"
    assert "maximum context length" in failed.metadata["error"]["message"]
    assert listed[1].id == first
    assert [
        r.id for r in client.runs.list(conversation_id=conversation.id, statuses=["completed"]).items
    ] == [first]
    assert first in [r.id for r in client.runs.list(agent_id=agent.id).items]
    assert client.runs.list(conversation_id=conversation.id, active=True).items == []


def test_cancelled_run_status(client, conversation):
    stream = client.conversations.messages.create(conversation.id, input="[[latency=30]] say never")
    run_id = next(iter(stream)).run_id
    client.conversations.cancel(conversation.id)
    rest = list(stream)
    assert of_type(rest, "stop_reason")[0].stop_reason == "cancelled"
    run = client.runs.retrieve(run_id)
    assert run.status == "cancelled" and run.stop_reason == "cancelled"


def test_unknown_and_malformed_run_ids(client):
    with pytest.raises(NotFoundError):
        client.runs.retrieve("run-00000000-0000-4000-8000-000000000000")
    with pytest.raises(BadRequestError, match="Invalid run ID"):
        client.runs.retrieve("not-a-run")
