"""``RunLog``: the ordered events of one run, read by any number of followers.

The request that started a run is only one reader of its log; a resumed stream is another. Seq
numbers start at 1 and have no gaps, so ``after=N`` means "everything I have not seen yet".
This is the in-memory log kept by the conversation's live actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .events import Done, Ping, RunEvent


class RunLog:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._events: list[RunEvent] = []
        self._grown = asyncio.Event()

    @classmethod
    def restored(cls, run_id: str, events: list[RunEvent]) -> RunLog:
        """A finished log read back from the store (its events keep their seq numbers)."""
        log = cls(run_id)
        log._events = list(events)
        return log

    def events(self) -> list[RunEvent]:
        return list(self._events)

    @property
    def last_seq(self) -> int:
        return len(self._events)

    @property
    def finished(self) -> bool:
        return bool(self._events) and isinstance(self._events[-1], Done)

    def append(self, event: RunEvent) -> RunEvent:
        event.seq = len(self._events) + 1
        self._events.append(event)
        # Wake every waiting follower at once; later waits use a fresh event.
        self._grown.set()
        self._grown = asyncio.Event()
        return event

    def read(self, after: int = 0) -> list[RunEvent]:
        return self._events[after:]

    async def follow(
        self, after: int = 0, keepalive: float | None = None, hold_first: float = 0.0
    ) -> AsyncIterator[list[RunEvent]]:
        """Batches of events after ``after`` until ``Done``; a ``Ping`` each ``keepalive`` s of silence.

        With ``hold_first``, the first batch waits up to that long for more than the run's opening
        event: a quick run then crosses to the reader as one batch instead of two.
        """
        position = max(after, 0)
        if hold_first > 0:
            await self._wait_for_more_than(position + 1, hold_first)
        while True:
            if position < len(self._events):
                batch = self._events[position:]
                position = len(self._events)
                yield batch
                if isinstance(batch[-1], Done):
                    return
                continue
            if self.finished:
                return
            grown = self._grown
            try:
                await asyncio.wait_for(grown.wait(), keepalive)
            except TimeoutError:
                yield [Ping(run_id=self.run_id, seq=position)]

    async def _wait_for_more_than(self, count: int, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(self._events) <= count and not self.finished:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._grown.wait(), remaining)
            except TimeoutError:
                return
