"""`parley bench overhead`, tiny, end to end: a real fake provider, bare proxy and `parley serve`,
every target and mode, and nothing left running afterwards. Then the pure parts of the activation
scenarios (fresh, reactivation, idle, churn's recall check), without a server: a few seconds."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from benchmarks import scenarios
from benchmarks.cli import _normalise, build_parser, main
from benchmarks.load import OpenAITarget, TurnResult, delete_path, recall_text, remember_text
from benchmarks.progress import Progress
from benchmarks.report import markdown
from parley.processes import ACTIVATIONS_PATH, Activations, conversation_key, fetch_activations

RUN_FIELDS = {
    "target",
    "mode",
    "concurrency",
    "turns_ok",
    "turns_requested",
    "errors",
    "errors_total",
    "wall_s",
    "turns_per_s",
    "latency_ms",
    "cpu",
    "memory_peak_mib",
}


class Descendants:
    """Every process started under this one while the benchmark runs (Ray's workers included),
    except new children of process trees that were already there (the session's own server)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            for proc in me.children(recursive=True):
                try:
                    if proc.pid in self._before or any(p.pid in self._before for p in proc.parents()):
                        continue
                    self.seen.setdefault(proc.pid, proc.create_time())
                except psutil.Error:
                    pass

    def __enter__(self) -> Descendants:
        self._before = {p.pid for p in psutil.Process().children(recursive=True)}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self) -> list[str]:
        left = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.Error:
                pass
        return left


def test_overhead_end_to_end(tmp_path):
    out = tmp_path / "out"
    began = time.monotonic()
    with Descendants() as descendants:
        status = main(
            [
                "overhead",
                "--concurrency", "1,2",
                "--turns", "6",
                "--repeats", "1",
                "--settle", "3",
                "--settle-between", "0",
                "--sample-interval", "0.2",
                "--no-progress",
                "--out", str(out),
            ]
        )  # fmt: skip
    took = time.monotonic() - began
    assert status == 0
    assert took < 55, f"the smoke run took {took:.0f} s"
    assert len(descendants.seen) >= 5, "the server's process tree was never seen"
    deadline = time.monotonic() + 15
    while descendants.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert descendants.alive() == []

    result = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# parley bench overhead")
    assert result["schema"] == "parley-bench/1" and result["scenario"] == "overhead"
    assert {"command", "commit", "machine", "config", "setup", "points", "warnings", "duration_s"} <= set(
        result
    )
    assert result["setup"]["managed"] and result["setup"]["targets"] == ["parley", "proxy", "direct"]
    points = result["points"]
    assert [(p["concurrency"], p["mode"]) for p in points] == [
        (1, "json"),
        (1, "stream"),
        (2, "json"),
        (2, "stream"),
    ]
    for point in points:
        assert set(point["targets"]) == {"parley", "proxy", "direct"}
        assert point["ratio"]["vs_direct"] > 0 and point["ratio"]["vs_proxy"] > 0
        for target, summary in point["targets"].items():
            assert RUN_FIELDS - {"target"} <= set(summary), target
            assert summary["errors"] == {} and summary["turns_ok"] == 6, (target, summary)
            assert (
                summary["latency_ms"]["p50"] > 0
                and summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"]
            )
            assert summary["turns_per_s"] > 0
            cpu = summary["cpu"]
            assert {"target_ms_per_turn", "loadgen_s", "loadgen_cores", "machine_busy_s", "other_s"} <= set(
                cpu
            )
            if point["mode"] == "stream":
                assert summary["ttfb_ms"]["p50"] > 0
            run = point["runs"][target][0]
            assert RUN_FIELDS <= set(run) and run["target"] == target
        parley = point["targets"]["parley"]
        assert parley["cpu"]["target_ms_per_turn"] > 0
        assert parley["memory_peak_mib"]["rss"] > 100 and parley["memory_peak_mib"]["pss"] > 0


# --- the activation scenarios' pure parts -----------------------------------------------------------
UUID = "6f1c2a4e-8b7d-4c3a-9e2f-1a2b3c4d5e6f"
LETTA_ID = f"conv-{UUID}"
OPENAI_ID = "conv_" + UUID.replace("-", "") + "0" * 16  # the same conversation on the OpenAI surface
OTHER_ID = "conv-0b7e7c1e-2f6e-4f57-9a55-3b1f2c8e7a10"
ROUTE_BODY = {
    "hosts": [
        {"name": "host-0", "node_id": "n1", "pid": 11, "live": 2, "capacity": 64},
        {"name": "host-1", "node_id": "n1", "pid": 12, "live": 0, "capacity": 64},
    ],
    "activations": [
        {"conversation_id": LETTA_ID, "host": "host-0", "node_id": "n1", "busy": True, "idle_seconds": 0.0},
        {"conversation_id": OTHER_ID, "host": "host-0", "node_id": "n1", "busy": False, "idle_seconds": 2.5},
    ],
}


def test_activations_are_matched_whichever_surface_named_the_conversation():
    found = Activations.from_json(ROUTE_BODY)
    assert found.live == 2
    assert conversation_key(LETTA_ID) == conversation_key(OPENAI_ID) == UUID.replace("-", "")
    assert found.live_among([LETTA_ID]) == found.live_among([OPENAI_ID, LETTA_ID]) == 1
    assert found.live_among(["conv-" + "1" * 8 + UUID[8:]]) == 0
    assert found.summary() == {"live": 2, "busy": 1, "hosts": 2, "capacity": 128, "live_per_host": [2, 0]}
    with pytest.raises(ValueError):
        Activations.from_json(["not", "an", "object"])


@contextmanager
def _route(status: int, body: Any) -> Iterator[tuple[str, list[str | None]]]:
    """A loopback HTTP server answering every GET with ``status`` and ``body``; yields its URL and
    the Authorization headers it saw."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            payload = json.dumps(body).encode() if self.path == ACTIVATIONS_PATH else b"{}"
            self.send_response(status if self.path == ACTIVATIONS_PATH else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_activations_sends_the_key_and_takes_404_as_no_route():
    with _route(200, ROUTE_BODY) as (url, seen):
        assert fetch_activations(url, api_key="k").live == 2
        assert seen == ["Bearer k"]
    with _route(404, {"detail": "Not Found"}) as (url, _):
        assert fetch_activations(url) is None


class _StubRig:
    """What ``Context.live`` asks of a rig: the route's answers and process counts, in turn."""

    def __init__(self, activations: list[Activations | None], processes: list[int]) -> None:
        self._activations, self._processes = activations, processes

    def activations(self) -> Activations | None:
        return self._activations.pop(0) if len(self._activations) > 1 else self._activations[0]

    def conversation_host_processes(self) -> int:
        return self._processes.pop(0) if len(self._processes) > 1 else self._processes[0]


def _context(rig: _StubRig) -> scenarios.Context:
    return scenarios.Context(rig, SimpleNamespace(), Progress(0, enabled=False))  # type: ignore[arg-type]


def test_passivation_is_waited_for_by_the_route_or_else_by_processes():
    live, none_live = (
        Activations.from_json(ROUTE_BODY),
        Activations.from_json({"hosts": [], "activations": []}),
    )
    by_route = asyncio.run(_context(_StubRig([live, none_live], [4])).wait_passivated([LETTA_ID], 2, 3, 5))
    assert by_route["passivated"] is True and by_route["source"] == "endpoint" and by_route["of_ours"] == 0
    # A server from before the route (404): ray::ConversationActor processes back to the baseline.
    ctx = _context(_StubRig([None], [4, 2]))
    by_processes = asyncio.run(ctx.wait_passivated([LETTA_ID], 2, 3, 5))
    assert by_processes["passivated"] is True and by_processes["source"] == "processes"
    assert ctx.activations_route is False and by_processes["host_processes"] == 2
    stuck = asyncio.run(_context(_StubRig([live], [4])).wait_passivated([LETTA_ID], 2, 0, 0.6))
    assert stuck["passivated"] is False and stuck["of_ours"] == 1 and stuck["waited_s"] >= 0.6


def test_openai_replies_recall_counts_and_delete_paths():
    body = {
        "output": [
            {"type": "reasoning", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "The word "}],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "is W1."}]},
        ]
    }
    target = OpenAITarget("openai/gpt-4o-mini")
    assert target.json_reply(body) == recall_text("W1")[1]
    assert target.request(OPENAI_ID, "hi", stream=False) == (
        "/openai/v1/responses",
        {"model": "openai/gpt-4o-mini", "input": "hi", "conversation": OPENAI_ID},
    )
    assert remember_text("W1") == ("Remember the word: W1", "Okay, I will remember the word W1.")
    assert (
        delete_path(OPENAI_ID).startswith("/openai/v1/")
        and delete_path(LETTA_ID) == f"/v1/conversations/{LETTA_ID}"
    )
    results = [TurnResult(True, 0.1), TurnResult(False, 0.1, "wrong_reply"), TurnResult(False, 1, "timeout")]
    counts = scenarios.recall_counts(results)
    assert counts == {"checked": 3, "remembered": 1, "forgot": 1, "failed": 1, "errors": {"timeout": 1}}
    assert scenarios.summed_counts([counts, counts])["forgot"] == 2


