"""``RunLog``: the ordered events of one run, read by any number of followers.

The request that started a run is only one reader of its log; a resumed stream is another. Seq
numbers start at 1 and have no gaps, so ``after=N`` means "everything I have not seen yet".
This is the in-memory log kept by the conversation's live actor; a background run's log is also
appended to the store as it grows (``Store.append_run_events``), and ``load_run_log`` reads it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .events import INTERNAL_ERROR, Delta, Done, Ping, RunError, RunEvent, Stopped, decode_batch
from .run import Run, StopReason
from .store import Store

INTERRUPTED = "interrupted: the server stopped while this run was in progress"
SETTLE_SECONDS = 0.02  # a held first batch's wait for the run's end after a whole message


class RunLog:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._events: list[RunEvent] = []
        # Followers waiting for the log to grow; each append wakes and forgets them all.
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def from_chunks(cls, run_id: str, chunks: list[bytes]) -> RunLog:
        """A log read back from the store's batches (its events keep their seq numbers)."""
        log = cls(run_id)
        for chunk in chunks:
            log._events.extend(decode_batch(chunk))
        return log

    def close(self, stopped: Stopped) -> list[RunEvent]:
        """End a log its writer never finished (its actor died): the events appended, if any."""
        if self.finished:
            return []
        return [self.append(stopped), self.append(Done(run_id=self.run_id))]

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
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return event

    def _grown(self) -> asyncio.Future[None]:
        """A future the next append completes."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

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
        quiet = _Quiet(keepalive) if keepalive is not None else None
        try:
            while True:
                if position < len(self._events):
                    batch = self._events[position:]
                    position = len(self._events)
                    yield batch
                    if isinstance(batch[-1], Done):
                        return
                    if quiet is not None:
                        quiet.since = quiet.loop.time()
                    continue
                if self.finished:
                    return
                if quiet is None:
                    await self._grown()
                elif not await quiet.wait(self._grown()):
                    yield [Ping(run_id=self.run_id, seq=position)]
        finally:
            if quiet is not None:
                quiet.stop()

    async def _wait_for_more_than(self, count: int, seconds: float) -> None:
        """Hold the first batch (at most ``seconds``) until it is worth sending: the run ended (a
        quick turn crosses in one piece), a token came (it goes at once), or, once more than
        ``count`` events are in without one, ``SETTLE_SECONDS`` more for the run's end: a turn's
        closing store writes come between its last message and its end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        settling = False
        while not self.finished:
            fresh = self._events[count:]
            if any(isinstance(event, Delta) for event in fresh):
                return
            if fresh and not settling:
                settling = True
                deadline = min(deadline, loop.time() + SETTLE_SECONDS)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._grown(), remaining)
            except TimeoutError:
                return


class _Quiet:
    """A follower's keepalive: ``wait`` returns False once ``seconds`` passed since ``since`` with
    the log silent. One timer per follower, looked at and re-armed when it fires, rather than one
    per wait: a token stream waits once per batch.

    Invariant: ``_waiting`` is the future the follower awaits now, or None between waits."""

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()
        self._seconds = seconds
        self._waiting: asyncio.Future[None] | None = None
        self._silent = False
        self._timer = self.loop.call_at(self.since + seconds, self._check)

    async def wait(self, grown: asyncio.Future[None]) -> bool:
        """Whether the log grew (True) or stayed silent for the keepalive (False)."""
        self._waiting, self._silent = grown, False
        try:
            await grown
        finally:
            self._waiting = None
        if self._silent:
            self.since = self.loop.time()
            return False
        return True

    def _check(self) -> None:
        due = self.since + self._seconds
        if self._waiting is not None and not self._waiting.done() and self.loop.time() >= due:
            self._silent = True
            self._waiting.set_result(None)  # the log skips a waiter already woken
            due = self.loop.time() + self._seconds
        self._timer = self.loop.call_at(due, self._check)

    def stop(self) -> None:
        self._timer.cancel()


def closing_stop(run: Run) -> Stopped:
    """How a run whose log was cut short ends: as the store recorded it, else interrupted.

    It leaves ``completed_at`` unset: the row may say more than the event can (an interrupted run's
    error is recorded as plain text), so a reader that renders the run's end reads the row."""
    reason = run.stop_reason if run.status.terminal and run.stop_reason else StopReason.error
    error = None
    if reason is StopReason.error:
        recorded = run.metadata.get("error")
        error = (
            RunError.model_validate(recorded)
            if isinstance(recorded, dict)
            else RunError(error_type=INTERNAL_ERROR, message=INTERRUPTED)
        )
    return Stopped(run_id=run.id, stop_reason=reason, usage=run.usage, error=error)


async def load_run_log(store: Store, run: Run) -> RunLog | None:
    """A background run's stored log, ended by ``closing_stop`` if cut short; None if none is stored."""
    chunks = await store.get_run_events(run.id)
    if not chunks:
        return None
    log = RunLog.from_chunks(run.id, chunks)
    log.close(closing_stop(run))
    return log
