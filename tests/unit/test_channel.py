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
    item after the first ``free`` (and ``pause`` seconds before each, if set); records whether it
    was closed."""

    def __init__(
        self, items: list[Any], fail: Exception | None = None, free: int = 1_000, pause: float | None = None
    ) -> None:
        self.items = items
        self.fail = fail
        self.free = free
        self.pause = pause
        self.gate = asyncio.Event()
        self.closed = False
        self.taken = 0

    async def __call__(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                if self.taken >= self.free:
                    await self.gate.wait()
                if self.pause is not None:
                    await asyncio.sleep(self.pause)
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


async def waiting_call(source: Source) -> tuple[AsyncIterator[Any], Ticket, asyncio.Future[Any]]:
    """A producing call past its ticket, and the call's wait while its channel is read (it ends
    with the channel, as the actor method's Ray call does)."""
    call = produce(source)
    ticket = await anext(call)
    return call, ticket, asyncio.ensure_future(anext(call, None))


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
    call, ticket, producing = await waiting_call(source)
    assert ticket.head == (0,)
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
    call, ticket, producing = await waiting_call(source)
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


# --- many streams on one connection ------------------------------------------------------------------


def _connections_made(monkeypatch: pytest.MonkeyPatch) -> list[Ticket]:
    """The tickets for which the reader opened a connection, from now on."""
    made: list[Ticket] = []
    connected = channel_module._connected

    async def counted(ticket: Ticket) -> Any:
        made.append(ticket)
        return await connected(ticket)

    monkeypatch.setattr(channel_module, "_connected", counted)
    return made


@on_a_loop
async def test_concurrent_streams_from_one_producer_share_one_connection(monkeypatch):
    made = _connections_made(monkeypatch)
    server = await ChannelServer.here()
    sources = [Source([(n, i) for i in range(30)], pause=0.0005) for n in range(3)]
    offers = [server.offer(source()) for source in sources]
    read = await asyncio.gather(*(_all(read_channel(offer.ticket)) for offer in offers))
    assert read == [source.items for source in sources]  # each its own items, in order
    assert len(made) == 1 and len(server.connections) == 1
    for offer in offers:
        await offer.served()
    offer = server.offer(Source([1])())  # a later stream: the same connection
    assert await _all(read_channel(offer.ticket)) == [1]
    await offer.served()
    assert len(made) == 1


@on_a_loop
async def test_a_reader_leaving_one_stream_does_not_disturb_another_on_its_connection(monkeypatch):
    made = _connections_made(monkeypatch)
    leaving, staying = Source(list(range(10)), free=3), Source(list(range(10)), free=3)
    leaving_call, staying_call = produce(leaving), produce(staying)
    leaving_ticket, staying_ticket = await anext(leaving_call), await anext(staying_call)
    leaving_producing = asyncio.ensure_future(anext(leaving_call, None))
    staying_producing = asyncio.ensure_future(anext(staying_call, None))
    async with aclosing(read_channel(staying_ticket)) as kept:
        assert [await anext(kept), await anext(kept)] == [1, 2]
        async with aclosing(read_channel(leaving_ticket)) as left:
            assert [await anext(left), await anext(left)] == [1, 2]
        # Its sending stops at once, though its source is still waiting for its next item.
        assert await asyncio.wait_for(leaving_producing, 2) is None
        await leaving_call.aclose()
        assert leaving.closed and leaving.taken == 3
        # A stream left while its frames are on the way: they are dropped, not misdelivered.
        flooding = (await ChannelServer.here()).offer(Source(list(range(2_000)))())
        async with aclosing(read_channel(flooding.ticket)) as flood:
            assert await anext(flood) == 0
        await flooding.served()
        staying.gate.set()
        assert [item async for item in kept] == list(range(3, 10))
    assert await asyncio.wait_for(staying_producing, 2) is None
    await staying_call.aclose()
    assert staying.closed
    assert len(made) == 1


@pytest.mark.parametrize("end", ["reader", "producer"])
@on_a_loop
async def test_a_connection_cut_mid_stream_breaks_every_stream_on_it_and_the_next_opens_anew(
    monkeypatch, end
):
    made = _connections_made(monkeypatch)
    server = await ChannelServer.here()
    sources = [Source(list(range(10)), free=2) for _ in range(2)]
    calls = [produce(source) for source in sources]
    tickets = [await anext(call) for call in calls]
    producing = [asyncio.ensure_future(anext(call, None)) for call in calls]
    readers = [read_channel(ticket) for ticket in tickets]
    assert [await anext(reader) for reader in readers] == [1, 1]
    if end == "reader":
        (opening,) = channel_module._Link._links[asyncio.get_running_loop()].values()
        opening.result().abort()
    else:
        (writer,) = server.connections
        writer.transport.abort()
    for reader in readers:
        with pytest.raises(ChannelBroken):
            await anext(reader)
    # The producer's end stops every stream it carried, as a reader leaving would.
    assert await asyncio.wait_for(asyncio.gather(*producing), 2) == [None, None]
    for call in calls:
        await call.aclose()
    assert all(source.closed for source in sources)
    offer = server.offer(Source([7, 8])())
    assert await _all(read_channel(offer.ticket)) == [7, 8]
    await offer.served()
    assert len(made) == 2


@on_a_loop
async def test_a_wrong_token_fails_only_its_own_stream(monkeypatch):
    made = _connections_made(monkeypatch)
    server = await ChannelServer.here()
    source = Source(list(range(6)), free=2)
    offer = server.offer(source())
    async with aclosing(read_channel(offer.ticket)) as items:
        assert [await anext(items), await anext(items)] == [0, 1]
        forged = dataclasses.replace(offer.ticket, token=b"x" * len(offer.ticket.token))
        with pytest.raises(ChannelBroken, match="no such stream"):
            await _all(read_channel(forged))
        with pytest.raises(ChannelBroken, match="no such stream"):  # one use: claimed already
            await _all(read_channel(offer.ticket))
        source.gate.set()
        assert [item async for item in items] == [2, 3, 4, 5]
    await offer.served()
    assert len(made) == 1


@on_a_loop
async def test_items_of_any_size_cross_whole_beside_another_stream():
    server = await ChannelServer.here()
    big = [b"a" * 10, b"b" * 100_000, b"c" * 3_000_000, b"d", bytes(range(256)) * 300]
    offers = [server.offer(Source(big)()), server.offer(Source(list(range(500)))())]
    read = await asyncio.gather(*(_all(read_channel(offer.ticket)) for offer in offers))
    assert read == [big, list(range(500))]
    for offer in offers:
        await offer.served()


@on_a_loop
async def test_a_reader_that_leaves_before_its_first_frame_ends_the_call_at_once():
    source = Source(list(range(10)), free=1)
    call, ticket, producing = await waiting_call(source)
    opened = (await ChannelServer.here()).offer(Source([1])())  # the connection, open already
    assert await _all(read_channel(opened.ticket)) == [1]
    reading = asyncio.ensure_future(_all(read_channel(ticket)))
    await asyncio.sleep(0)  # its claim is queued, and its cancel follows it before the producer reads
    reading.cancel()
    assert await asyncio.wait_for(producing, 2) is None  # not ChannelUnclaimed after CLAIM_SECONDS
    await call.aclose()
    assert source.closed
