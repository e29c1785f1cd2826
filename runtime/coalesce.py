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

from . import hop_trace
from .providers.base import DeltaBatch, ModelDelta, ModelResponse

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
    interval: float = 0.03,
    max_deltas: int = 16,
    gauge: StreamGauge | None = None,
) -> AsyncIterator[DeltaBatch]:
    """Batches of ``source``'s deltas, at most one per ``interval`` (widened by ``gauge`` under
    load), the last one carrying the ``ModelResponse``; see the module docstring. An error of the
    source is raised after the deltas before it have been yielded.

    A ``pump`` task reads ``source`` (also while the consumer is busy downstream) and decides when
    the pending deltas are due; this generator sleeps until then, so it runs once per batch, not
    once per token. Invariants while the source runs: ``due`` is set only with deltas pending, and
    ``timer`` is armed only with deltas pending and no batch due yet. ``end`` (the response,
    ``_END`` or the source's error) is set once, after the source's last delta is pending."""
    loop = asyncio.get_running_loop()
    pending: list[ModelDelta] = []
    last_sent = -math.inf
    due = False
    end: object = None
    timer: asyncio.TimerHandle | None = None
    waiter: asyncio.Future[None] | None = None

    def wake() -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fire() -> None:  # the timer: the pending deltas have waited out the gap
        nonlocal timer, due
        timer = None
        due = True
        wake()

    def schedule() -> None:
        """Deltas are pending and no batch is due: make it due now, or arm the timer."""
        nonlocal timer, due
        # The first delta goes alone at once (time to first token); a full batch is not held back.
        if last_sent != -math.inf and len(pending) < max_deltas:
            at = last_sent + (gauge.gap(interval) if gauge is not None else interval)
            if loop.time() < at:
                if timer is None:
                    timer = loop.call_at(at, fire)
                return
            # else the gap has passed: a slow provider's token goes on as it comes.
        if timer is not None:
            timer.cancel()
            timer = None
        due = True
        wake()

    async def pump() -> None:
        nonlocal end
        try:
            async for item in source:
                if end is not None:
                    continue  # nothing after the response counts (the source ends there anyway)
                if isinstance(item, ModelDelta):
                    if hop_trace.TRACING:
                        hop_trace.mark("token", source)
                    pending.append(item)
                    # With the timer armed, only max_deltas can make the batch due sooner.
                    if not due and (timer is None or len(pending) >= max_deltas):
                        schedule()
                else:
                    end = item
                    wake()
            if end is None:
                end = _END
        except BaseException as exc:  # handed to the consumer, which re-raises it
            if end is None:
                end = exc
        wake()

    pumping = asyncio.create_task(pump())
    with gauge.tracking() if gauge is not None else contextlib.nullcontext():
        try:
            while True:
                while not due and end is None:
                    waiter = loop.create_future()
                    try:
                        await waiter
                    finally:
                        waiter = None
                if not pending:  # so the source has ended: a due batch has deltas
                    if isinstance(end, ModelResponse):
                        yield DeltaBatch([], response=end)
                    elif isinstance(end, BaseException):
                        raise end
                    return
                # Everything pending by now goes (a busy consumer gets bigger batches), up to
                # max_deltas; the first delta alone.
                size = 1 if last_sent == -math.inf else max_deltas
                if len(pending) <= size:
                    batch, pending = pending, []
                else:
                    batch, pending = pending[:size], pending[size:]
                last_sent = loop.time()
                due = False
                if end is None:
                    if pending:
                        schedule()
                elif not pending and isinstance(end, ModelResponse):
                    yield DeltaBatch(merge(batch), response=end)
                    return
                yield DeltaBatch(merge(batch))
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
