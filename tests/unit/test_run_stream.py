"""``RunStream``, the replica's end of a conversation's ``send`` or ``follow``: its first batch,
the rest read over a stream channel, and what its ``close`` tells the producer, read or not.
Without Ray: the producer's ``hand_off`` on the same event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from ray_fakes import on_a_loop

from actors.conversation_client import RunStream
from actors.streams import hand_off
from runtime.events import Ping, decode_batch, encode_batch

pytestmark = pytest.mark.timeout(20)

RUN = "run-00000000-0000-4000-8000-000000000001"


class Batches:
    """A run's encoded batches, one ping each: ``free`` of them at once, the rest when ``gate`` is
    set; records whether it was closed."""

    def __init__(self, count: int, free: int) -> None:
        self.count = count
        self.free = free
        self.gate = asyncio.Event()
        self.closed = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for seq in range(1, self.count + 1):
                if seq > self.free:
                    await self.gate.wait()
                yield encode_batch([Ping(seq=seq, run_id=RUN)])
        finally:
            self.closed = True

    async def until_closed(self) -> None:
        async with asyncio.timeout(2):  # not after the channel's CLAIM_SECONDS
            while not self.closed:  # noqa: ASYNC110
                await asyncio.sleep(0.005)


async def started(batches: Batches) -> RunStream:
    """What ``ConversationClient.send`` returns for ``batches``."""

    handoff = await hand_off(aclosing(batches()))
    return RunStream(decode_batch(handoff.head[0]), handoff=handoff)


def seqs(batches: list[list[Ping]]) -> list[int]:
    return [event.seq for batch in batches for event in batch]


@on_a_loop
async def test_the_first_batch_then_the_rest_over_the_channel():
    batches = Batches(5, free=5)
    stream = await started(batches)
    assert seqs([stream.first]) == [1]
    assert seqs([batch async for batch in stream]) == [1, 2, 3, 4, 5]
    await batches.until_closed()
    stream.close()  # read to its end: nothing left to stop


@on_a_loop
async def test_closing_a_stream_never_read_stops_its_producer():
    batches = Batches(5, free=1)
    (await started(batches)).close()  # a background run's first reader
    await batches.until_closed()


@on_a_loop
async def test_closing_a_stream_read_part_way_stops_its_producer():
    batches = Batches(5, free=2)
    stream = await started(batches)
    read = []
    async for batch in stream:  # a client that leaves mid-reply
        read.append(batch)
        if len(read) == 2:
            break
    stream.close()
    await batches.until_closed()
    assert seqs(read) == [1, 2]


@on_a_loop
async def test_closing_after_the_first_batch_only_stops_its_producer():
    batches = Batches(5, free=1)
    stream = await started(batches)
    reading = aiter(stream)
    assert seqs([await anext(reading)]) == [1]  # the rest not yet taken
    stream.close()
    await batches.until_closed()
