"""Coalescing token deltas before they cross a process boundary.

Every item that crosses Ray and then the HTTP proxy costs about a millisecond of CPU whatever its
size, so one token per item saturates two cores at a few thousand tokens/s. The first delta goes
out at once (time to first token), then deltas are batched every ``interval`` seconds or
``max_deltas`` deltas, whichever comes first; neighbouring fragments of one part are merged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .providers.base import DeltaBatch, ModelDelta, ModelResponse

_FLUSH = object()
_END = object()


async def coalesce(
    source: AsyncIterator[ModelDelta | ModelResponse], interval: float = 0.05, max_deltas: int = 16
) -> AsyncIterator[DeltaBatch]:
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
    count = 0
    sent_first = False
    timer: asyncio.TimerHandle | None = None
    try:
        while True:
            item = await queue.get()
            if isinstance(item, ModelDelta):
                pending.append(item)
                count += 1
                if not sent_first or count >= max_deltas:
                    sent_first = True
                    if timer is not None:
                        timer.cancel()
                        timer = None
                    yield DeltaBatch(merge(pending))
                    pending, count = [], 0
                elif timer is None:
                    timer = loop.call_later(interval, queue.put_nowait, _FLUSH)
            elif item is _FLUSH:
                timer = None
                if pending:
                    yield DeltaBatch(merge(pending))
                    pending, count = [], 0
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