def test_new_scenarios_parse_with_their_defaults():
    parser = build_parser()
    fresh = parser.parse_args(["fresh"])
    _normalise(fresh, parser)
    assert (fresh.conversations, fresh.turns_each, fresh.surfaces) == ([1, 8, 32], 10, ["letta", "openai"])
    assert fresh.targets == ["parley"] and fresh.modes == ["json"]
    assert parser.parse_args(["fresh", "--surface", "openai"]).surfaces == ["openai"]
    react = parser.parse_args(["reactivation"])
    assert (react.conversations, react.idle_seconds, react.concurrency) == (32, 3.0, [1, 8])
    idle = parser.parse_args(["idle"])
    _normalise(idle, parser)
    assert (idle.conversations, idle.concurrency, idle.window, idle.settle, idle.repeats) == (
        500,
        16,
        20.0,
        5.0,
        1,
    )
    churn = parser.parse_args(["churn", "--conversations", "500", "--concurrency", "16"])
    assert churn.recall_check is True and churn.turns_each == 1
    assert parser.parse_args(["churn", "--no-recall-check"]).recall_check is False
    with pytest.raises(SystemExit):
        _normalise(parser.parse_args(["idle", "--url", "http://127.0.0.1:1"]), parser)


def _dist(p50: float) -> dict[str, float]:
    return {"p50": p50, "p90": p50, "p99": 2 * p50, "max": 3 * p50, "mean": p50, "n": 4}


