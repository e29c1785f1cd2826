"""Background runs, async sends, resumable run streams and cancel, through letta-client."""

from __future__ import annotations

import time

import pytest
from letta_client import BadRequestError, ConflictError

from .helpers import assistant_text, of_type

SLOW = "[[latency=1]] count to 5"


def _wait_for_status(client, run_id: str, wanted: set[str], timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = client.runs.retrieve(run_id).status
        if status in wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_background_run_survives_its_reader_and_replays(client, conversation):
    stream = client.conversations.messages.create(conversation.id, input=SLOW, background=True)
    ping = next(iter(stream))
    stream.close()  # the client goes away; the run must not
    assert _wait_for_status(client, ping.run_id, {"completed", "failed", "cancelled"}) == "completed"

    replay = list(client.runs.messages.stream(ping.run_id, starting_after=0))
    kinds = [c.message_type for c in replay]
    assert kinds == ["ping", "assistant_message", "stop_reason", "usage_statistics"]
    assert [c.seq_id for c in replay] == [1, 2, 3, 4]  # each chunk its own number
    assert assistant_text(replay) == "1 2 3 4 5"

    # From the middle: everything after the ping.
    rest = list(client.runs.messages.stream(ping.run_id, starting_after=1))
    assert [c.message_type for c in rest] == ["assistant_message", "stop_reason", "usage_statistics"]


def test_finished_background_run_replays_from_the_store(client, conversation, server):
    # A finished run's stream is read from the store by the replica itself: it needs no live
    # conversation actor, so it outlives passivation, a restart, or the node the actor was on.
    stream = client.conversations.messages.create(conversation.id, input="count to 3", background=True)
    live = list(stream)
    run_id = live[0].run_id
    replay = list(client.runs.messages.stream(run_id, starting_after=0))
    assert [c.message_type for c in replay] == [c.message_type for c in live]
    assert assistant_text(replay) == "1 2 3"
    tail = list(client.runs.messages.stream(run_id, starting_after=1))
    assert [c.message_type for c in tail] == ["assistant_message", "stop_reason", "usage_statistics"]


def test_two_readers_follow_one_live_run(client, conversation):
    stream = client.conversations.messages.create(conversation.id, input=SLOW, background=True)
    ping = next(iter(stream))
    follower = list(client.runs.messages.stream(ping.run_id, starting_after=0))
    original = [ping, *stream]
    assert assistant_text(follower) == assistant_text(original) == "1 2 3 4 5"


def test_foreground_run_is_not_resumable(client, conversation):
    chunks = list(client.conversations.messages.create(conversation.id, input="say hi"))
    with pytest.raises(BadRequestError, match="background"):
        list(client.runs.messages.stream(chunks[0].run_id))


def test_create_async_runs_to_completion(client, agent):
    run = client.agents.messages.create_async(agent.id, messages=[{"role": "user", "content": "say later"}])
    assert run.id.startswith("run-") and run.background is True
    assert run.status in {"created", "running", "completed"}
    assert _wait_for_status(client, run.id, {"completed", "failed"}) == "completed"
    messages = client.runs.messages.list(run.id).items
    assert [(m.message_type, m.content) for m in messages] == [
        ("user_message", "say later"),
        ("assistant_message", "later"),
    ]


def test_agents_messages_cancel(client, agent):
    run = client.agents.messages.create_async(
        agent.id, messages=[{"role": "user", "content": "[[latency=30]] say no"}]
    )
    assert _wait_for_status(client, run.id, {"running"}) == "running"
    assert dict(client.agents.messages.cancel(agent.id, run_ids=[run.id])) == {run.id: "cancelled"}
    assert _wait_for_status(client, run.id, {"cancelled"}) == "cancelled"
    with pytest.raises(ConflictError):
        client.agents.messages.cancel(agent.id)
    # The default conversation is free again.
    response = client.agents.messages.create(agent.id, messages=[{"role": "user", "content": "say free"}])
    assert of_type(response.messages, "assistant_message")[0].content == "free"


def _numbers(chunks) -> list[int]:
    return [c.seq_id for c in chunks]


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream
@pytest.mark.parametrize("mode", ["step", "token", "async"])
def test_every_chunk_its_own_seq_id_and_every_resume_point(client, agent, mode):
    """Live and replayed, the chunks of a run are numbered 1, 2, 3, ... (stop reason and usage
    included), and ``starting_after=N`` gives exactly those numbered above N, for every N."""
    prompt = "count to 5 [[token_delay=0.01]]"
    live: list = []
    if mode == "async":
        run_id = client.agents.messages.create_async(agent.id, input=prompt).id
        assert _wait_for_status(client, run_id, {"completed", "failed", "cancelled"}) == "completed"
    else:
        stream = client.agents.messages.stream(
            agent.id, input=prompt, background=True, stream_tokens=(mode == "token")
        )
        live = list(stream)
        run_id = live[0].run_id
    replay = list(client.runs.messages.stream(run_id, starting_after=0))
    assert _numbers(replay) == list(range(1, len(replay) + 1))
    assert [c.message_type for c in replay[-2:]] == ["stop_reason", "usage_statistics"]
    if live:
        assert [(c.message_type, c.seq_id) for c in live] == [(c.message_type, c.seq_id) for c in replay]
    if mode == "token":
        assert len(of_type(replay, "assistant_message")) > 1  # streamed in pieces, each numbered
    for after in range(len(replay) + 1):
        resumed = list(client.runs.messages.stream(run_id, starting_after=after))
        assert _numbers(resumed) == _numbers(replay)[after:], after
    # The client that saw the stop reason and lost the connection gets the usage, and nothing else.
    stop = replay[-2]
    [usage] = client.runs.messages.stream(run_id, starting_after=stop.seq_id)
    assert usage.message_type == "usage_statistics"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream
@pytest.mark.parametrize("stream_tokens", [False, True])
def test_foreground_stream_numbers_every_chunk(client, agent, stream_tokens):
    chunks = list(
        client.agents.messages.stream(
            agent.id, input="count to 5 [[token_delay=0.01]]", stream_tokens=stream_tokens
        )
    )
    assert _numbers(chunks) == list(range(1, len(chunks) + 1))
    assert chunks[-2].message_type == "stop_reason" and chunks[-1].message_type == "usage_statistics"
