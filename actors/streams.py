"""Both ends of Parley's streaming actor calls: ``stream_out`` yields, ``stream_values`` reads.

A streaming call's first items cross as Ray items; with a channel (``actors.channel``), the rest
cross over a direct connection, which costs a tenth of a Ray item each. ``stream_values`` reads
either kind of call the same way, so a caller never knows which one it made.

Reading a Ray item: ``async for ref in generator`` already waits until each item is in this
process (Ray's ``_next_async`` awaits it before handing the ref out); ``await ref`` then fetches
it a second time, through another callback from Ray's thread and another wake-up of the event
loop. So the value is taken synchronously, which for an item already local returns at once. An
item not local after all (a large one in a remote node's object store) is awaited as before, so
the event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import ray
from ray.exceptions import GetTimeoutError

from .channel import ChannelBroken, ChannelServer, Ticket, read_channel

# Ray warns once per process about any ray.get inside an async actor; these gets never wait
# (timeout 0), so the warning would only mislead. Set before any get, for Parley's own processes.
os.environ.setdefault("RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "0")

T = TypeVar("T")

# How long a reader whose channel broke waits for its call's own error (an actor's death takes Ray
# a moment to report) before reporting the broken channel.
BROKEN_CHANNEL_GRACE_SECONDS = 5.0


async def stream_out(
    source: AsyncIterator[T],
    *,
    direct: int = 0,
    channel: bool = True,
    final: Callable[[T], bool] | None = None,
) -> AsyncIterator[T | Ticket]:
    """What a streaming actor method yields for ``source``: its first ``direct`` items as Ray
    items, then (with ``channel``) a ``Ticket`` for the rest, waiting until they were read.

    ``final`` tells the last item of a stream when it sees one: a stream that ends within its
    ``direct`` items (a quick turn's one batch) then costs no connection. The ticket goes out at
    once after the direct items, so the reader connects while the next item is being made. The
    caller owns ``source`` and closes it after this ends; this only iterates it."""
    if not channel:
        async for item in source:
            yield item
        return
    for _ in range(direct):
        try:
            item = await anext(source)
        except StopAsyncIteration:
            return
        yield item
        if final is not None and final(item):
            return
    offer = (await ChannelServer.here()).offer(source)
    yield offer.ticket
    await offer.served()


async def stream_values(generator: ray.ObjectRefGenerator) -> AsyncIterator[Any]:
    """The values a ``stream_out`` call yields, in order; an item's error is raised as ``await``
    would, and the source's error read over a channel as itself."""
    async with aclosing(followed(_fetched(generator))) as values:
        async for value in values:
            yield value


async def followed(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``items`` with each ``Ticket`` replaced by the items read over its channel."""
    async for value in items:
        if not isinstance(value, Ticket):
            yield value
            continue
        try:
            async with aclosing(read_channel(value)) as rest:
                async for item in rest:
                    yield item
        except ChannelBroken:
            # The producer died (what follows the ticket then raises its actor's error) or cut the
            # channel, or this process cannot reach it: then the broken channel is the error, and
            # the caller's clean-up cancels the call.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BROKEN_CHANNEL_GRACE_SECONDS):
                    async for _ in items:
                        pass
            raise


async def _fetched(generator: ray.ObjectRefGenerator) -> AsyncIterator[Any]:
    async for ref in generator:
        try:
            yield ray.get(ref, timeout=0)
        except GetTimeoutError:
            yield await ref
