"""Activation under pressure and failure, on a server with a small live set: two conversation
actors sharing a cap of four live conversations (``actors/activation.md`` lists each case).

- the cap holds: more conversations than the cap, used in turn and at once, never more than four
  live, every send answered, nothing forgotten; a busy conversation is never the one evicted;
- a directory shard killed (and restarted by Ray) rebuilds its map from the actors: a conversation
  live before is found on its actor again, never activated a second time;
- a conversation actor killed: its conversations come back on the other actor, the run it cut
  short ends as failed, and the pool starts a replacement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from letta_client import Letta

from parley.processes import FakeLLMProcess, ServerProcess, start_server

from .helpers import assistant_text, live_conversations, race_two, send

CAP = 4
HOSTS = 2


@pytest.fixture(scope="module")
def small_server(
    fake_llm: FakeLLMProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(
        fake_llm,
        tmp_path_factory.mktemp("parley-small-live-set"),
        env={
            "PARLEY_HOSTS_PER_NODE": str(HOSTS),
            "PARLEY_LIVE_CONVERSATIONS_PER_NODE": str(CAP),
            "PARLEY_CONVERSATION_IDLE_SECONDS": "300",  # only the cap passivates here
        },
    )
    yield started
    started.stop()


@pytest.fixture
def letta(small_server: ServerProcess) -> Iterator[Letta]:
    with Letta(base_url=small_server.url, timeout=60) as client:
        yield client


def hosts(server: ServerProcess) -> list[dict]:
    return httpx.get(f"{server.url}/v1/_parley/activations", timeout=30).json()["hosts"]


def remember(letta: Letta, count: int, agent_id: str) -> list[str]:
    ids = []
    for i in range(count):
        conversation = letta.conversations.create(agent_id=agent_id)
        send(letta, conversation.id, f"Remember the word: CAP{i}")
        ids.append(conversation.id)
    return ids


@pytest.mark.timeout(240)
def test_the_cap_holds(letta, small_server):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(live_conversations(small_server.url)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ids = remember(letta, 3 * CAP, agent.id)
        # A busy conversation is never evicted: one holds a long run while the others cycle.
        busy = ids[0]
        held = letta.conversations.messages.create(busy, input="[[latency=3]] say held", background=True)
        run_id = next(iter(held)).run_id
        held.close()
        for i, conversation_id in enumerate(ids[1:], start=1):
            reply = assistant_text(send(letta, conversation_id, "What word did I ask you to remember?"))
            assert reply == f"The word is CAP{i}."
        assert busy in live_conversations(small_server.url)
        assert race_two(lambda: send(letta, busy, "say again")) == ["409", "409"]  # still its run
        deadline = time.monotonic() + 30
        while letta.runs.retrieve(run_id).status != "completed":
            assert time.monotonic() < deadline, "the busy conversation's run did not complete"
            time.sleep(0.2)
        assert (
            assistant_text(send(letta, busy, "What word did I ask you to remember?")) == "The word is CAP0."
        )
    finally:
        stop.set()
        watcher.join(10)
    assert seen and max(seen) <= CAP, f"more than {CAP} live: {max(seen)}"
    assert all(h["capacity"] == CAP // HOSTS for h in hosts(small_server))
    letta.agents.delete(agent.id)


@pytest.mark.timeout(240)
def test_a_reader_mid_stream_sees_its_actor_die(letta, small_server):
    """Its deltas come over a stream channel from the conversation actor; when that actor dies the
    stream ends at once with an error, and the conversation is served again."""
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    conversation_id = letta.conversations.create(agent_id=agent.id).id
    stream = letta.conversations.messages.create(
        conversation_id,
        messages=[{"role": "user", "content": "[[stall=60]] [[stall_after=5]] count to 40"}],
        stream_tokens=True,
    )
    chunks = iter(stream)
    seen = [next(chunks)]
    while seen[-1].message_type != "assistant_message":
        seen.append(next(chunks))
    live = httpx.get(f"{small_server.url}/v1/_parley/activations", timeout=30).json()
    host_name = next(a["host"] for a in live["activations"] if a["conversation_id"] == conversation_id)
    host = next(h for h in live["hosts"] if h["name"] == host_name)
    killed_at = time.monotonic()
    _kill(psutil.Process(host["pid"]))
    rest: list = []
    try:
        rest.extend(chunks)
    except Exception as exc:  # the SDK may raise on the server's error event instead
        rest.append(exc)
    finally:
        stream.close()
    assert time.monotonic() - killed_at < 20, "the stream did not end when its actor died"
    # The channel broke; the actor's own error, read from the call behind it, names the cause.
    assert rest and "interrupted: ActorDiedError" in str(rest[-1]), rest[-3:]
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = assistant_text(send(letta, conversation_id, "say back"))
            break
        except Exception:
            assert time.monotonic() < deadline, "the conversation was not served again"
            time.sleep(0.5)
    assert reply
    letta.agents.delete(agent.id)


def _kill(process: psutil.Process) -> None:
    process.kill()
    process.wait(10)


def _shards(server: ServerProcess) -> list[psutil.Process]:
    return server.processes_named("ray::DirectoryShard")


@pytest.mark.timeout(240)
def test_directory_shard_lost(letta, small_server):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    [conversation_id] = remember(letta, 1, agent.id)
    stream = letta.conversations.messages.create(
        conversation_id, input="[[latency=20]] say kept", background=True
    )
    run_id = next(iter(stream)).run_id
    stream.close()
    shards = _shards(small_server)
    assert shards
    for shard in shards:
        _kill(shard)
    # The replica forgets its cached bindings with it, so the next send asks a restarted shard.
    for replica in small_server.processes_named("ray::ServeReplica"):
        _kill(replica)
    deadline = time.monotonic() + 90
    while True:
        try:
            outcome = race_two(lambda: send(letta, conversation_id, "say twice"))
        except Exception:
            outcome = []
        if outcome == ["409", "409"]:
            break  # the same activation, its run still holding it: found on its actor again
        assert "ok" not in outcome, f"a second activation took a send during the run: {outcome}"
        assert time.monotonic() < deadline, f"the conversation did not come back: {outcome}"
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while letta.runs.retrieve(run_id).status != "completed":
        assert time.monotonic() < deadline + 30, "the run in flight did not complete"
        time.sleep(0.2)
    assert list(live_conversations(small_server.url)).count(conversation_id) == 1
    assert (
        assistant_text(send(letta, conversation_id, "What word did I ask you to remember?"))
        == "The word is CAP0."
    )
    letta.agents.delete(agent.id)


@pytest.mark.timeout(240)
def test_conversation_actor_killed(letta, small_server):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    ids = remember(letta, CAP, agent.id)
    live = httpx.get(f"{small_server.url}/v1/_parley/activations", timeout=30).json()
    host_of = {a["conversation_id"]: a["host"] for a in live["activations"]}
    # The last one is live for sure (placement may have evicted an earlier one to make room).
    victim_name = host_of[ids[-1]]
    victim = next(h for h in live["hosts"] if h["name"] == victim_name)
    stream = letta.conversations.messages.create(ids[-1], input="[[latency=30]] say never", background=True)
    run_id = next(iter(stream)).run_id
    stream.close()
    _kill(psutil.Process(victim["pid"]))
    deadline = time.monotonic() + 60
    for i, conversation_id in enumerate(ids):
        while True:
            try:
                reply = assistant_text(send(letta, conversation_id, "What word did I ask you to remember?"))
                break
            except Exception:
                assert time.monotonic() < deadline, f"{conversation_id} did not come back"
                time.sleep(0.5)
        assert reply == f"The word is CAP{i}."
    run = letta.runs.retrieve(run_id)
    assert run.status == "failed" and run.stop_reason == "error"
    deadline = time.monotonic() + 60  # the pool replaced the killed actor
    while len([h for h in hosts(small_server) if h["pid"] != victim["pid"]]) < HOSTS:
        assert time.monotonic() < deadline, "the killed conversation actor was not replaced"
        time.sleep(0.5)
    letta.agents.delete(agent.id)
