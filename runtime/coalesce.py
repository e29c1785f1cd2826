"""Coalescing token deltas before they cross a process boundary, at the provider's pace.

Every item that crosses Ray and then the HTTP proxy costs CPU whatever its size (about 1-2 ms
over the whole server tree here), so one token per item saturates two cores at a few thousand
tokens/s; batching on a fixed window, on the other hand, turns a smooth stream into bursts.

The rule here (``coalesce``): one stream sends at most one batch per ``gap`` seconds, and a
token never waits longer than that for its batch.

- The first delta goes out at once (time to first token).
- A delta that arrives ``gap`` or more after the last batch, with nothing pending, goes out at
  once: a provider slower than one token per ``gap`` is forwarded token by token, as smooth as
  it is, with no delay added.
- Otherwise it waits until ``gap`` after the last batch, and everything that arrived meanwhile
  goes with it: a fast provider's tokens are batched into one item per ``gap``, so the items
  per second of a stream, hence its CPU, are bounded whatever the provider's pace.
- Load: a batch is yielded only when the consumer asks for the next one, and everything queued
  by then goes in it, so a busy downstream gets fewer, larger batches rather than a backlog. And
  with a ``StreamGauge``, ``gap`` grows with the streams open in the process once they would
  exceed its batch budget (``batches_per_s``), trading smoothness for staying within the CPU.
- ``max_deltas`` pending deltas go out at once (a burst from the provider is not held back).

Neighbouring fragments of one part are merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator

from .providers.base import DeltaBatch, ModelDelta, ModelResponse

_FLUSH = object()
_END = object()


class StreamGauge:
    """The streams coalescing in this process, and the gap each gets so that all of them
    together stay within ``batches_per_s`` (0: no budget, the configured gap only).

    Invariant: ``open`` counts the ``tracking`` blocks entered and not yet left."""

    def __init__(self, batches_per_s: float = 0.0) -> None:
        self.batches_per_s = batches_per_s
        self.open = 0

    def gap(self, floor: float) -> float:
        if self.batches_per_s <= 0:
            return floor
        return max(floor, self.open / self.batches_per_s)

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


async def coalesce(
    source: AsyncIterator[ModelDelta | ModelResponse],
    interval: float = 0.04,
    max_deltas: int = 16,
    gauge: StreamGauge | None = None,
) -> AsyncIterator[DeltaBatch]:
    """Batches of ``source``'s deltas, at most one per ``interval`` (widened by ``gauge`` under
    load), the last one carrying the ``ModelResponse``; see the module docstring. An error of the
    source is raised after the deltas before it have been yielded."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
            queue.put_nowait(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(exc)

    pumping = asyncio.create_task(pump())
    pending: list[ModelDelta] = []
    last_sent = -math.inf
    timer: asyncio.TimerHandle | None = None
    with gauge.tracking() if gauge is not None else contextlib.nullcontext():
        try:
            while True:
                item = await queue.get()
                while True:  # everything queued meanwhile: a busy consumer gets bigger batches
                    if isinstance(item, ModelDelta):
                        pending.append(item)
                    elif item is _FLUSH:
                        timer = None
                    elif isinstance(item, ModelResponse):
                        yield DeltaBatch(merge(pending), response=item)
                        return
                    elif item is _END:
                        if pending:
                            yield DeltaBatch(merge(pending))
                        return
                    elif isinstance(item, BaseException):
                        if pending:
                            yield DeltaBatch(merge(pending))
                        raise item
                    # The first delta goes alone (time to first token); no batch exceeds max_deltas.
                    full = len(pending) >= max_deltas or (pending and last_sent == -math.inf)
                    if full or queue.empty():
                        break
                    item = queue.get_nowait()
                if not pending:
                    continue
                now = loop.time()
                due = last_sent + (gauge.gap(interval) if gauge is not None else interval)
                if now >= due or len(pending) >= max_deltas:
                    if timer is not None:
                        timer.cancel()
                        timer = None
                    batch, pending = pending, []
                    last_sent = now
                    yield DeltaBatch(merge(batch))
                elif timer is None:
                    timer = loop.call_at(due, queue.put_nowait, _FLUSH)
        finally:
            if timer is not None:
                timer.cancel()
            pumping.cancel()


def merge(deltas: list[ModelDelta]) -> list[ModelDelta]:
    merged: list[ModelDelta] = []
    for delta in deltas:
        last = merged[-1] if merged else None
        if last is not None and last.part == delta.part and last.index == delta.index:
            merged[-1] = ModelDelta(
                last.part,
                last.index,
                last.text + delta.text,
                last.tool_call_id or delta.tool_call_id,
                last.tool_name or delta.tool_name,
            )
        else:
            merged.append(delta)
    return merged
