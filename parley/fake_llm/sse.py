"""Server-sent events: frame encoding, per-token templates and a paced writer."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii
from typing import Any

from aiohttp import web

from .recorded_timing import CallTiming

# One shared encoder: json.dumps() with custom separators builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_encode_str = encode_basestring_ascii  # the C escaper json uses internally, minus the overhead
_HOLE = "\x00"  # marks where a Template substitutes a value
_HOLE_JSON = _encode_str(_HOLE)

DONE = "data: [DONE]\n\n"
# Before a mid-stream reset, the tokens already written get this long to reach the client: a TCP
# reset makes the peer's kernel throw away whatever its reader has not taken yet.
RESET_GRACE_SECONDS = 0.2


def dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


def data_frame(obj: Any) -> str:
    """`data: {...}` frame (OpenAI chat completions)."""
    return f"data: {_ENCODER.encode(obj)}\n\n"


def event_frame(name: str, obj: Any) -> str:
    """`event: name` + `data: {...}` frame (Anthropic, OpenAI Responses)."""
    return f"event: {name}\ndata: {_ENCODER.encode(obj)}\n\n"


class Template:
    """A frame whose JSON is encoded once; per token only the HOLE values are encoded.

    Streaming thousands of tokens is the benchmark hot path, and re-building and
    re-encoding the whole event dict for every token would dominate its CPU cost.
    """

    HOLE = _HOLE

    __slots__ = ("_parts",)

    def __init__(self, obj: Any, event: str | None = None) -> None:
        prefix = f"event: {event}\ndata: " if event else "data: "
        parts = (prefix + dumps(obj) + "\n\n").split(_HOLE_JSON)
        if len(parts) < 2:
            raise ValueError("template has no hole")
        self._parts = parts

    def render(self, value: str) -> str:
        """Fill the single hole with a string."""
        head, tail = self._parts
        return head + _encode_str(value) + tail

    def render_numbered(self, number: int, value: str) -> str:
        """Fill two holes: an integer (e.g. a sequence number), then a string."""
        head, middle, tail = self._parts
        return head + str(number) + middle + _encode_str(value) + tail


class StreamCut(Exception):
    """Raised after a `[[cut=K]]` (or `[[reset=K]]`) stream has been dropped on purpose."""


class PacedStream:
    """Writes frames, sleeping `token_delay` between tokens and cutting after `cut` tokens.

    Frames are buffered as text and, with no pacing, written in one go at the end:
    one encode and one write per reply keep the per-request CPU (and syscalls) small.

    `reset` aborts the connection (TCP reset) after that many tokens instead of closing it;
    `stall` goes silent for that many seconds once `stall_after` tokens are out.
    """

    def __init__(
        self,
        request: web.Request,
        token_delay: float | CallTiming,
        cut: int | None,
        reset: int | None = None,
        stall: float | None = None,
        stall_after: int = 0,
    ) -> None:
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        self._request = request
        self._cut = cut
        self._reset = reset
        self._stall = stall
        self._stall_after = stall_after
        # A recorded call's timing gives each gap its own length (``CallTiming.gap``).
        self._gaps = token_delay if isinstance(token_delay, CallTiming) else None
        if self._gaps is not None:
            token_delay = max(self._gaps.gaps, default=0.0)
        self._delay = token_delay
        self._paced = token_delay > 0 or cut is not None or reset is not None or stall is not None
        self._buffer: list[str] = []
        self._tokens = 0
        self._after_last_token = 0  # buffer length right after the latest token

    async def open(self, headers: dict[str, str]) -> None:
        self.response.headers.update(headers)
        await self.response.prepare(self._request)

    def event(self, frame: str) -> None:
        """A frame that is not a token: never delayed on its own."""
        self._buffer.append(frame)

    async def tokens(self, frames: Iterable[str]) -> None:
        """Token frames: delayed from one another and counted towards a cut."""
        if not self._paced:
            self._buffer.extend(frames)
            return
        for frame in frames:
            await self._before_token()
            if self._delay > 0 and self._tokens > 0:
                await self._flush()
                await asyncio.sleep(self._gaps.gap(self._tokens) if self._gaps else self._delay)
            self._buffer.append(frame)
            self._tokens += 1
            self._after_last_token = len(self._buffer)

    async def finish(self) -> None:
        if self._cut is not None or self._reset is not None:
            # A cut stream never completes, even when the reply had fewer than K tokens.
            del self._buffer[self._after_last_token :]
            await self._drop()
        await self._maybe_stall()
        await self._flush()
        await self.response.write_eof()

    async def _before_token(self) -> None:
        if self._reset is not None and self._tokens >= self._reset:
            await self._drop()
        if self._cut is not None and self._tokens >= self._cut:
            await self._drop()
        await self._maybe_stall()

    async def _maybe_stall(self) -> None:
        if self._stall is not None and self._tokens >= self._stall_after:
            stall, self._stall = self._stall, None  # once
            await self._flush()
            await asyncio.sleep(stall)

    async def _flush(self) -> None:
        if self._buffer:
            data = "".join(self._buffer).encode()
            self._buffer.clear()
            await self.response.write(data)

    async def _drop(self) -> None:
        await self._flush()
        if self._reset is not None:
            await asyncio.sleep(RESET_GRACE_SECONDS)
            reset_connection(self._request)
        else:
            drop_connection(self._request)
        raise StreamCut


def drop_connection(request: web.Request) -> None:
    """Close the socket mid-response; close() still sends what is already buffered."""
    transport = request.transport
    if transport is not None:
        transport.close()


def reset_connection(request: web.Request) -> None:
    """Abort the connection with a TCP reset (RST, not FIN), as a crashing peer or middlebox does;
    anything still buffered is thrown away."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on, timeout 0: close() sends RST at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
