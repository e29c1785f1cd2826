"""Parley on a three-node Ray cluster (all on this machine) with the Redis store.

The fixture starts a head and two worker nodes with ``ray.cluster_utils.Cluster``, a private
redis-server, and ``parley serve --address <head>`` joining them. Checked here: conversation actors
spread over the nodes; the busy flag holds cluster-wide; killing a node (SIGKILL, no goodbye) loses
no acknowledged message, ends the run that was in flight as failed, and the conversation works
again on a surviving node; idle actors passivate and come back from the store.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from letta_client import APIStatusError, Letta

from parley.processes import FakeLLMProcess, RedisProcess, ServerProcess, start_redis, start_server

from .helpers import assistant_text, live_conversations, race_two, send

pytestmark = pytest.mark.cluster

IDLE_SECONDS = 4.0
# Short health checks, in the environment of the process that starts GCS: a dead node is noticed
# in ~5 s instead of ~15 s (measured in shared/notes/ray-on-this-machine.md).
HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
NODE = {"node_ip_address": "127.0.0.2", "num_cpus": 1, "object_store_memory": 100 * 1024 * 1024}


@dataclass
class ClusterRig:
    cluster: Any
    workers: list[Any]
    redis: RedisProcess
    server: ServerProcess

    def raylet_pid(self, node: Any) -> int:
        return node.all_processes["raylet"][0].process.pid

    def nodes(self) -> list[Any]:
        return [n for n in [self.cluster.head_node, *self.workers] if n in self.cluster.list_all_nodes()]

    def live_nodes(self) -> dict[str, Any]:
        """Conversation id -> the cluster node serving it, for every live activation (each
        conversation listed once: ``live_conversations`` checks it)."""
        by_id = {node.node_id: node for node in self.nodes()}
        return {c: by_id[n] for c, n in live_conversations(self.server.url).items() if n in by_id}


@pytest.fixture(scope="module")
def rig(fake_llm: FakeLLMProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    from ray.cluster_utils import Cluster

    # Ray reads its auth mode once per process, and this test process may have imported Ray
    # already: the cluster runs without token auth, and Parley is told so.
    saved = {k: os.environ.get(k) for k in HEALTH_CHECKS}
    os.environ.update(HEALTH_CHECKS)
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={**NODE, "include_dashboard": False, "resources": {"head": 1}},
    )
    workers = [cluster.add_node(**NODE, resources={"worker": 1}) for _ in range(2)]
    redis = start_redis(tmp_path_factory.mktemp("cluster-redis"))
    try:
        server = start_server(
            fake_llm,
            tmp_path_factory.mktemp("cluster-parley"),
            env={
                "PARLEY_RAY_ADDRESS": cluster.address,
                "RAY_AUTH_MODE": "disabled",
                "PARLEY_STORE_URL": redis.url,
                "PARLEY_PROXY_LOCATION": "HeadOnly",  # one machine: the nodes would share the port
                "PARLEY_SERVE_HAPROXY": "0",
                "PARLEY_CONVERSATION_IDLE_SECONDS": str(IDLE_SECONDS),
                # As cluster.yaml runs it: actors reserve Ray memory, so the autoscaler sees them.
                "PARLEY_CONVERSATION_ACTOR_MEMORY_MB": "64",
            },
        )
    except BaseException:
        redis.stop()
        cluster.shutdown()
        raise
    yield ClusterRig(cluster, workers, redis, server)
    server.stop()
    cluster.shutdown()
    redis.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def letta(rig: ClusterRig) -> Iterator[Letta]:
    with Letta(base_url=rig.server.url, timeout=60) as client:
        yield client


def activate(letta: Letta, agent_id: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        conversation = letta.conversations.create(agent_id=agent_id)
        assert (
            assistant_text(send(letta, conversation.id, f"Remember the word: W{i}"))
            == f"Okay, I will remember the word W{i}."
        )
        ids.append(conversation.id)
    return ids


@pytest.mark.timeout(240)
def test_actors_spread_and_the_busy_flag_holds_cluster_wide(letta, rig):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    ids = activate(letta, agent.id, 6)
    nodes = {id(node) for node in rig.live_nodes().values()}
    assert len(nodes) >= 2, "all conversations were activated on one node"
    for conversation_id in ids[:3]:
        assert race_two(lambda c=conversation_id: send(letta, c, "[[latency=0.5]] say raced")) == [
            "409",
            "ok",
        ]
    letta.agents.delete(agent.id)


@pytest.mark.timeout(240)
def test_node_kill_loses_no_acknowledged_message(letta, rig):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    ids = activate(letta, agent.id, 6)
    on_worker = [node for node in rig.live_nodes().values() if node in rig.workers]
    assert on_worker, "no conversation activated on a worker node"
    victim = max(set(on_worker), key=on_worker.count)
    # A run in flight on every conversation; those whose actor lived on the victim will fail.
    runs = {}
    for conversation_id in ids:
        stream = letta.conversations.messages.create(
            conversation_id, input="[[latency=30]] say never", background=True
        )
        runs[conversation_id] = next(iter(stream)).run_id
        stream.close()

    # A machine dying takes its Ray workers with it at once; a killed raylet alone leaves them
    # running for a moment (still reachable, e.g. by a cancel), so they are killed first.
    workers = psutil.Process(rig.raylet_pid(victim)).children(recursive=True)
    killed_at = time.monotonic()
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    rig.cluster.remove_node(victim, allow_graceful=False)
    for conversation_id in ids:  # the survivors' runs are cancelled, to free their conversations
        try:
            letta.conversations.cancel(conversation_id)
        except Exception:
            pass  # the victim's conversations: no live actor to ask yet
    recovered: dict[str, float] = {}
    deadline = killed_at + 90
    while len(recovered) < len(ids):
        for i, conversation_id in enumerate(ids):
            if conversation_id in recovered:
                continue
            try:
                reply = assistant_text(send(letta, conversation_id, "What word did I ask you to remember?"))
            except Exception:
                continue
            recovered[conversation_id] = time.monotonic() - killed_at
            assert reply == f"The word is W{i}."
        assert time.monotonic() < deadline, f"conversations never came back: {set(ids) - set(recovered)}"
        time.sleep(0.2)
    # Each conversation is live once, none on the dead node.
    assert set(rig.live_nodes().values()) <= set(rig.nodes())
    statuses = {c: letta.runs.retrieve(runs[c]) for c in ids}
    failed = [c for c, run in statuses.items() if run.status == "failed"]
    assert failed, "no run was in flight on the killed node"
    assert all(statuses[c].stop_reason == "error" for c in failed)
    assert all(run.status in ("failed", "cancelled") for run in statuses.values())
    # The killed runs' logs were in Redis as they ran: any replica replays them, ended as errors.
    for conversation_id in failed:
        with pytest.raises(APIStatusError) as ended:  # the SDK raises on a stream's error event
            list(letta.runs.messages.stream(runs[conversation_id], starting_after=0))
        assert "interrupted" in ended.value.body["message"]
    print(
        "\nnode kill -> first successful send on an affected conversation: "
        f"{min(recovered[c] for c in failed):.1f} s"
    )
    # Every acknowledged message is still there, and every conversation takes new sends.
    for i, conversation_id in enumerate(ids):
        listed = letta.conversations.messages.list(conversation_id, order="asc").items
        texts = [getattr(m, "content", None) for m in listed]
        assert f"Remember the word: W{i}" in texts
        assert f"Okay, I will remember the word W{i}." in texts
        assert assistant_text(send(letta, conversation_id, "say still here")) == "still here"
    letta.agents.delete(agent.id)


@pytest.mark.timeout(240)
def test_idle_actors_passivate_and_reactivate_from_the_store(letta, rig):
    agent = letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    [conversation_id] = activate(letta, agent.id, 1)
    assert conversation_id in rig.live_nodes()
    deadline = time.monotonic() + 60  # every conversation, this one too, after IDLE_SECONDS
    while live := rig.live_nodes():
        assert time.monotonic() < deadline, f"idle conversations did not passivate: {set(live)}"
        time.sleep(0.5)
    assert (
        assistant_text(send(letta, conversation_id, "What word did I ask you to remember?"))
        == "The word is W0."
    )
    letta.agents.delete(agent.id)
