"""Stream channels: the rest of a Ray streaming call's items over one direct TCP connection.

Why. A Ray streaming-generator item costs about 0.34 ms of CPU in the process that yields it and
0.44 ms in the one that reads it, on this 2-core machine, whatever its size; a frame on a
channel costs about 0.06 ms on each side (``python -m benchmarks.channel_cost``, the pacing's
sleeps included in both). A token stream pays that per batch at two hops (provider actor to
conversation actor, conversation actor to ingress replica), and at a model's pace a smooth stream
is some 66 batches a reply: Ray's per-item cost was more than half of the whole server tree's CPU
per streamed turn (156-160 ms against 58-59 with channels, ``benchmarks/RESULTS.md``).

How. Ray still carries the call: its start, its first items (so an error like a busy conversation
is still raised at the call), its cancellation and the actor's death. Then the producing method
yields a ``Ticket`` instead of its next item and offers the rest of its items on the process's
``ChannelServer``; the reader (``actors.streams.stream_values``) connects to the address on the
ticket, presents the ticket's token and reads the items as frames until the end frame. The Ray
call stays open, item-less, until the channel has ended, so that:

- cancelling the call (``ray.cancel``: the reader left, the run was cancelled) stops the producer
  as before: the wait is cancelled, and with it the task sending the frames;
- the call ends only after the last frame was written, and an error of the source is sent as a
  frame and raised in the reader as the same exception.

Same node, no TCP. The server also listens on a Linux abstract Unix socket (no file to clean up;
scoped to the network namespace, as the node's address is), named on the ticket; a reader on the
ticket's node connects there, where a frame costs the kernel about half what loopback TCP does
(some 10 us less on each side per frame here). A reader elsewhere, or one the Unix socket refuses,
uses the TCP address.

Frames: one byte of kind, four of length, then a pickled payload (``ITEM`` a value, ``ERROR`` the
source's exception; ``END`` has none). Both ends are processes of the same Ray cluster, which
already trusts pickles from each other; a connection must still present a ticket's random token,
and each ticket is served at most once.

An offer nobody claims within ``CLAIM_SECONDS`` is withdrawn: its source is closed and the call
fails. A reader that closes its end is noticed at the next frame, and the source is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import secrets
import struct
import sys
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray

CLAIM_SECONDS = 30.0
HIGH_WATER_BYTES = 1 << 20  # a reader this far behind makes the producer wait for it
# Connections waiting to be accepted: a burst of turns starting at once opens one per stream, and a
# full queue drops the rest's SYNs, which the kernel retries only after a second.
BACKLOG = 4096

ITEM, ERROR, END = 1, 2, 3
_HEADER = struct.Struct("!BI")
_TOKEN_BYTES = 16


class ChannelBroken(ConnectionError):
    """A channel ended without its end frame: the producing process died or dropped it."""


class ChannelUnclaimed(TimeoutError):
    """Nobody connected for an offered channel within ``CLAIM_SECONDS``."""


@dataclass(frozen=True)
class Ticket:
    """Where the rest of a streaming call's items are: an address and a one-use token; ``local``
    the producer's Unix socket, for a reader on node ``host``. ``head``: the items before those
    on the channel, carried in the same Ray item as the ticket (one Ray item fewer per call)."""

    host: str
    port: int
    token: bytes
    local: str | None = None
    head: tuple[Any, ...] = ()


class Offer:
    """One stream offered on the ``ChannelServer``, until its reader has had it all or left.

    Invariant: ``source`` is iterated by at most one task, the connection's, and only after the
    token was presented; ``served`` cancels that task before returning, so whoever owns ``source``
    may close it afterwards."""

    def __init__(self, server: ChannelServer, source: AsyncIterator[Any], head: tuple[Any, ...] = ()) -> None:
        token = secrets.token_bytes(_TOKEN_BYTES)
        self.ticket = Ticket(server.host, server.port, token, server.local, head)
        self._server = server
        self._source = source
        self._sending: asyncio.Task[None] | None = None
        self._claimed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def served(self) -> None:
        """Wait until the reader has read the end frame (or left). Raises ``ChannelUnclaimed``."""
        try:
            try:
                await asyncio.wait_for(asyncio.shield(self._claimed), CLAIM_SECONDS)
            except TimeoutError:
                raise ChannelUnclaimed("no reader connected for a stream channel") from None
            await asyncio.shield(self._ended)
        finally:
            self._server.withdraw(self.ticket.token)
            sending = self._sending
            if sending is not None and not sending.done():
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending

    async def send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write the source's items to the claiming connection; runs in that connection's task."""
        self._sending = asyncio.current_task()
        self._claimed.set_result(None)
        try:
            try:
                async for item in self._source:
                    if reader.at_eof():  # the reader closed its end: it wants no more
                        return
                    payload = pickle.dumps(item, protocol=5)
                    writer.write(_HEADER.pack(ITEM, len(payload)) + payload)
                    if writer.transport.get_write_buffer_size() > HIGH_WATER_BYTES:
                        await writer.drain()
            except Exception as exc:  # the source's own error: the reader raises it
                payload = _pickled_error(exc)
                writer.write(_HEADER.pack(ERROR, len(payload)) + payload)
            else:
                writer.write(_HEADER.pack(END, 0))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            if not self._ended.done():
                self._ended.set_result(None)