def _run(**fields: Any) -> dict[str, Any]:
    cpu = {"target_s": 1.0, "target_ms_per_turn": 12.5, "loadgen_cores": 0.1, "other_s": 0.2}
    return {
        "target": "parley",
        "mode": "json",
        "turns_ok": 8,
        "turns_requested": 8,
        "errors": {},
        "turns_per_s": 40.0,
        "latency_ms": _dist(20.0),
        "cpu": cpu,
        "memory_peak_mib": {"rss": 1800.0, "pss": 1100.0, "uss": 1000.0},
        **fields,
    }


def _result(scenario: str, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    machine = {
        "hostname": "h",
        "cpus": 2,
        "memory_gib": 8,
        "platform": "p",
        "python": "3",
        "load_average": [],
    }
    setup = {"targets": ["parley"], "fake": {"latency_s": 0.0, "token_delay_s": 0.0}, "server_url": "u"}
    return {
        "scenario": scenario,
        "command": f"parley bench {scenario}",
        "commit": None,
        "machine": machine,
        "started_at": "now",
        "duration_s": 1.0,
        "setup": {**setup, "managed": True, "provider_turn_ms": {"json": 1.0}},
        "config": {"repeats": 1},
        "points": points,
        "warnings": [],
        **extra,
    }


def test_new_scenarios_tables():
    first = {"first_turn_ms": _dist(90.0), "later_turn_ms": _dist(15.0), "create_ms": _dist(8.0)}
    fresh = [
        scenarios.make_point({"conversations": 8, "surface": s}, "json", {"parley": [_run(**first)]})
        for s in ("letta", "openai")
    ]
    text = markdown(_result("fresh", fresh))
    assert "Letta surface" in text and "OpenAI surface" in text
    assert "| 8 | 40.0 | 20.0 | 40.0 | 60.0 | 90.0 / 180 | 15.0 / 30.0 | 8.0 / 16.0 | 0 | 12.5 |" in text

    outcome = scenarios.ReactivationOutcome(
        cold=[TurnResult(True, 0.05), TurnResult(False, 0.05, "wrong_reply")],
        warm=[TurnResult(True, 0.01), TurnResult(True, 0.01)],
    )
    record = _run(passivation={"waited_s": 4.0, "passivated": True})
    scenarios._reactivation_fields(record, outcome)
    assert record["added_p50_ms"] == pytest.approx(40.0) and record["recall"]["forgot"] == 1
    point = scenarios.make_point({"concurrency": 8}, "json", {"parley": [record]})
    point["targets"]["parley"]["recall"] = scenarios.summed_counts([record["recall"]])
    point["targets"]["parley"]["added_p50_ms"] = scenarios._added_p50(point["targets"]["parley"])
    summary = {"conversations": 2, "told": 2, "idle_seconds": 3.0, "added_p50_ms": {"8": 40.0}}
    text = markdown(_result("reactivation", [point], reactivation=summary))
    assert "| 8 | 50.0 / 50.0 | 50.0 | 10.0 / 10.0 | 40.0 | 1 / 0 / 2 | 4.0 | 0 | 12.5 |" in text
    assert "40.0 ms at concurrency 8" in text

    live = {"activations": 500, "host_processes": 2}
    sample = {"cores": 0.05, "cpu_s": 1.0, "tree_processes": 20, "other_s": 0.1, "live_end": live}
    empty = {**sample, "label": "empty", "live_end": {"activations": 0, "host_processes": 2}}
    loaded = {**sample, "label": "loaded", "cores": 0.25}
    tree = {"rss_mib": 1800.0, "pss_mib": 1100.0, "uss_mib": 1000.0}
    idle = {"window_s": 20, "settle_s": 5, "created": 500, "quiet_wait_s": 3.0, "added": {"cores": 0.2}}
    idle["samples"] = [{**empty, "tree_mib": tree}, {**loaded, "tree_mib": tree}]
    text = markdown(_result("idle", [], idle=idle))
    assert "| never had a conversation | 0.050 | 1.00 | 0 | 2 | 20 |" in text
    assert "| after 500 conversations | 0.250 | 1.00 | 500 | 2 | 20 |" in text


def test_streaming_table_has_the_baselines_beside_parley():
    from benchmarks.streaming import StreamResult, phase_record, streaming_md, summarize

    streams = [StreamResult(ok=True, first_text=0.02, gaps=[0.025, 0.03], deltas=3) for _ in range(4)]
    parley = phase_record(streams, {"provider actor": 0.04, "other": 0.02}, 1.0)
    direct = phase_record(streams, None, 1.0)  # the fake called directly: no server CPU
    assert parley["cpu_ms_per_turn"] == pytest.approx(15.0) and direct["cpu_ms_per_turn"] is None
    points = [
        {"streams": 4, "surface": "letta", **summarize([parley])},
        {"streams": 4, "surface": "direct", **summarize([direct])},
    ]
    letta_row, direct_row, *_windows = [
        line for line in streaming_md({"points": points, "token_delay_s": 0.025}) if line.startswith("| 4 |")
    ]
    assert "| 15 | 10 |" in letta_row  # CPU per turn, then the provider actor's share
    assert direct_row.startswith("| 4 | direct | 20 / 20 | 30 / 30 / 30 | 3.0 | - | -")


def test_streaming_gaps_are_told_apart_by_when_they_ended():
    from benchmarks.streaming import StreamResult, gaps_by_window, phase_record, streaming_md, summarize

    # Two streams: one starts at 0 and ends at 1.0, the other starts at 0.3 and ends at 1.2. So
    # the start window runs to 0.3, the end window from 1.0, steady in between.
    early = StreamResult(ok=True, first_text=0.0, gaps=[0.2, 0.06, 0.04, 0.7], deltas=5)
    early.arrivals = [0.0, 0.2, 0.26, 0.3, 1.0]
    late = StreamResult(ok=True, first_text=0.3, gaps=[0.04, 0.06, 0.8], deltas=4)
    late.arrivals = [0.3, 0.34, 0.4, 1.2]
    windows = gaps_by_window([early, late])
    assert sorted(windows["start"]) == [0.04, 0.06, 0.2]  # ended at 0.2, 0.26, 0.3
    assert sorted(windows["steady"]) == [0.04, 0.06]  # ended at 0.34, 0.4
    assert sorted(windows["end"]) == [0.7, 0.8]
    record = phase_record([early, late], None, 1.2)
    assert record["long_gaps"] == {"start": 2, "steady": 1, "end": 2}
    point = {"streams": 2, "surface": "letta", **summarize([record])}
    [row] = [
        line
        for line in streaming_md({"points": [point], "token_delay_s": 0.025})
        if line.startswith("| 2 |") and line.count("|") == 5
    ]
    assert row == "| 2 | letta | 40 / 60 | 2.0 / 1.0 / 2.0 |"
