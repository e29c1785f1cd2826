"""Stream channels: the rest of a Ray streaming call's items over a direct connection.

Why. A Ray streaming-generator item costs about 0.34 ms of CPU in the process that yields it and
0.44 ms in the one that reads it, on this 2-core machine, whatever its size; a frame on a
channel costs about 0.06 ms on each side (``python -m benchmarks.channel_cost``, the pacing's
sleeps included in both). A token stream pays that per batch at two hops (provider actor to
conversation actor, conversation actor to ingress replica), and at a model's pace a smooth stream
is some 66 batches a reply: Ray's per-item cost was more than half of the whole server tree's CPU
per streamed turn (156-160 ms against 58-59 with channels, ``benchmarks/RESULTS.md``).

How. Ray still carries the call: its start, its first items (so an error like a busy conversation
is still raised at the call) and its cancellation until it returns. The producing method offers
the rest of its items on the process's ``ChannelServer`` and returns a ``Ticket`` for them
(``actors.streams.hand_off``); the reader (``actors.streams.handed``) claims the ticket's stream
on its connection to the address on the ticket and reads the items as frames until the end
frame. After the call has returned, the channel alone carries the stream:

- a reader that leaves (a client gone, a run cancelled) sends ``CANCEL``: the stream's sending
  task is cancelled at once, and the source's owner closes it;
- an error of the source is sent as a frame and raised in the reader as the same exception;
- a producer that dies breaks the connection, and its readers get ``ChannelBroken`` (and ask Ray
  whether the actor died, to report that instead).

One connection per process pair. A reader keeps one persistent connection per producer (per event
loop: ``_Link``, cached by the ticket's address) and all the streams it reads from that producer
share it. A connection per stream cost its set-up and tear-down (6-11% of the busy CPU of the
conversation actor and of the replica at 50-100 streams) and a handshake round trip before a
stream's second batch could flow (tens of ms under load). The reader numbers its streams on each
connection and claims one by sending its number and the ticket's token; every frame after that
carries the stream's number, and one task per connection hands each frame to its stream's queue.

- A stream's number is not reused on its connection (a 32-bit counter), so a frame still in
  flight for a stream its reader left (``CANCEL``) is dropped, never taken for another stream's.
- A connection that fails (the producer died, a reset) ends every stream open on it with
  ``ChannelBroken`` and leaves the cache: the next stream opens a new one. Over TCP both ends
  probe it when idle (``keep_alive``), so a peer lost without a reset fails it too. On the producer's side,
  a connection's end stops every stream it carried, as a reader leaving does.
- Frames queued in one event-loop iteration, of any streams, go out in one write (a system call
  each, not one per frame). A producer whose connection has more than ``HIGH_WATER_BYTES``
  unsent waits for it to drain: back-pressure is per reader process, not per stream.
- A reader's per-stream queues are unbounded: the demultiplexing task never waits for a slow
  stream, so no stream holds up another on the shared connection. A stream's frames are a token
  stream's batches, which the conversation actor keeps whole in its run log anyway; a process
  that cannot keep up as a whole stops reading its socket, and its producers wait (above).

Same node, no TCP. The server also listens on a Linux abstract Unix socket (no file to clean up;
scoped to the network namespace, as the node's address is), named on the ticket; a reader on the
ticket's node connects there, where a frame costs the kernel about half what loopback TCP does
(some 10 us less on each side per frame here). A reader elsewhere, or one the Unix socket refuses,
uses the TCP address.

Frames: one byte of kind, four of stream number, four of length, then the payload. From the
reader: ``CLAIM`` (the ticket's token), ``CANCEL`` (none). From the producer: ``ITEM`` (a pickled
value), ``ERROR`` (the source's pickled exception), ``END`` (none), ``BROKEN`` (why, in UTF-8: the
token named no live offer, or the producer stopped the stream). Both ends are processes of the
same Ray cluster, which already trusts pickles from each other; a stream must still be claimed
with a ticket's random token, and each ticket is served at most once.

An offer nobody claims within ``CLAIM_SECONDS`` is withdrawn and its source closed; a reader that
will not read a ticket gives it back with ``decline``, which stops it at once. A connection that
has claimed nothing ``CLAIM_SECONDS`` after it was made is closed: a reader connects to claim, and
sends its first claim at once, so such a connection is not a reader's (and would otherwise hold a
socket and a task of the producer for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import secrets
import socket
import struct
import sys
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import ray

from runtime import hop_trace

CLAIM_SECONDS = 30.0
# A TCP connection idle this long is probed, every interval, and given up after this many probes
# unanswered (``keep_alive``): a peer lost without a reset is noticed within 25 s.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3
HIGH_WATER_BYTES = 1 << 20  # a reader process this far behind makes its producers wait for it
# Connections waiting to be accepted: a burst of readers starting at once opens one each.
BACKLOG = 4096

ITEM, ERROR, END, BROKEN = 1, 2, 3, 4  # producer to reader
CLAIM, CANCEL = 5, 6  # reader to producer
_HEADER = struct.Struct("!BII")  # kind, stream number, payload length
_TOKEN_BYTES = 16
_NUMBERS = 1 << 32
_READ_BYTES = 1 << 16
# The longest frame a reader sends (a claim's token); anything longer is not a reader's.
_MAX_READER_FRAME = 64
_REFUSED = b"no such stream: its ticket is unknown, already claimed or withdrawn"
_CUT = b"the producer stopped the stream before its end"


class ChannelBroken(ConnectionError):
    """A channel ended without its end frame: the producing process died or dropped it."""


class ChannelUnclaimed(TimeoutError):
    """Nobody claimed an offered channel within ``CLAIM_SECONDS``."""


@dataclass(frozen=True)
class Ticket:
    """Where the rest of a streaming call's items are: an address and a one-use token; ``local``
    the producer's Unix socket, for a reader on node ``host``."""

    host: str
    port: int
    token: bytes
    local: str | None = None


