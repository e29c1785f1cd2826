"""``Directory``: conversation id -> its live actor, activating one on demand.

A conversation's actor is a named, detached Ray actor created with ``get_if_exists=True``, an
atomic get-or-create across every replica, so there is at most one per conversation in the cluster
and its busy flag needs no other lock.

Starting an actor costs a process (~0.5-1 s here). New conversations skip that wait: their ids come
from ``reserve_conversation_id``, which hands out ids whose actors were started ahead of time (a
small warm pool per replica, refilled in the background). The actor was already created under the
conversation's name, so the uniqueness argument above is unchanged.

It is also the boundary where Ray's errors become Parley's: an error raised inside the actor
arrives here wrapped in ``RayTaskError`` and leaves as the original exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from runtime import ids
from runtime.events import RunEvent, decode_batch
from runtime.settings import Settings

from .conversation_actor import ActorPassivating, RemoteConversationActor

ATTEMPTS = 40  # an actor that is passivating frees its name within a few hundred ms
RETRY_DELAY = 0.05
CACHED_HANDLES = 10_000  # most recently used conversations whose actor handle this replica keeps

log = logging.getLogger(__name__)


class Directory:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._handles: OrderedDict[str, ray.actor.ActorHandle] = OrderedDict()
        # (id, when its actor came up) of new conversations whose actors are running
        self._spares: deque[tuple[str, float]] = deque()
        self._refilling: asyncio.Future[None] | None = None
        megabytes = settings.conversation_actor_memory_mb
        self._reservation = {"memory": megabytes * 1024 * 1024} if megabytes > 0 else {}

    # --- the warm pool ----------------------------------------------------------------------------
    def reserve_conversation_id(self) -> str:
        """An id for a new conversation, with its actor already running when the pool has one."""
        # A spare close to its TTL may be exiting: skip it (its conversation would start cold).
        fresh_after = time.monotonic() - self._settings.spare_ttl_seconds * 0.8
        conversation_id = None
        while self._spares and conversation_id is None:
            candidate, started = self._spares.popleft()
            if started >= fresh_after:
                conversation_id = candidate
            else:
                self._handles.pop(candidate, None)
        self._refill()
        return conversation_id or ids.new_id(ids.CONVERSATION)

    def warm_up(self) -> None:
        """Start filling the warm pool (from inside the replica's event loop)."""
        self._refill()

    def _refill(self) -> None:
        if self._settings.warm_actors > 0 and (self._refilling is None or self._refilling.done()):
            self._refilling = asyncio.ensure_future(self._top_up())

    async def _top_up(self) -> None:
        while len(self._spares) < self._settings.warm_actors:
            conversation_id = ids.new_id(ids.CONVERSATION)
            try:
                await self._actor(conversation_id).wait_as_spare.remote()
            except Exception as exc:  # the pool is an optimisation: without it, activation is cold
                log.warning("could not start a spare conversation actor: %s", exc)
                return
            self._spares.append((conversation_id, time.monotonic()))

    def _actor(self, conversation_id: str) -> ray.actor.ActorHandle:
        handle = self._handles.get(conversation_id)
        if handle is not None:
            self._handles.move_to_end(conversation_id)
        else:
            handle = RemoteConversationActor.options(
                name=conversation_id,
                namespace=self._settings.namespace,
                get_if_exists=True,
                lifetime="detached",
                # Across the nodes of a cluster rather than packed onto the head (num_cpus=0
                # actors would otherwise all land where they were asked for).
                scheduling_strategy="SPREAD",
                **self._reservation,
            ).remote(conversation_id, self._settings)
            self._handles[conversation_id] = handle
            if len(self._handles) > CACHED_HANDLES:
                self._handles.popitem(last=False)
        return handle

    def live(self, conversation_id: str) -> ray.actor.ActorHandle | None:
        """The conversation's actor if one is running, without activating one."""
        handle = self._handles.get(conversation_id)
        if handle is not None:
            return handle
        try:
            return ray.get_actor(conversation_id, namespace=self._settings.namespace)
        except ValueError:
            return None

    async def open_stream(self, conversation_id: str, method: str, *args: Any) -> Stream:
        """Start a streaming call and wait for its first item, so that errors raised before the
        stream starts (busy, not found) surface here, while the HTTP status can still be chosen."""
        for attempt in range(ATTEMPTS):
            generator = (
                getattr(self._actor(conversation_id), method).options(num_returns="streaming").remote(*args)
            )
            try:
                first = decode_batch(await (await generator.__anext__()))
            except StopAsyncIteration:
                return Stream([], None)
            except Exception as exc:
                if _stale(exc) and attempt + 1 < ATTEMPTS:
                    self._handles.pop(conversation_id, None)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                raise _unwrap(exc) from None
            return Stream(first, generator)
        raise AssertionError("unreachable")

    async def call(self, conversation_id: str, method: str, *args: Any, activate: bool = True) -> Any:
        """A plain call; with ``activate=False`` it is skipped (returns None) when no actor is live."""
        for attempt in range(ATTEMPTS):
            handle = self._actor(conversation_id) if activate else self.live(conversation_id)
            if handle is None:
                return None
            try:
                return await getattr(handle, method).remote(*args)
            except Exception as exc:
                if _stale(exc) and attempt + 1 < ATTEMPTS:
                    self._handles.pop(conversation_id, None)
                    if not activate:
                        return None
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                raise _unwrap(exc) from None
        raise AssertionError("unreachable")

    async def retire(self, conversation_id: str) -> None:
        """Stop the conversation's live actor, if any (after the conversation is deleted)."""
        handle = self.live(conversation_id)
        self._handles.pop(conversation_id, None)
        if handle is not None:
            try:
                await handle.shutdown.remote()
            except Exception:  # already gone, or gone while shutting down: either way retired
                pass


class Stream:
    """A started ``send`` or ``follow`` call: its first batch of events plus the rest."""

    def __init__(self, first: list[RunEvent], generator: Any) -> None:
        self.first = first
        self._generator = generator
        self._exhausted = generator is None

    async def rest(self) -> AsyncIterator[list[RunEvent]]:
        if self._generator is None:
            return
        try:
            async for ref in self._generator:
                try:
                    data = await ref
                except Exception as exc:
                    raise _unwrap(exc) from None
                yield decode_batch(data)
            self._exhausted = True
        finally:
            self.close()

    def close(self) -> None:
        """Stop the remote generator if the reader leaves before its end (a client disconnect)."""
        if not self._exhausted and self._generator is not None:
            self._exhausted = True
            # Not recursive: Ray counts the provider calls a run makes as children of the call
            # that started it, and a background run must outlive its first reader.
            ray.cancel(self._generator, recursive=False)


def _stale(exc: BaseException) -> bool:
    """The handle points at an actor that has exited or is exiting: look it up again."""
    if isinstance(exc, RayTaskError):
        return isinstance(exc.cause, ActorPassivating)
    return isinstance(exc, RayActorError | ActorPassivating)


def _unwrap(exc: BaseException) -> BaseException:
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc
