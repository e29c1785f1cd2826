"""Both ends of Parley's streaming actor calls: ``hand_off`` produces, ``handed`` reads.

A streaming call is a plain Ray call. The actor method takes its stream's first items and
returns them in a ``Handoff``, with a ``Ticket`` for the rest; those cross over a direct
connection (``actors.channel``, one per pair of processes), and the call is over. So a busy
conversation, or any error before the first items, is still raised at the call. A Ray
streaming-generator call instead stayed open until its channel had ended and reported its items
and its end through Ray: with the same first item and ticket it cost ~0.1-0.2 ms more CPU where it
was made and ~0.4-0.5 ms more where it was read (``python -m benchmarks.channel_cost --streams
1000 --items 1``, this 2-core VM), and a streamed turn makes two such calls.

Who owns what once the call has returned: the ``ChannelServer`` holds the offer, and a task of
this module holds what the stream was opened with (``opened``: the conversation's runner, the
provider's request), until the reader has read it all or left, or nobody claimed it within
``channel.CLAIM_SECONDS``; then that context is exited, which closes the source. A reader that
gives up a ticket unread (a background run's first reader) says so (``channel.decline``), and
this happens at once; so does a caller cancelled just as its call returned (``received``).

With ``PARLEY_STREAM_CHANNEL=0`` the calls are Ray streaming-generator calls instead, every item a
Ray item (``stream_values`` reads them): for clusters whose nodes cannot reach each other's ports.

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
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import GetTimeoutError

from .channel import (
    CLAIM_SECONDS,
    ChannelBroken,
    ChannelServer,
    ChannelUnclaimed,
    Offer,
    Ticket,
    decline,
    read_channel,
)

# Ray warns once per process about any ray.get inside an async actor; these gets never wait
# (timeout 0), so the warning would only mislead. Set before any get, for Parley's own processes.
os.environ.setdefault("RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "0")

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a reader whose channel broke waits to hear whether its producer died (an actor's death
# takes Ray a moment to report) before reporting the broken channel.
BROKEN_CHANNEL_GRACE_SECONDS = 5.0

# Background tasks of this module: streams handed off and not yet over, each exiting its context
# when it is, and readers' clean-ups (kept here: the event loop holds only weak references).
_serving: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class Handoff(Generic[T]):
    """What a streaming call returns: its first items, and where the rest are (``rest``), unless
    the stream ended within them."""

    head: tuple[T, ...]
    rest: Ticket | None = None


async def hand_off(
    opened: AbstractAsyncContextManager[AsyncIterator[T]],
    *,
    direct: int = 1,
    final: Callable[[T], bool] | None = None,
) -> Handoff[T]:
    """Enter ``opened`` and take its stream's first ``direct`` items; offer the rest on this
    process's ``ChannelServer`` and return. ``opened`` is exited when the stream is over: at once
    if it ended within those items (``final`` tells the last item when it sees one: a quick
    turn's one batch needs no channel), else once its reader has read the rest or left.

    Invariant: whatever happens before the return (an error, the call cancelled) exits
    ``opened`` here; after it, the serving task alone owns ``opened``."""
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(opened)
        head: list[T] = []
        while len(head) < direct:
            try:
                item = await anext(source)
            except StopAsyncIteration:
                return Handoff(tuple(head))
            head.append(item)
            if final is not None and final(item):
                return Handoff(tuple(head))
        offer = (await ChannelServer.here()).offer(source)
        owned = stack.pop_all()
    in_background(_serve(offer, owned))
    return Handoff(tuple(head), offer.ticket)


async def _serve(offer: Offer, owned: contextlib.AsyncExitStack) -> None:
    async with owned:
        try:
            await offer.served()
        except ChannelUnclaimed:
            log.warning("a stream's reader never claimed it; its source is closed")


async def handoff_of(call: ray.ObjectRef, *, recursive: bool = True) -> Handoff[Any]:
    """The ``Handoff`` a streaming call returns (``call``: its ref); see ``received``. Cancelled
    meanwhile, the call is cancelled (``recursive``: with the calls it made)."""
    return await received(call, lambda: ray.cancel(call, recursive=recursive))


async def received(call: Awaitable[Handoff[T]], cancel: Callable[[], object]) -> Handoff[T]:
    """Await ``call``'s ``Handoff``; cancelled meanwhile, ``cancel`` the call, and decline its
    ticket if it returned all the same.

    Why the decline: the call may have returned just before the cancel (or before ``cancel``
    reached its actor), and then its producer waits ``CLAIM_SECONDS`` for a reader that will not
    come, its source open all that while: a foreground run whose client left would hold its
    conversation busy. Awaiting a call a second time is allowed (a Ray ref, a task)."""
    try:
        return await call
    except asyncio.CancelledError:
        cancel()
        in_background(_decline_if_returned(call))
        raise


async def _decline_if_returned(call: Awaitable[Handoff[Any]]) -> None:
    try:
        async with asyncio.timeout(CLAIM_SECONDS):  # the offer is withdrawn by then anyway
            handoff = await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # this task was cancelled, not the call
            raise
        return
    except Exception:  # the call was cancelled, failed or took too long: nothing was offered
        return
    if handoff.rest is not None:
        with contextlib.suppress(Exception):
            await decline(handoff.rest)


async def handed(
    handoff: Handoff[T], died: Callable[[], Awaitable[object]] | None = None
) -> AsyncGenerator[T, None]:
    """The items of a handed-off stream, in order; the source's error is raised as itself.

    A broken channel raises ``ChannelBroken``, or, when ``died`` (a call to the producing actor)
    raises within ``BROKEN_CHANNEL_GRACE_SECONDS``, what it raised: the actor's death is then the
    cause the reader reports. Leaving early tells the producer to stop."""
    for item in handoff.head:
        yield item
    if handoff.rest is None:
        return
    try:
        async with aclosing(read_channel(handoff.rest)) as rest:
            async for item in rest:
                yield item
    except ChannelBroken:
        if died is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BROKEN_CHANNEL_GRACE_SECONDS):
                    await died()
        raise


def in_background(closing: Coroutine[Any, Any, None]) -> None:
    """Run ``closing`` (a reader's clean-up, from code that cannot wait for it) on this loop."""
    task = asyncio.get_running_loop().create_task(closing)
    _serving.add(task)
    task.add_done_callback(_serving.discard)


async def stream_values(
    generator: ray.ObjectRefGenerator, *, recursive: bool = True
) -> AsyncGenerator[Any, None]:
    """The values of a Ray streaming-generator call (channels off), in order; an item's error is
    raised as ``await`` would. Closed before their end, the call is cancelled (``recursive``: with
    the calls it made)."""
    exhausted = False
    try:
        async for ref in generator:
            try:
                yield ray.get(ref, timeout=0)
            except GetTimeoutError:
                yield await ref
        exhausted = True
    finally:
        if not exhausted:
            ray.cancel(generator, recursive=recursive)
