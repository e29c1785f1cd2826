"""What a tool call costs: the Ray task round trip, and a tool turn against a plain one.

    python -m benchmarks.tool_calls [--calls 50]

1. Ray alone: a local Ray (2 CPUs, no dashboard) and ``RayToolRunner``, the runner conversation
   actors use: the round trip of a trivial tool, sequential, after a warm-up; then a hung tool
   with a 1 s timeout (how long past its deadline the kill returns) and the first call after it
   (a fresh worker process).
2. Through the server: one conversation, ``--calls`` JSON turns that call a trivial tool (two
   model steps and one task) against ``--calls`` plain turns (one step), with the whole server
   tree's CPU per turn. The fake provider answers at once, so the difference is Parley's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from parley.processes import ServerProcess, start_fake_llm, start_server

from .measure import TreeCpu, median, percentile

NOOP = textwrap.dedent(
    '''
    def noop(tag: str) -> str:
        """Returns its argument.

        Args:
            tag (str): Anything.
        """
        return tag
    '''
)


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "median": median(values) * 1e3,
        "p99": percentile(values, 99) * 1e3,
        "min": min(values) * 1e3,
        "n": len(values),
    }


# --- 1. the Ray task alone ------------------------------------------------------------------------
def ray_round_trip(calls: int) -> dict[str, Any]:
    import ray

    from actors.tool_tasks import RayToolRunner
    from runtime.tools.tool import Tool

    tool = Tool(name="noop", source_code=NOOP, json_schema={"name": "noop"})
    hung = Tool(
        name="hang", source_code="def hang():\n    import time\n    time.sleep(600)\n", json_schema={}
    )
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024**2, logging_level="ERROR")
    try:

        async def measure() -> dict[str, Any]:
            runner = RayToolRunner(timeout_seconds=30, num_cpus=1)
            for _ in range(3):  # start the worker process and import the runtime in it
                await runner.run(tool, {"tag": "warm"})
            trips = []
            for i in range(calls):
                began = time.perf_counter()
                outcome = await runner.run(tool, {"tag": str(i)})
                trips.append(time.perf_counter() - began)
                assert outcome.content == str(i), outcome
            strict = RayToolRunner(timeout_seconds=1.0, num_cpus=1)
            began = time.perf_counter()
            outcome = await strict.run(hung, {})
            killed_after = time.perf_counter() - began
            assert outcome.status == "error" and "TimeoutError" in outcome.content, outcome
            began = time.perf_counter()
            await runner.run(tool, {"tag": "after"})
            after_kill = time.perf_counter() - began
            return {
                "round_trip_ms": _ms(trips),
                "hung_tool_returned_after_s": killed_after,
                "first_call_after_kill_ms": after_kill * 1e3,
            }

        return asyncio.run(measure())
    finally:
        ray.shutdown()


# --- 2. through the server ------------------------------------------------------------------------
def server_turns(url: str, server: ServerProcess | None, calls: int) -> dict[str, Any]:
    http = httpx.Client(base_url=url, timeout=60)
    tool = http.put("/v1/tools/", json={"source_code": NOOP}).raise_for_status().json()
    agent = (
        http.post("/v1/agents/", json={"model": "openai/gpt-4o-mini", "tool_ids": [tool["id"]]})
        .raise_for_status()
        .json()
    )
    conversation = http.post("/v1/conversations/", params={"agent_id": agent["id"]}, json={}).json()
    path = f"/v1/conversations/{conversation['id']}/messages"

    def turn(text: str) -> list[dict[str, Any]]:
        response = http.post(path, json={"input": text, "streaming": False}).raise_for_status()
        return response.json()["messages"]

    def phase(kind: str) -> dict[str, Any]:
        cpu = TreeCpu(server.tree) if server else None
        if cpu:
            cpu.start()
        latencies = []
        for i in range(calls):
            began = time.perf_counter()
            if kind == "tool":
                messages = turn(f'call noop with {{"tag": "t{i}"}}')
                assert messages[1]["tool_return"] == f"t{i}", messages
            else:
                messages = turn(f"say plain {i}")
                assert messages[-1]["content"] == f"plain {i}", messages
            latencies.append(time.perf_counter() - began)
        out: dict[str, Any] = {"turn_ms": _ms(latencies)}
        if cpu:
            out["cpu_ms_per_turn"] = cpu.seconds() * 1e3 / calls
        return out

    turn("say warm")
    turn('call noop with {"tag": "warm"}')
    result = {"plain": phase("plain"), "tool": phase("tool")}
    result["tool_turn_minus_plain_turn_ms"] = (
        result["tool"]["turn_ms"]["median"] - result["plain"]["turn_ms"]["median"]
    )
    http.delete(f"/v1/agents/{agent['id']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tool_calls", description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to let the server settle")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"ray_task": ray_round_trip(args.calls)}
    fake = start_fake_llm()
    try:
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as data_dir:
            server = start_server(fake, Path(data_dir))
            time.sleep(args.settle)
            try:
                result["server"] = server_turns(server.url, server, args.calls)
            finally:
                server.stop()
    finally:
        fake.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
