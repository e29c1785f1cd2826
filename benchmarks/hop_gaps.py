"""Where a token stream's long gaps first appear: the gaps between a stream's consecutive items at
each point of their way through the server, from a hop trace (``runtime.hop_trace``).

Run a benchmark with the trace on, then read it::

    parley bench streaming --streams 100 --no-baselines --env PARLEY_HOP_TRACE_DIR=/tmp/trace
    python -m benchmarks.hop_gaps /tmp/trace

For each process and point (in the order an item passes them: a provider's token read, the
provider actor's channel write, the conversation actor's channel read and write, the replica's
channel read) it prints the number of gaps, their p50 / p90 / p99 and the share over ``--long``
ms, overall and in each window of ``streaming.gaps_by_window``: *start* (until the last stream of
a burst passed the point for the first time), *end* (from the first stream's last item) and
*steady* between them. A burst is a run of streams whose lifetimes overlap: the streams of one
benchmark phase, which all start at once. A stream's items further apart than ``--split`` seconds
are taken for two streams (a stream's key may come again for a later one). The client's own gaps
are the benchmark's.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
from collections import defaultdict
from dataclasses import dataclass

from runtime.hop_trace import POINTS

from .measure import percentile
from .streaming import HOPS, WINDOWS, StreamResult, gaps_by_window


@dataclass
class PointGaps:
    process: str  # title and pid
    point: str
    gaps_ms: list[float]
    windows_ms: dict[str, list[float]]  # the same gaps by window (``streaming.WINDOWS``)

    def line(self, long_ms: float) -> str:
        g = self.gaps_ms
        by_window = " / ".join(_share_over(self.windows_ms[w], long_ms) for w in WINDOWS)
        return (
            f"| {self.process} | {self.point} | {len(g)} | {percentile(g, 50):.1f} / {percentile(g, 90):.1f} / "
            f"{percentile(g, 99):.1f} | {_share_over(g, long_ms)} % | {by_window} % |"
        )


def _share_over(gaps_ms: list[float], long_ms: float) -> str:
    if not gaps_ms:
        return "-"
    return f"{100 * sum(x > long_ms for x in gaps_ms) / len(gaps_ms):.2f}"


def read_trace(directory: str) -> dict[tuple[str, str, str], list[float]]:
    """The times (s) of each (process, point, stream) in the trace files of ``directory``."""
    times: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".tsv"):
            continue
        pid = name.removesuffix(".tsv")
        with open(os.path.join(directory, name)) as lines:
            for line in lines:
                title, point, stream, at = line.rstrip("\n").split("\t")
                times[(f"{title} ({pid})", point, stream)].append(float(at))
    return times


def point_gaps(times: dict[tuple[str, str, str], list[float]], split_s: float) -> list[PointGaps]:
    """The gaps (ms) at each process and point, in the order an item passes them."""
    streams: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    for (process, point, _), at in times.items():
        streams[(process, point)] += _split(sorted(at), split_s)
    found = []
    for (process, point), passed in streams.items():
        results = [
            StreamResult(gaps=[b - a for a, b in itertools.pairwise(at)], arrivals=at) for at in passed
        ]
        gaps = [g * 1e3 for r in results for g in r.gaps]
        if not gaps:
            continue
        windows: dict[str, list[float]] = {w: [] for w in WINDOWS}
        for burst in _bursts(results):
            for window, found_s in gaps_by_window(burst).items():
                windows[window] += [g * 1e3 for g in found_s]
        found.append(PointGaps(process, point, gaps, windows))
    return sorted(found, key=lambda p: (_place(p.process), _order(p.point), p.process))


def _split(at: list[float], split_s: float) -> list[list[float]]:
    """One key's sorted times as streams: a pause longer than ``split_s`` starts another."""
    passed = [[at[0]]]
    for a, b in itertools.pairwise(at):
        if b - a > split_s:
            passed.append([])
        passed[-1].append(b)
    return passed


def _bursts(streams: list[StreamResult]) -> list[list[StreamResult]]:
    """Streams grouped into runs whose lifetimes (first to last arrival) overlap."""
    bursts: list[list[StreamResult]] = []
    ends = -math.inf
    for stream in sorted(streams, key=lambda r: r.arrivals[0]):
        if stream.arrivals[0] > ends:
            bursts.append([])
        bursts[-1].append(stream)
        ends = max(ends, stream.arrivals[-1])
    return bursts


def _place(process: str) -> int:
    """Where the process is on an item's way (``streaming.HOPS`` lists the hops in that order)."""
    return next((i for i, (prefix, _) in enumerate(HOPS) if process.startswith(prefix)), len(HOPS))


def _order(point: str) -> int:
    return POINTS.index(point) if point in POINTS else len(POINTS)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hop_gaps", description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the PARLEY_HOP_TRACE_DIR the server ran with")
    parser.add_argument("--long", type=float, default=50.0, help="a long gap, in ms (50: the issue's bound)")
    parser.add_argument("--split", type=float, default=0.5, help="seconds apart that end a stream (0.5)")
    a = parser.parse_args()
    over = f"over {a.long:g} ms"
    print(f"| process | point | gaps | p50 / p90 / p99 ms | {over} | {over}: start / steady / end |")
    print("|---|---|---|---|---|---|")
    for found in point_gaps(read_trace(a.directory), a.split):
        print(found.line(a.long))


if __name__ == "__main__":
    main()
