"""Pacing taken from recordings (``parley fake-llm --timing-from DIR``).

The fake keeps its scripted replies (benchmarks check them) but answers with the timing of real
provider calls: each request takes the next recorded call in turn (round robin, in recording
order) and waits as that call did before its first byte, then between tokens as that call's
chunks were spaced.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallTiming:
    first_byte: float  # seconds before the answer (a stream's first chunk) arrived
    gaps: tuple[float, ...]  # seconds between consecutive chunks of a stream (empty: not streamed)

    def gap(self, token: int) -> float:
        """The wait before token ``token`` (1-based past the first), the gaps repeating when the
        reply is longer than the recorded one."""
        return self.gaps[(token - 1) % len(self.gaps)] if self.gaps else 0.0


class RecordedTimings:
    """The timing of every successful recorded call, handed out in turn."""

    def __init__(self, timings: Sequence[CallTiming]) -> None:
        if not timings:
            raise ValueError("no recorded calls to take timing from")
        self.timings = tuple(timings)
        self._next: Iterator[CallTiming] = itertools.cycle(self.timings)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory: str) -> RecordedTimings:
        # Only here: the fake otherwise needs nothing of Parley's runtime.
        from runtime.providers.recording import RecordingStore

        store = RecordingStore(directory)
        timings = []
        for row in store.rows():
            recording = store.get(row.hash)
            if recording is None or not 200 <= recording.status < 300:
                continue
            offsets = [c.t for c in recording.chunks or ()]
            first = offsets[0] if offsets else recording.headers_after
            gaps = tuple(max(b - a, 0.0) for a, b in itertools.pairwise(offsets))
            timings.append(CallTiming(first, gaps))
        return cls(timings)

    def take(self) -> CallTiming:
        with self._lock:
            return next(self._next)
