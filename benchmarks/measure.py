"""Measuring a server's whole process tree: CPU seconds and memory, Ray workers included."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import psutil


class TreeCpu:
    """CPU used by a process tree between two points, counting processes that started or exited
    in between (an exited process's last reading is kept)."""

    def __init__(self, tree) -> None:
        self._tree = tree
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def _read(self) -> dict[int, float]:
        now = {}
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            now[proc.pid] = times.user + times.system
        return now

    def start(self) -> None:
        self._start = self._read()
        self._last = dict(self._start)

    def sample(self) -> None:
        self._last.update(self._read())

    def seconds(self) -> float:
        self.sample()
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


@dataclass
class Memory:
    rss_mib: float
    pss_mib: float
    uss_mib: float


def memory_of(processes: list[psutil.Process]) -> Memory:
    rss = pss = uss = 0.0
    for proc in processes:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0.0)
        uss += info.uss
    mib = 1024 * 1024
    return Memory(rss / mib, pss / mib, uss / mib)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
