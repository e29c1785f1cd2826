"""``RunLog.follow``: batches as the log grows, a ``Ping`` per keepalive of silence, ``Done`` ends it."""

from __future__ import annotations

import asyncio

import pytest

from runtime.events import Done, Ping, RunStarted
from runtime.run_log import RunLog

pytestmark = pytest.mark.timeout(5)


def test_a_silent_log_pings_its_follower_then_hands_on_what_comes() -> None:
    async def main() -> None:
        log = RunLog("run-1")
        log.append(RunStarted(run_id="run-1"))
        follower = log.follow(0, keepalive=0.02)
        assert [e.seq for e in await anext(follower)] == [1]
        ping = await asyncio.wait_for(anext(follower), 1.0)
        assert len(ping) == 1 and isinstance(ping[0], Ping) and ping[0].seq == 1  # the last number given
        log.append(Done(run_id="run-1"))
        assert [type(e) for e in await asyncio.wait_for(anext(follower), 1.0)] == [Done]
        assert [b async for b in follower] == []

    asyncio.run(main())


def test_a_follower_wakes_for_an_append_long_before_its_keepalive() -> None:
    async def main() -> None:
        log = RunLog("run-1")
        follower = log.follow(0, keepalive=30.0)
        waiting = asyncio.ensure_future(anext(follower))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        log.append(RunStarted(run_id="run-1"))
        batch = await asyncio.wait_for(waiting, 1.0)
        assert [e.seq for e in batch] == [1]
        await follower.aclose()

    asyncio.run(main())


def test_a_long_silence_pings_once_per_keepalive_and_no_sooner() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        log = RunLog("run-1")
        log.append(RunStarted(run_id="run-1"))
        follower = log.follow(0, keepalive=0.05)
        await anext(follower)
        began = loop.time()
        times = []
        for _ in range(3):
            batch = await asyncio.wait_for(anext(follower), 1.0)
            assert isinstance(batch[0], Ping)
            times.append(loop.time() - began)
        # Each ping a keepalive after the one before (the timer's lateness aside), none early.
        assert all(b - a >= 0.045 for a, b in zip([0.0, *times], times, strict=False))
        await follower.aclose()

    asyncio.run(main())
