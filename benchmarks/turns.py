"""The walking-skeleton measurement: one turn's latency, CPU per turn, memory per live actor.

    python -m benchmarks.turns [--url http://127.0.0.1:8283] [--conversations 8] [--turns 200]

Without ``--url`` it starts a fake LLM (zero latency) and a ``parley serve`` of its own and stops
both at the end. Every request goes through the official letta-client SDK over HTTP, every reply
is checked, and CPU is read from the server's whole process tree (Ray workers included). The
concurrent phase runs ``--repeats`` times and the medians are reported: on a shared 2-core box a
single phase can be off by a fifth.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from letta_client import Letta

from parley.processes import ServerProcess, start_fake_llm, start_server

from .measure import TreeCpu, machine_busy_seconds, median, memory_of, percentile


def _turn(client: Letta, conversation_id: str, i: int) -> float:
    began = time.perf_counter()
    chunks = list(client.conversations.messages.create(conversation_id, input=f"echo turn {i}"))
    elapsed = time.perf_counter() - began
    replies = [c.content for c in chunks if c.message_type == "assistant_message"]
    if replies != [f"turn {i}"]:
        raise AssertionError(f"wrong reply: {replies!r}")
    return elapsed


def _json_turn(http: httpx.Client, conversation_id: str, i: int) -> float:
    began = time.perf_counter()
    response = http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"input": f"echo turn {i}", "streaming": False},
    )
    elapsed = time.perf_counter() - began
    response.raise_for_status()
    if response.json()["messages"][0]["content"] != f"turn {i}":
        raise AssertionError(f"wrong reply: {response.text}")
    return elapsed


def concurrent_phase(
    client: Letta, server: ServerProcess | None, ids: list[str], per_conversation: int
) -> dict[str, float]:
    """Every conversation sends ``per_conversation`` sequential turns, all conversations at once."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(cid: str) -> None:
        for i in range(per_conversation):
            elapsed = _turn(client, cid, i)
            with lock:
                latencies.append(elapsed)

    cpu = TreeCpu(server.tree) if server else None
    if cpu:
        cpu.start()
    busy0 = machine_busy_seconds()
    began = time.perf_counter()
    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(worker, ids))
    wall = time.perf_counter() - began
    busy = machine_busy_seconds() - busy0
    done = len(latencies)
    phase = {
        "ok_turns": float(done),
        "wall_s": wall,
        "turns_per_s": done / wall,
        "p50_ms": median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "machine_busy_s": busy,
    }
    if cpu:
        tree_s = cpu.seconds()
        phase["server_tree_cpu_s"] = tree_s
        phase["cpu_ms_per_turn"] = tree_s / done * 1e3
        phase["other_cpu_s"] = busy - tree_s  # the load client and anything else on the machine
    return phase


def run(
    url: str,
    server: ServerProcess | None,
    conversations: int = 8,
    turns: int = 200,
    sequential: int = 50,
    repeats: int = 3,
    idle_seconds: float = 5.0,
) -> dict[str, Any]:
    client = Letta(base_url=url, timeout=60)
    http = httpx.Client(base_url=url, timeout=60)
    agent = client.agents.create(
        model="openai/gpt-4o-mini", memory_blocks=[{"label": "human", "value": "A benchmark user."}]
    )
    ids = [client.conversations.create(agent_id=agent.id).id for _ in range(conversations)]
    for cid in ids:  # activate every conversation's actor before measuring
        _turn(client, cid, 0)
    result: dict[str, Any] = {"conversations": conversations, "turns": turns, "repeats": repeats}

    stream_latency = [_turn(client, ids[0], i) for i in range(sequential)]
    json_latency = [_json_turn(http, ids[0], i) for i in range(sequential)]
    result["sequential_stream_turn_ms"] = {"median": median(stream_latency) * 1e3, "n": sequential}
    result["sequential_json_turn_ms"] = {"median": median(json_latency) * 1e3, "n": sequential}

    phases = [concurrent_phase(client, server, ids, turns // conversations) for _ in range(repeats)]
    result["concurrent_phases"] = phases
    result["concurrent"] = {key: median([phase[key] for phase in phases]) for key in phases[0]}
    if server:
        idle = TreeCpu(server.tree)
        idle.start()
        time.sleep(idle_seconds)
        result["idle_server_cpu_cores"] = idle.seconds() / idle_seconds
        # Live conversations from the server's activations route (None: a server from before it);
        # ray::ConversationActor processes were one per live conversation, and are now a few
        # hosts of many, so the memory below is per process, not per conversation.
        try:
            activations = server.activations()
        except (httpx.HTTPError, ValueError):
            activations = None
        result["live_activations"] = activations.live if activations is not None else None
        actors = server.conversation_actor_processes()
        if actors:
            total = memory_of(actors)
            n = len(actors)
            result["conversation_actor_memory_mib"] = {
                "live_actors": n,
                "uss": total.uss_mib / n,
                "pss": total.pss_mib / n,
                "rss": total.rss_mib / n,
            }
        result["server_tree_memory_mib"] = vars(memory_of(server.tree()))
    client.agents.delete(agent.id)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turns", description=__doc__)
    parser.add_argument("--url", help="an already running server (CPU and memory are then not measured)")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=200, help="turns per concurrent phase")
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="concurrent phases; medians are reported")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server it starts")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds to let a server it starts finish starting up"
    )
    args = parser.parse_args(argv)
    shape = (args.conversations, args.turns, args.sequential, args.repeats)
    if args.url:
        print(json.dumps(run(args.url, None, *shape), indent=2))
        return 0
    fake = start_fake_llm()
    try:
        env = dict(item.split("=", 1) for item in args.env)
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as data_dir:
            server = start_server(fake, Path(data_dir), env=env)
            time.sleep(args.settle)  # Serve keeps reconciling for a while after it first answers
            try:
                result = run(server.url, server, *shape)
            finally:
                server.stop()
        print(json.dumps(result, indent=2))
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