class _Frames:
    """The frames to write on one connection: those queued in one event-loop iteration go out
    together, in one write, at the end of it (or at once before a drain)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def send(self, kind: int, number: int, payload: bytes = b"") -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(_HEADER.pack(kind, number, len(payload)))
        if payload:
            self._pending.append(payload)
        self._pending_bytes += _HEADER.size + len(payload)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if not self._writer.transport.is_closing():  # a closed connection's frames have nobody to go to
            self._writer.write(data)

    def behind(self) -> bool:
        """Whether the connection holds more than ``HIGH_WATER_BYTES`` not yet sent."""
        return self._pending_bytes + self._writer.transport.get_write_buffer_size() > HIGH_WATER_BYTES

    async def drain(self) -> None:
        """Write what is queued, then wait while the connection's buffer is above its limit."""
        self.flush()
        await self._writer.drain()


async def _read_frames(
    reader: asyncio.StreamReader, take: Callable[[int, int, bytes], None], max_length: int = _NUMBERS
) -> None:
    """Hand each frame read from ``reader`` to ``take`` (kind, stream number, payload), all those of
    one read at once, until the connection ends. Returns at a clean end between frames; raises
    ``IncompleteReadError`` within one, ``ConnectionError`` on a reset, ``ValueError`` on a frame
    longer than ``max_length``."""
    rest = b""
    while True:
        data = await reader.read(_READ_BYTES)
        if not data:
            if rest:
                raise asyncio.IncompleteReadError(rest, None)
            return
        if rest:
            data = rest + data
        offset, size = 0, len(data)
        while size - offset >= _HEADER.size:
            kind, number, length = _HEADER.unpack_from(data, offset)
            if length > max_length:
                raise ValueError(f"a {length}-byte frame where at most {max_length} are expected")
            end = offset + _HEADER.size + length
            if end > size:
                if end - size > _READ_BYTES:  # a large frame: its rest at once, not chunk by chunk
                    data = data[offset:] + await reader.readexactly(end - size)
                    offset, end, size = 0, end - offset, end - offset
                else:
                    break
            take(kind, number, data[offset + _HEADER.size : end])
            offset = end
        rest = data[offset:]


class Offer:
    """One stream offered on the ``ChannelServer``, until its reader has had it all or left.

    Invariant: ``source`` is iterated by at most one task, the one the claiming connection started
    for it, and only after the token was presented; ``served`` cancels that task before returning,
    so whoever owns ``source`` may close it afterwards."""

    def __init__(self, server: ChannelServer, source: AsyncIterator[Any]) -> None:
        token = secrets.token_bytes(_TOKEN_BYTES)
        self.ticket = Ticket(server.host, server.port, token, server.local)
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
                raise ChannelUnclaimed("no reader claimed a stream channel") from None
            await asyncio.shield(self._ended)
        finally:
            self._server.withdraw(self.ticket.token)
            sending = self._sending
            if sending is not None and not sending.done():
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending

    def start(self, frames: _Frames, number: int) -> asyncio.Task[None]:
        """The claiming connection's task writing the source's items as its stream ``number``; the
        connection cancels it when the reader leaves. Claimed now, and ended when the task is
        done, however it ends: a reader may leave before the task has even begun."""
        sending = self._sending = asyncio.get_running_loop().create_task(self._send(frames, number))
        self._claimed.set_result(None)
        sending.add_done_callback(self._sent)
        return sending

    def _sent(self, _: asyncio.Task[None]) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    async def _send(self, frames: _Frames, number: int) -> None:
        try:
            async for item in self._source:
                frames.send(ITEM, number, pickle.dumps(item, protocol=5))
                if hop_trace.TRACING:
                    hop_trace.mark("sent", self)
                if frames.behind():
                    await frames.drain()
        except Exception as exc:  # the source's own error: the reader raises it
            frames.send(ERROR, number, _pickled_error(exc))
        else:
            frames.send(END, number)
        with contextlib.suppress(ConnectionError):
            await frames.drain()


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


