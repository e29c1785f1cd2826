"""Where a token stream's long gaps first appear: the gaps between a stream's consecutive items at
each point of their way through the server, from a hop trace (``runtime.hop_trace``).

Run a benchmark with the trace on, then read it::

    parley bench streaming --streams 100 --no-baselines --env PARLEY_HOP_TRACE_DIR=/tmp/trace
    python -m benchmarks.hop_gaps /tmp/trace

For each process and point (in the order an item passes them: a provider's token read, the
provider actor's channel write, the conversation actor's channel read and write, the replica's
channel read) it prints the number of gaps, their p50 / p90 / p99 and the share over ``--long``
ms. A stream's items further apart than ``--split`` seconds are taken for two streams (a stream's
key may come again for a later one). The client's own gaps are the benchmark's.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections import defaultdict
from dataclasses import dataclass

from runtime.hop_trace import POINTS

from .measure import percentile
from .streaming import HOPS


@dataclass
class PointGaps:
    process: str  # title and pid
    point: str
    gaps_ms: list[float]

    def line(self, long_ms: float) -> str:
        g = self.gaps_ms
        over = sum(x > long_ms for x in g)
        return (
            f"| {self.process} | {self.point} | {len(g)} | {percentile(g, 50):.1f} / {percentile(g, 90):.1f} / "
            f"{percentile(g, 99):.1f} | {100 * over / len(g):.2f} % |"
        )


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
    gaps: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (process, point, _), at in times.items():
        at.sort()
        gaps[(process, point)] += [(b - a) * 1e3 for a, b in itertools.pairwise(at) if b - a <= split_s]
    found = [PointGaps(process, point, g) for (process, point), g in gaps.items() if g]
    return sorted(found, key=lambda p: (_place(p.process), _order(p.point), p.process))


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
    print(f"| process | point | gaps | p50 / p90 / p99 ms | over {a.long:g} ms |")
    print("|---|---|---|---|---|")
    for found in point_gaps(read_trace(a.directory), a.split):
        print(found.line(a.long))


if __name__ == "__main__":
    main()
