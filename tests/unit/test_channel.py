"""Stream channels (``actors.channel``) and both ends of a streaming call (``actors.streams``),
without Ray: a producer's ``stream_out`` and a reader's ``followed`` on one event loop, over a
real loopback connection."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from ray_fakes import on_a_loop

from actors import channel as channel_module
from actors import streams as streams_module
from actors.channel import ChannelBroken, ChannelServer, ChannelUnclaimed, Ticket, read_channel
from actors.streams import followed, stream_out
from runtime.providers.base import DeltaBatch, ModelDelta, ProviderError

pytestmark = pytest.mark.timeout(20)


class Source:
    """Yields ``items`` (raising ``fail`` after them, if set), waiting for ``gate`` before each
    item after the first ``free``; records whether it was closed."""

    def __init__(self, items: list[Any], fail: Exception | None = None, free: int = 1_000) -> None:
        self.items = items
        self.fail = fail
        self.free = free
        self.gate = asyncio.Event()
        self.closed = False
        self.taken = 0

    async def __call__(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                if self.taken >= self.free:
                    await self.gate.wait()
                self.taken += 1
                yield item
            if self.fail is not None:
                raise self.fail
        finally:
            self.closed = True


async def produce(
    source: Source, direct: int = 1, channel: bool = True, final: Any = None
) -> AsyncIterator[Any]:
    """What an actor method does: its source closed when the call ends, however it ends."""
    async with aclosing(source()) as items:
        async for item in stream_out(items, direct=direct, channel=channel, final=final):
            yield item


@on_a_loop
async def test_items_after_the_first_cross_the_channel_in_order():
    batches = [b"first", DeltaBatch([ModelDelta("text", 0, "hel")]), {"n": 2}, b"last"]
    call = produce(Source(batches))
    ticket = await anext(call)  # the first item rides with the ticket; the rest waits for a reader
    assert isinstance(ticket, Ticket) and ticket.head == (b"first",)
    await call.aclose()
    source = Source(batches)
    assert [item async for item in followed(produce(source))] == batches
    assert source.closed


@on_a_loop
async def test_without_a_channel_every_item_is_yielded():
    source = Source([1, 2, 3])
    assert [item async for item in produce(source, channel=False)] == [1, 2, 3]


@on_a_loop
async def test_a_stream_known_to_end_within_its_direct_items_needs_no_channel():
    def last(item: bytes) -> bool:
        return item.startswith(b"last")

    source = Source([b"one", b"last", b"never"])
    assert [item async for item in produce(source, direct=2, final=last)] == [b"one", b"last"]
    assert source.closed and source.taken == 2
    # Not known to have ended: the ticket goes out with it at once, and its channel is empty.
    call = produce(Source([b"only"]))
    ticket = await anext(call)
    assert ticket.head == (b"only",)
    assert [item async for item in read_channel(ticket)] == []
    assert await anext(call, None) is None


@on_a_loop
async def test_the_sources_error_is_raised_as_itself_with_its_data():
    error = ProviderError("rate limited", "rate_limit", status=429, retry_after=3.0)
    read: list[Any] = []
    with pytest.raises(ProviderError) as raised:
        async for item in followed(produce(Source([1, 2], fail=error))):
            read.append(item)
    assert read == [1, 2]
    assert (raised.value.kind, raised.value.status, raised.value.retry_after) == ("rate_limit", 429, 3.0)


@on_a_loop
async def test_an_unclaimed_offer_is_withdrawn_and_its_source_closed(monkeypatch):
    monkeypatch.setattr(channel_module, "CLAIM_SECONDS", 0.2)
    source = Source([1, 2, 3])
    call = produce(source)
    ticket = await anext(call)
    assert ticket.head == (1,)
    with pytest.raises(ChannelUnclaimed):
        await anext(call)
    await call.aclose()
    assert source.taken == 1 and source.closed  # the first only: nobody read the rest
    with pytest.raises(ChannelBroken):  # too late: the offer is gone
        [item async for item in read_channel(ticket)]


@on_a_loop
async def test_a_reader_that_leaves_closes_the_source():
    source = Source(list(range(10)), free=3)
    call = produce(source)
    ticket = await anext(call)
    assert ticket.head == (0,)
    producing = asyncio.ensure_future(anext(call, None))  # the call waits while the channel is read
    async with aclosing(read_channel(ticket)) as items:
        assert [await anext(items), await anext(items)] == [1, 2]
    await asyncio.sleep(0.05)
    source.gate.set()  # the next item finds the reader gone
    assert await asyncio.wait_for(producing, 2) is None
    await call.aclose()
    assert source.closed and source.taken < 10


@on_a_loop
async def test_a_cancelled_call_breaks_the_channel_and_closes_the_source():
    source = Source(list(range(10)), free=3)
    call = produce(source)
    ticket = await anext(call)
    producing = asyncio.ensure_future(anext(call, None))
    read: list[Any] = []

    async def read_all() -> None:
        async for item in read_channel(ticket):
            read.append(item)

    reading = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.05)
    producing.cancel()  # what ray.cancel does to the producing call
    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(reading, 2)
    assert read == [1, 2]
    await call.aclose()
    assert source.closed


@on_a_loop
async def test_a_wrong_token_is_refused_and_serves_nothing():
    server = await ChannelServer.here()
    source = Source([1, 2])
    offer = server.offer(source())
    forged = Ticket(offer.ticket.host, offer.ticket.port, b"x" * len(offer.ticket.token))
    with pytest.raises(ChannelBroken):
        [item async for item in read_channel(forged)]
    assert [item async for item in read_channel(offer.ticket)] == [1, 2]
    await offer.served()


@on_a_loop
async def test_a_reader_on_the_producers_node_reads_over_its_unix_socket(monkeypatch):
    server = await ChannelServer.here()
    assert server.local is not None and server.local.startswith("\0")

    async def no_tcp(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a reader on the same node connected over TCP")

    monkeypatch.setattr(channel_module.asyncio, "open_connection", no_tcp)
    offer = server.offer(Source([1, 2])())
    assert [item async for item in read_channel(offer.ticket)] == [1, 2]
    await offer.served()


@on_a_loop
async def test_a_unix_socket_that_refuses_falls_back_to_tcp():
    server = await ChannelServer.here()
    offer = server.offer(Source([1, 2])())
    elsewhere = dataclasses.replace(offer.ticket, local="\0parley-channel-nobody-listens")
    assert [item async for item in read_channel(elsewhere)] == [1, 2]
    await offer.served()


@on_a_loop
async def test_a_broken_channel_surfaces_the_error_that_follows_its_ticket():
    class ActorDied(Exception):
        pass

    async def call() -> AsyncIterator[Any]:
        yield b"first"
        yield Ticket("127.0.0.1", 1, b"0" * 16)  # nothing listens there
        raise ActorDied()

    with pytest.raises(ActorDied):
        [item async for item in followed(call())]

    async def ended() -> AsyncIterator[Any]:
        yield Ticket("127.0.0.1", 1, b"0" * 16)

    with pytest.raises(ChannelBroken):
        [item async for item in followed(ended())]


@on_a_loop
async def test_an_unreachable_channel_is_reported_without_waiting_for_the_call(monkeypatch):
    monkeypatch.setattr(streams_module, "BROKEN_CHANNEL_GRACE_SECONDS", 0.2)

    async def waits_for_its_reader() -> AsyncIterator[Any]:
        yield Ticket("127.0.0.1", 1, b"0" * 16)
        await asyncio.sleep(60)  # the producer waiting for a reader that cannot reach it

    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(_all(followed(waits_for_its_reader())), 2)


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


@on_a_loop
async def test_concurrent_first_uses_share_one_server():
    servers = await asyncio.gather(*(ChannelServer.here() for _ in range(5)))
    assert len({id(s) for s in servers}) == 1


class Unrebuildable(Exception):
    def __init__(self, message: str, *, code: int) -> None:  # pickles, but will not unpickle
        super().__init__(message)
        self.code = code


@on_a_loop
async def test_an_error_that_will_not_rebuild_still_ends_the_stream_with_an_error():
    with pytest.raises(RuntimeError, match="could not be read"):
        await _all(followed(produce(Source([1], fail=Unrebuildable("no", code=3)))))
