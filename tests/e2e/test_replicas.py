"""Several HTTP ingress replicas over the same conversation actors (``--min-replicas 2``).

The busy flag lives in the conversation's actor, not in a replica, so a 409 holds whichever
replica each request reaches; and a background run lives on when the replica serving its stream
is killed, and resumes through another one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from letta_client import Letta

from parley.processes import FakeLLMProcess, ServerProcess, start_server

from .helpers import assistant_text, live_conversations, race, race_two, send


@pytest.fixture(scope="module")
def two_replicas(
    fake_llm: FakeLLMProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(
        fake_llm, tmp_path_factory.mktemp("parley-replicas"), env={"PARLEY_MIN_REPLICAS": "2"}
    )
    deadline = time.monotonic() + 60
    while len(replicas(started)) < 2:
        assert time.monotonic() < deadline, "Serve did not start two replicas"
        time.sleep(0.5)
    yield started
    started.stop()


def replicas(server: ServerProcess) -> list:
    return server.processes_named("ray::ServeReplica")


@pytest.fixture
def letta(two_replicas: ServerProcess) -> Iterator[Letta]:
    with Letta(base_url=two_replicas.url, timeout=60) as client:
        yield client


def test_overlapping_sends_conflict_across_replicas(letta):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    conversation = letta.conversations.create(agent_id=agent.id)
    send(letta, conversation.id, "say warm")  # activate the actor before racing
    outcomes = [race_two(lambda: send(letta, conversation.id, "[[latency=0.5]] say raced")) for _ in range(6)]
    assert outcomes == [["409", "ok"]] * 6
    letta.agents.delete(agent.id)


def test_racing_first_sends_from_two_replicas(letta, two_replicas):
    """Many clients send the first message of new conversations at once, through both replicas:
    each conversation is activated once, and exactly one send runs."""
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    for _ in range(6):
        conversation = letta.conversations.create(agent_id=agent.id)
        outcomes = race(lambda c=conversation.id: send(letta, c, "[[latency=0.5]] say first"), 8)
        assert outcomes == ["409"] * 7 + ["ok"]
        assert list(live_conversations(two_replicas.url)).count(conversation.id) == 1
    letta.agents.delete(agent.id)


def test_background_run_outlives_a_killed_replica(letta, two_replicas):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    conversation = letta.conversations.create(agent_id=agent.id)
    stream = letta.conversations.messages.create(
        conversation.id, input="[[latency=3]] say survived", background=True
    )
    ping = next(iter(stream))
    for replica in replicas(two_replicas):
        replica.kill()  # every replica: whichever served the stream is gone
        break
    stream.close()
    deadline = time.monotonic() + 60
    while True:
        try:
            replay = list(letta.runs.messages.stream(ping.run_id, starting_after=0))
            break
        except Exception:
            assert time.monotonic() < deadline, "no replica answered after one was killed"
            time.sleep(0.5)
    assert assistant_text(replay) == "survived"
    assert letta.runs.retrieve(ping.run_id).status == "completed"
    letta.agents.delete(agent.id)
