"""Stream channels (``actors.channel``) and both ends of a streaming call (``actors.streams``),
without Ray: a producer's ``hand_off`` and a reader's ``handed`` on one event loop, over a real
loopback connection."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from ray_fakes import on_a_loop

from actors import channel as channel_module
from actors import streams as streams_module
from actors.channel import ChannelBroken, ChannelServer, Ticket, decline, read_channel
from actors.streams import Handoff, hand_off, handed, received
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


async def produce(source: Source, direct: int = 1, final: Any = None) -> Handoff[Any]:
    """What an actor method does: hand off its stream, the source closed once it is over."""
    return await hand_off(aclosing(source()), direct=direct, final=final)


async def until_closed(source: Source, seconds: float = 2.0) -> None:
    """Wait until the stream's owner has closed ``source`` (it does so in the background)."""
    async with asyncio.timeout(seconds):
        while not source.closed:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@on_a_loop
async def test_items_after_the_first_cross_the_channel_in_order():
    batches = [b"first", DeltaBatch([ModelDelta("text", 0, "hel")]), {"n": 2}, b"last"]
    source = Source(batches)
    handoff = await produce(source)  # the first item comes with the ticket; the rest waits for a reader
    assert handoff.head == (b"first",) and handoff.rest is not None and source.taken == 1
    assert [item async for item in handed(handoff)] == batches
    await until_closed(source)


@on_a_loop
async def test_a_stream_known_to_end_within_its_direct_items_needs_no_channel():
    def last(item: bytes) -> bool:
        return item.startswith(b"last")

    source = Source([b"one", b"last", b"never"])
    assert await produce(source, direct=2, final=last) == Handoff((b"one", b"last"))
    assert source.closed and source.taken == 2
    empty = Source([])
    assert await produce(empty) == Handoff(()) and empty.closed
    # Not known to have ended: a ticket comes with it, and its channel is empty.
    only = Source([b"only"])
    handoff = await produce(only)
    assert handoff.head == (b"only",) and handoff.rest is not None
    assert [item async for item in read_channel(handoff.rest)] == []
    await until_closed(only)


@on_a_loop
async def test_the_sources_error_is_raised_as_itself_with_its_data():
    error = ProviderError("rate limited", "rate_limit", status=429, retry_after=3.0)
    read: list[Any] = []
    with pytest.raises(ProviderError) as raised:
        async for item in handed(await produce(Source([1, 2], fail=error))):
            read.append(item)
    assert read == [1, 2]
    assert (raised.value.kind, raised.value.status, raised.value.retry_after) == ("rate_limit", 429, 3.0)


@on_a_loop
async def test_an_error_before_the_first_items_is_raised_at_the_call_and_closes_the_source():
    source = Source([], fail=ProviderError("busy", "conflict"))
    with pytest.raises(ProviderError, match="busy"):
        await produce(source)
    assert source.closed


@on_a_loop
async def test_a_call_cancelled_before_its_first_items_closes_the_source_and_offers_nothing():
    source = Source([1, 2], free=0)  # waits for its gate before the first item
    call = asyncio.ensure_future(produce(source))
    await asyncio.sleep(0.05)
    call.cancel()  # what ray.cancel does to the producing call
    with pytest.raises(asyncio.CancelledError):
        await call
    assert source.closed and not (await ChannelServer.here())._offers


@on_a_loop
async def test_an_unclaimed_offer_is_withdrawn_and_its_source_closed(monkeypatch):
    monkeypatch.setattr(channel_module, "CLAIM_SECONDS", 0.2)
    source = Source([1, 2, 3])
    handoff = await produce(source)
    assert handoff.head == (1,) and handoff.rest is not None
    await until_closed(source)
    assert source.taken == 1  # the first only: nobody read the rest
    with pytest.raises(ChannelBroken):  # too late: the offer is gone
        [item async for item in read_channel(handoff.rest)]


@on_a_loop
async def test_a_declined_ticket_stops_its_stream_at_once():
    source = Source(list(range(10)), free=1)
    handoff = await produce(source)
    assert handoff.rest is not None
    await decline(handoff.rest)  # not after CLAIM_SECONDS
    await until_closed(source)
    assert source.taken == 1
    await decline(Ticket("127.0.0.1", 1, b"0" * 16))  # a producer out of reach: nothing to stop


@on_a_loop
async def test_a_caller_cancelled_as_its_call_returns_declines_the_ticket():
    source = Source(list(range(10)), free=1)
    call = asyncio.ensure_future(produce(source))
    cancels: list[bool] = []
    caller = asyncio.ensure_future(received(call, lambda: cancels.append(call.cancel())))
    handoff = await call  # returned: the caller's wake-up is due, not yet run
    assert handoff.rest is not None
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancels == [False]  # too late to cancel the call itself
    await until_closed(source)  # declined at once, not after CLAIM_SECONDS
    assert source.taken == 1


@on_a_loop
async def test_a_caller_cancelled_before_its_call_returns_cancels_the_call():
    source = Source([1, 2], free=0)  # waits for its gate before the first item
    call = asyncio.ensure_future(produce(source))
    caller = asyncio.ensure_future(received(call, call.cancel))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await until_closed(source)
    assert call.cancelled() and not (await ChannelServer.here())._offers


@on_a_loop
async def test_a_reader_that_leaves_closes_the_source():
    source = Source(list(range(10)), free=3)
    handoff = await produce(source)
    assert handoff.head == (0,) and handoff.rest is not None
    async with aclosing(handed(handoff)) as items:
        assert [await anext(items), await anext(items), await anext(items)] == [0, 1, 2]
    await asyncio.sleep(0.05)
    source.gate.set()  # the next item finds the reader gone
    await until_closed(source)
    assert source.taken < 10


