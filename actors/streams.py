"""Both ends of Parley's streaming actor calls: ``stream_out`` yields, ``stream_values`` reads.

A streaming call's first items cross in one Ray item, with a ``Ticket`` for the rest: those
cross over a direct connection (``actors.channel``, one per pair of processes), which costs a
tenth of a Ray item each. ``stream_values`` reads either kind of call the same way, so a caller
never knows which one it made.

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
    """What a streaming actor method yields for ``source``: with ``channel``, one ``Ticket``
    carrying its first ``direct`` items, for the rest, then it waits until they were read; without,
    every item.

    The ticket goes out as soon as the first ``direct`` items are at hand (a busy conversation, or
    any error before them, is still raised at the call), so the reader claims its channel while
    the next item is being made. ``final`` tells the last item of a stream when it sees one: a
    stream that ends within its ``direct`` items (a quick turn's one batch) goes as plain items
    and costs no channel. The caller owns ``source`` and closes it after this ends; this only
    iterates it."""
    if not channel:
        async for item in source:
            yield item
        return
    head: list[T] = []
    while len(head) < direct:
        try:
            item = await anext(source)
        except StopAsyncIteration:
            break
        head.append(item)
        if final is not None and final(item):
            break
    else:
        offer = (await ChannelServer.here()).offer(source, tuple(head))
        yield offer.ticket
        await offer.served()
        return
    for item in head:  # the stream ended within them
        yield item


async def stream_values(
    generator: ray.ObjectRefGenerator, ticket: Ticket | None = None
) -> AsyncIterator[Any]:
    """The values a ``stream_out`` call yields, in order; an item's error is raised as ``await``
    would, and the source's error read over a channel as itself. ``ticket``: the call's first item,
    already taken by the caller, with its head already used."""
    async with aclosing(followed(_fetched(generator), ticket)) as values:
        async for value in values:
            yield value


async def followed(items: AsyncIterator[Any], ticket: Ticket | None = None) -> AsyncIterator[Any]:
    """``items`` with each ``Ticket`` replaced by its head and the items read over its channel;
    ``ticket`` (its head already used) is read before them."""
    if ticket is not None:
        async for item in _through(ticket, items):
            yield item
    async for value in items:
        if not isinstance(value, Ticket):
            yield value
            continue
        for item in value.head:
            yield item
        async for item in _through(value, items):
            yield item


async def _through(ticket: Ticket, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The items on ``ticket``'s channel; on ``ChannelBroken``, what ``items`` raises instead."""
    try:
        async with aclosing(read_channel(ticket)) as rest:
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