class _Served:
    """The producer's end of one reader's connection: the streams it claimed, each sent by a task
    of its own, until the reader cancels it or the connection ends.

    Invariant: ``_sending`` holds exactly the streams whose task may still write; a stream leaves
    it before its task is cancelled by the reader, so only a task stopped otherwise (its call was
    cancelled) tells the reader its stream broke."""

    def __init__(self, server: ChannelServer, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._writer = writer
        self._frames = _Frames(writer)
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._open = True
        self._claimed = False  # a claim came, granted or not: this is a reader's connection

    def take(self, kind: int, number: int, payload: bytes) -> None:
        if kind == CLAIM:
            self._claimed = True
            offer = self._server.claim(payload) if number not in self._sending else None
            if offer is None:
                self._frames.send(BROKEN, number, _REFUSED)
                return
            task = self._sending[number] = offer.start(self._frames, number)
            task.add_done_callback(lambda task: self._sent(number, task))
        elif kind == CANCEL:
            task = self._sending.pop(number, None)
            if task is not None:
                task.cancel()

    def _sent(self, number: int, task: asyncio.Task[None]) -> None:
        if self._sending.get(number) is task:
            del self._sending[number]
            if task.cancelled() and self._open:  # not by its reader, which has forgotten it
                self._frames.send(BROKEN, number, _CUT)

    def close_unclaimed(self) -> None:
        """``CLAIM_SECONDS`` after the connection was made: close it if it has claimed nothing."""
        if not self._claimed:
            self._writer.close()

    def close(self) -> None:
        """The connection ended: every stream on it ends, as if its reader had left."""
        self._open = False
        sending, self._sending = self._sending, {}
        for task in sending.values():
            task.cancel()


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
        self.connections: set[asyncio.StreamWriter] = set()  # readers' connections now served

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

    def offer(self, source: AsyncIterator[Any]) -> Offer:
        offer = Offer(self, source)
        self._offers[offer.ticket.token] = offer
        return offer

    def withdraw(self, token: bytes) -> None:
        self._offers.pop(token, None)

    def claim(self, token: bytes) -> Offer | None:
        """The live offer under ``token``, taken: a token serves one stream."""
        return self._offers.pop(token, None)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one reader's connection for its lifetime: its claims and cancels, until it ends."""
        keep_alive(writer)
        served = _Served(self, writer)
        self.connections.add(writer)
        unclaimed = asyncio.get_running_loop().call_later(CLAIM_SECONDS, served.close_unclaimed)
        try:
            await _read_frames(reader, served.take, _MAX_READER_FRAME)
        except (asyncio.IncompleteReadError, OSError, ValueError):  # a reset, or not a reader
            pass
        finally:
            unclaimed.cancel()
            self.connections.discard(writer)
            served.close()
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
        reader, writer = await asyncio.open_connection(ticket.host, ticket.port)
    except OSError as exc:
        raise ChannelBroken(f"cannot reach the stream channel at {ticket.host}:{ticket.port}: {exc}") from exc
    keep_alive(writer)
    return reader, writer


def keep_alive(writer: asyncio.StreamWriter) -> None:
    """Probe an idle TCP connection, so that a peer gone without a reset (its machine lost) ends it
    within ``KEEPALIVE_IDLE_SECONDS + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL_SECONDS`` instead of the
    kernel's two hours (or, with data unacknowledged, its ~15 minutes of retransmissions): the
    streams on it then break, as they do when a producer dies. A Unix socket needs none: both ends
    are on one machine."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if sys.platform == "linux":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        # The same bound while sent data waits for its acknowledgement, when probes are not sent.
        timeout_ms = 1000 * (KEEPALIVE_IDLE_SECONDS + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)


_LinkKey = tuple[str, int, str | None]


class _Inbox:
    """One stream's frames, read off its connection and not yet by its reader (unbounded)."""

    __slots__ = ("_waiter", "frames")

    def __init__(self) -> None:
        self.frames: deque[tuple[int, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, kind: int, payload: bytes) -> None:
        if hop_trace.TRACING and kind == ITEM:
            hop_trace.mark("received", self)
        self.frames.append((kind, payload))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[int, bytes]:
        while not self.frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.frames.popleft()


class _Link:
    """A reader's connection to one producer's ``ChannelServer``, shared by all the streams this
    loop reads from it; one task reads it and hands each frame to its stream's ``_Inbox``.

    Invariant: ``_streams`` holds the streams still expecting frames; a stream leaves it with its
    last frame (``END``, ``ERROR``, ``BROKEN``), when its reader leaves it, or when the connection
    ends, which ends all those left with ``BROKEN``. Once ``closed``, the link is out of the cache."""

    _links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_LinkKey, asyncio.Task[_Link]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_close: Callable[[], None]
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = _Frames(writer)
        self._streams: dict[int, _Inbox] = {}
        self._next = 0
        self._on_close = on_close
        self.closed = False
        self._reading = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def to(cls, ticket: Ticket) -> _Link:
        """This loop's connection to ``ticket``'s producer; the first stream opens it (and streams
        starting meanwhile wait for it). Raises ``ChannelBroken`` if it cannot be opened."""
        loop = asyncio.get_running_loop()
        links = cls._links.get(loop)
        if links is None:
            links = cls._links[loop] = {}
        key: _LinkKey = (ticket.host, ticket.port, ticket.local)
        opening = links.get(key)
        if opening is None:
            opening = links[key] = loop.create_task(cls._opened(ticket, links, key))
        return await asyncio.shield(opening)

    @classmethod
    async def _opened(
        cls, ticket: Ticket, links: dict[_LinkKey, asyncio.Task[_Link]], key: _LinkKey
    ) -> _Link:
        """Open the connection. A failed attempt, and later the connection's end, take it out of
        the cache before anyone else can find it there: the next stream opens a new one."""
        opening = asyncio.current_task()

        def forget() -> None:
            if links.get(key) is opening:
                del links[key]

        try:
            reader, writer = await _connected(ticket)
        except BaseException:
            forget()
            raise
        return cls(reader, writer, forget)

    def open(self, token: bytes) -> tuple[int, _Inbox]:
        """Claim the stream offered under ``token``: its number here and where its frames go."""
        while self._next in self._streams:
            self._next = (self._next + 1) % _NUMBERS
        number = self._next
        self._next = (number + 1) % _NUMBERS
        inbox = _Inbox()
        if self.closed:  # it ended while this stream waited for it to open
            inbox.put(BROKEN, b"the stream channel's connection closed before the stream began")
            return number, inbox
        self._streams[number] = inbox
        self._frames.send(CLAIM, number, token)
        return number, inbox

    def leave(self, number: int) -> None:
        """The reader of stream ``number`` wants no more: the producer stops it; late frames drop."""
        if self._streams.pop(number, None) is not None and not self.closed:
            self._frames.send(CANCEL, number)

    def _take(self, kind: int, number: int, payload: bytes) -> None:
        inbox = self._streams.get(number)
        if inbox is None:  # a stream its reader left: what was already on the way
            return
        if kind != ITEM:
            del self._streams[number]
        inbox.put(kind, payload)

    async def _read(self) -> None:
        try:
            await _read_frames(self._reader, self._take)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.closed = True
            self._on_close()
            streams, self._streams = self._streams, {}
            for inbox in streams.values():
                inbox.put(BROKEN, b"the stream channel's connection closed before its end")
            self._writer.close()

    def abort(self) -> None:
        """Cut the connection at once, as a failing network would (tests)."""
        self._writer.transport.abort()


async def read_channel(ticket: Ticket) -> AsyncIterator[Any]:
    """The items offered under ``ticket``, in order; the source's error is raised as itself.
    Raises ``ChannelBroken`` if the stream ends without its end frame: the producer is unreachable,
    the connection broke, the producer stopped the stream, or the token named no live offer."""
    link = await _Link.to(ticket)
    number, inbox = link.open(ticket.token)
    ended = False
    try:
        while True:
            kind, payload = await inbox.get()
            if kind == ITEM:
                yield pickle.loads(payload)
                continue
            ended = True
            if kind == END:
                return
            if kind == ERROR:
                raise _unpickled_error(payload)
            raise ChannelBroken(payload.decode(errors="replace"))
    finally:
        if not ended:
            link.leave(number)


async def decline(ticket: Ticket) -> None:
    """Give up ``ticket``'s stream unread: it is claimed and left at once, so its producer stops it
    now rather than when the offer's claim time runs out. A producer out of reach has nothing to
    stop."""
    with contextlib.suppress(ChannelBroken):
        link = await _Link.to(ticket)
        number, _ = link.open(ticket.token)
        link.leave(number)