def _pickled_error(exc: Exception) -> bytes:
    try:
        return pickle.dumps(exc, protocol=5)
    except Exception:  # an exception that does not pickle still ends the reader's stream
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"), protocol=5)


def _unpickled_error(payload: bytes) -> BaseException:
    try:
        error = pickle.loads(payload)
    except Exception as exc:  # it pickled, yet its class will not rebuild here (a required argument)
        return RuntimeError(f"the stream's producer failed, and its error could not be read: {exc}")
    return error if isinstance(error, BaseException) else RuntimeError(repr(error))


class ChannelServer:
    """This process's listening socket for stream channels, started on first use.

    One per event loop: Ray runs an async actor's methods on one loop, so one per process there."""

    _here: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[ChannelServer]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.local: str | None = None
        self._offers: dict[bytes, Offer] = {}
        self._server: asyncio.Server | None = None
        self._local_server: asyncio.Server | None = None

    @classmethod
    async def here(cls) -> ChannelServer:
        """This loop's server; the first call starts it (and concurrent first calls share it)."""
        loop = asyncio.get_running_loop()
        starting = cls._here.get(loop)
        if starting is None:
            server = cls(_node_address())
            starting = cls._here[loop] = loop.create_task(server._started())
        try:
            return await asyncio.shield(starting)
        except Exception:
            if cls._here.get(loop) is starting:  # not cached: the next stream tries again
                del cls._here[loop]
            raise

    async def _started(self) -> ChannelServer:
        await self.start()
        return self

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, 0, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]
        if sys.platform == "linux":
            name = f"\0parley-channel-{secrets.token_hex(8)}"
            try:
                self._local_server = await asyncio.start_unix_server(self._on_connect, name, backlog=BACKLOG)
            except OSError:  # no Unix sockets here (a sandbox): TCP serves every reader
                return
            self.local = name

    def offer(self, source: AsyncIterator[Any], head: tuple[Any, ...] = ()) -> Offer:
        offer = Offer(self, source, head)
        self._offers[offer.ticket.token] = offer
        return offer

    def withdraw(self, token: bytes) -> None:
        self._offers.pop(token, None)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                token = await asyncio.wait_for(reader.readexactly(_TOKEN_BYTES), CLAIM_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            offer = self._offers.pop(token, None)
            if offer is not None:
                await offer.send(reader, writer)
        finally:
            writer.close()


def _node_address() -> str:
    """Ray's address for this node, which other nodes reach; loopback without Ray (tests)."""
    global _address
    if _address is None or not ray.is_initialized():
        _address = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    return _address


_address: str | None = None


async def _connected(ticket: Ticket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if ticket.local is not None and ticket.host == _node_address():
        try:
            return await asyncio.open_unix_connection(ticket.local)
        except OSError:  # another network namespace on the same address: TCP reaches it
            pass
    try:
        return await asyncio.open_connection(ticket.host, ticket.port)
    except OSError as exc:
        raise ChannelBroken(f"cannot reach the stream channel at {ticket.host}:{ticket.port}: {exc}") from exc


async def read_channel(ticket: Ticket) -> AsyncIterator[Any]:
    """The items offered under ``ticket``, in order; the source's error is raised as itself.
    Raises ``ChannelBroken`` if the connection ends without the end frame."""
    reader, writer = await _connected(ticket)
    try:
        writer.write(ticket.token)
        while True:
            try:
                kind, length = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                payload = await reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                raise ChannelBroken("the stream channel closed before its end") from None
            if kind == ITEM:
                yield pickle.loads(payload)
            elif kind == END:
                return
            else:
                raise _unpickled_error(payload)
    finally:
        writer.close()