@on_a_loop
async def test_a_producer_that_stops_its_stream_breaks_the_channel_and_closes_the_source():
    source = Source(list(range(10)), free=3)
    serving_before = set(streams_module._serving)
    handoff = await produce(source)
    assert handoff.rest is not None
    read: list[Any] = []

    async def read_all() -> None:
        async for item in read_channel(handoff.rest):
            read.append(item)

    reading = asyncio.ensure_future(read_all())
    await asyncio.sleep(0.05)
    (serving,) = streams_module._serving - serving_before
    serving.cancel()  # its process shutting down
    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(reading, 2)
    assert read == [1, 2]
    await until_closed(source)


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


NOWHERE = Handoff((b"first",), Ticket("127.0.0.1", 1, b"0" * 16))  # nothing listens there


@on_a_loop
async def test_a_broken_channel_is_reported_as_its_producers_death_when_it_died():
    class ActorDied(Exception):
        pass

    async def died() -> None:
        raise ActorDied()

    async def alive() -> bool:
        return True

    with pytest.raises(ActorDied):
        await _all(handed(NOWHERE, died))
    with pytest.raises(ChannelBroken):
        await _all(handed(NOWHERE, alive))
    with pytest.raises(ChannelBroken):
        await _all(handed(NOWHERE))


@on_a_loop
async def test_an_unreachable_channel_is_reported_without_waiting_long_for_the_producer(monkeypatch):
    monkeypatch.setattr(streams_module, "BROKEN_CHANNEL_GRACE_SECONDS", 0.2)

    async def no_answer() -> None:
        await asyncio.sleep(60)  # a producer that cannot be reached and has not died either

    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(_all(handed(NOWHERE, no_answer)), 2)


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
        await _all(handed(await produce(Source([1], fail=Unrebuildable("no", code=3)))))


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
    left_rest, kept_rest = (await produce(leaving)).rest, (await produce(staying)).rest
    assert left_rest is not None and kept_rest is not None
    async with aclosing(read_channel(kept_rest)) as kept:
        assert [await anext(kept), await anext(kept)] == [1, 2]
        async with aclosing(read_channel(left_rest)) as left:
            assert [await anext(left), await anext(left)] == [1, 2]
        # Its sending stops at once, though its source is still waiting for its next item.
        await until_closed(leaving)
        assert leaving.taken == 3
        # A stream left while its frames are on the way: they are dropped, not misdelivered.
        flooding = (await ChannelServer.here()).offer(Source(list(range(2_000)))())
        async with aclosing(read_channel(flooding.ticket)) as flood:
            assert await anext(flood) == 0
        await flooding.served()
        staying.gate.set()
        assert [item async for item in kept] == list(range(3, 10))
    await until_closed(staying)
    assert len(made) == 1


@pytest.mark.parametrize("end", ["reader", "producer"])
@on_a_loop
async def test_a_connection_cut_mid_stream_breaks_every_stream_on_it_and_the_next_opens_anew(
    monkeypatch, end
):
    made = _connections_made(monkeypatch)
    server = await ChannelServer.here()
    sources = [Source(list(range(10)), free=2) for _ in range(2)]
    tickets = [(await produce(source)).rest for source in sources]
    readers = [read_channel(ticket) for ticket in tickets if ticket is not None]
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
    for source in sources:
        await until_closed(source)
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
async def test_a_reader_that_leaves_before_its_first_frame_ends_the_stream_at_once():
    source = Source(list(range(10)), free=1)
    ticket = (await produce(source)).rest
    assert ticket is not None
    opened = (await ChannelServer.here()).offer(Source([1])())  # the connection, open already
    assert await _all(read_channel(opened.ticket)) == [1]
    reading = asyncio.ensure_future(_all(read_channel(ticket)))
    await asyncio.sleep(0)  # its claim is queued, and its cancel follows it before the producer reads
    reading.cancel()
    await until_closed(source)  # not after CLAIM_SECONDS


@on_a_loop
async def test_a_connection_that_claims_nothing_is_closed_and_a_readers_stays(monkeypatch):
    monkeypatch.setattr(channel_module, "CLAIM_SECONDS", 0.2)
    server = await ChannelServer.here()
    first = server.offer(Source([1, 2])())
    over_tcp = dataclasses.replace(first.ticket, local=None)
    assert [item async for item in read_channel(over_tcp)] == [1, 2]
    await first.served()
    stray_reader, stray_writer = await asyncio.open_connection(over_tcp.host, over_tcp.port)
    try:
        async with asyncio.timeout(2):
            assert await stray_reader.read() == b""  # closed by the producer's end
    finally:
        stray_writer.close()
    # The reader's connection, older than CLAIM_SECONDS, is still there and carries the next stream.
    (link,) = channel_module._Link._links[asyncio.get_running_loop()].values()
    reader_connection = link.result()
    second = server.offer(Source([3])())
    assert [item async for item in read_channel(dataclasses.replace(second.ticket, local=None))] == [3]
    await second.served()
    (again,) = channel_module._Link._links[asyncio.get_running_loop()].values()
    assert again.result() is reader_connection
    assert len(server.connections) == 1


@on_a_loop
async def test_a_tcp_connection_is_probed_when_idle_at_both_ends():
    """A peer lost without a reset (a machine gone) ends the connection within ~25 s."""
    server = await ChannelServer.here()
    offer = server.offer(Source([1, 2])())
    over_tcp = dataclasses.replace(offer.ticket, local=None)
    assert [item async for item in read_channel(over_tcp)] == [1, 2]
    await offer.served()
    (link,) = channel_module._Link._links[asyncio.get_running_loop()].values()
    (served,) = server.connections
    for writer in (link.result()._writer, served):
        sock = writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == channel_module.KEEPALIVE_IDLE_SECONDS
        )
