"""`parley bench overhead`, tiny, end to end: a real fake provider, bare proxy and `parley serve`,
every target and mode, and nothing left running afterwards."""

from __future__ import annotations

import json
import threading
import time

import psutil

from benchmarks.cli import main

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
