"""Where the gaps in a token stream arise: an optional trace of when a stream's items pass each
point of their way, read by ``python -m benchmarks.hop_gaps``.

Off unless ``PARLEY_HOP_TRACE_DIR`` names a directory when the process starts (Ray's workers
inherit it from ``parley serve``). Then each process appends lines
``<process title> TAB <point> TAB <stream> TAB <unix time>`` to ``<dir>/<pid>.tsv``:

- ``point`` is one of ``POINTS``;
- ``stream`` tells one stream's items from another's within a process: the ``id`` of an object
  that lives as long as the stream (so it may come again for a later stream);
- the time is the wall clock's, so that the points of the processes of one machine compare.

Lines are kept in memory and written at least once a second and at exit, so a process killed
may lose its last second. Off, a point costs a check of ``TRACING``.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

# Where an item is seen, in the order it passes them within a process: a provider's delta as
# coalescing reads it, an item read off a stream channel, an item written to one.
POINTS = ("token", "received", "sent")
TRACING_DIR = os.environ.get("PARLEY_HOP_TRACE_DIR") or None
TRACING = TRACING_DIR is not None
FLUSH_SECONDS = 1.0

_marks: list[tuple[str, int, float]] = []
_flushed = time.monotonic()


def mark(point: str, stream: object) -> None:
    """Note that an item of ``stream`` passed ``point`` now (callers check ``TRACING`` first)."""
    global _flushed
    _marks.append((point, id(stream), time.time()))
    if time.monotonic() - _flushed >= FLUSH_SECONDS:
        flush()


def flush() -> None:
    global _flushed
    _flushed = time.monotonic()
    if TRACING_DIR is None or not _marks:
        return
    title = _title()
    lines = "".join(f"{title}\t{point}\t{stream}\t{at:.6f}\n" for point, stream, at in _marks)
    _marks.clear()
    with open(os.path.join(TRACING_DIR, f"{os.getpid()}.tsv"), "a") as out:
        out.write(lines)


if TRACING:
    atexit.register(flush)


def _title() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            return process_title(cmdline.read().split(b"\0")[0].decode(errors="replace"))
    except OSError:
        return process_title(sys.argv[0])


def process_title(raw: str) -> str:
    """A process's title as the trace gives it: Ray names a worker ``ray::<actor class>``, with
    ``.<method>`` added while a call runs, which is left out here."""
    if raw.startswith("ray::"):
        raw = raw.split(".", 1)[0]
    return raw.replace("\t", " ") or "?"
