"""The directory: conversation id -> the one conversation actor that serves it, cluster-wide.

It is ``directory_shards`` named, detached Ray actors (``directory-<k>``); conversation ``c``
belongs to shard ``crc32(c) % K``, which alone decides where ``c`` is activated. The design note
(``actors/activation.md``) gives the single-activation argument and every failure case; in short:

- A shard is one async actor: ``resolve`` for a conversation with no owner starts one bind and
  every concurrent ``resolve`` of that conversation awaits the same bind, so two replicas racing
  a first send get the same actor.
- The shard records a binding only after the actor has loaded the conversation, and forgets it
  only when the actor releases it (passivation), or when the actor is shown not to hold it any
  more: it says so, it is dead, or it does not answer and is killed (fenced) before it is forgotten.
- A shard that restarts (its node died) rebuilds its map from what the live actors hold before it
  answers anything, so a conversation that is live somewhere is never bound a second time.

Each binding carries a token. Releases name it, so a late release of an earlier binding never
removes a newer one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError

from runtime.errors import Overloaded
from runtime.settings import Settings

from .placement import HostPool

BIND_TIMEOUT = 60.0  # loading a conversation takes milliseconds; past this the actor is fenced
PROBE_TIMEOUT = 10.0  # an actor that does not say what it holds within this is fenced
MAX_CONCURRENCY = 10_000

log = logging.getLogger(__name__)


class HostFull(Exception):
    """The conversation actor has no room and no idle activation to passivate."""

    def __reduce__(self):
        return (type(self), ())


def no_capacity(conversation_id: str) -> Overloaded:
    """No conversation actor anywhere can take another activation right now (HTTP 503)."""
    return Overloaded(
        f"No room to activate conversation {conversation_id}: every conversation actor is full of "
        "busy conversations. Retry shortly."
    )


@dataclass(frozen=True)
class Binding:
    """Conversation ``conversation_id`` is served by actor ``host_name`` under ``token``.

    A plain value: the actor is named, not handed over (a handle crossing processes with every
    resolve costs reference bookkeeping in both); callers keep their own handle per name."""

    conversation_id: str
    host_name: str
    token: int


def shard_name(index: int) -> str:
    return f"directory-{index}"


def shard_of(conversation_id: str, shards: int) -> int:
    return zlib.crc32(conversation_id.encode()) % max(shards, 1)


def unwrap(exc: BaseException) -> BaseException:
    """The error an actor raised, without Ray's wrapping."""
    while isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    return exc


class DirectoryShard:
    def __init__(self, settings: Settings, index: int) -> None:
        self._settings = settings
        self._index = index
        self._pool = HostPool(settings)
        self._owners: dict[str, Binding] = {}
        self._binding: dict[str, asyncio.Future[Binding]] = {}
        self._tokens = itertools.count(time.time_ns())  # unique across this shard's restarts
        self._rebuilt: asyncio.Future[None] | None = None

    # --- the map ----------------------------------------------------------------------------------
    @ray.method(enable_task_events=False)
    async def resolve(self, conversation_id: str, suspect: int | None = None) -> Binding:
        """The conversation's binding, activating it if it has none. ``suspect`` is the token of
        a binding the caller could not use (the actor said "not here", or could not be reached):
        it is checked, and replaced if it is stale."""
        await self._ready()
        while True:
            owner = self._owners.get(conversation_id)
            if owner is not None:
                if owner.token != suspect or await self._still_serves(owner):
                    return owner
                continue  # forgotten by _still_serves: bind anew
            pending = self._binding.get(conversation_id)
            if pending is None:
                pending = asyncio.ensure_future(self._bind(conversation_id))
                self._binding[conversation_id] = pending
                pending.add_done_callback(lambda _f, c=conversation_id: self._binding.pop(c, None))
            return await asyncio.shield(pending)

    @ray.method(enable_task_events=False)
    async def lookup(self, conversation_id: str) -> Binding | None:
        """The conversation's binding if it is live; never activates."""
        await self._ready()
        return self._owners.get(conversation_id)

    @ray.method(enable_task_events=False)
    async def release(self, conversation_id: str, token: int) -> None:
        """The actor passivated the conversation: forget the binding if it is still this one."""
        owner = self._owners.get(conversation_id)
        if owner is not None and owner.token == token:
            self._forget(owner)

    async def ping(self) -> bool:
        await self._ready()
        return True

    # --- binding ----------------------------------------------------------------------------------
    async def _bind(self, conversation_id: str) -> Binding:
        tried: set[str] = set()
        while True:
            host = await self._pool.choose(tried)
            if host is None:
                self._pool.refresh(force=True)
                host = await self._pool.choose(tried)
            if host is None:
                raise no_capacity(conversation_id)
            token = next(self._tokens)
            try:
                live = await asyncio.wait_for(host.handle.bind.remote(conversation_id, token), BIND_TIMEOUT)
            except HostFull:
                host.full_until = time.monotonic() + 1.0
                tried.add(host.name)
                continue
            except RayActorError:  # died, or never came up: another actor takes it
                self._pool.lost(host.name)
                self._lost_host(host.name)
                tried.add(host.name)
                continue
            except TimeoutError:
                self._fence(host.name, host.handle)
                tried.add(host.name)
                continue
            except Exception as exc:  # the conversation's own error (not found): the caller's
                raise unwrap(exc) from None
            binding = Binding(conversation_id, host.name, token)
            self._owners[conversation_id] = binding
            host.live = live
            return binding

    async def _still_serves(self, owner: Binding) -> bool:
        """Whether ``owner`` is still good; if not, it is forgotten (its actor fenced when silent)."""
        host = self._pool.get(owner.host_name)
        if host is None:  # lost meanwhile, with every binding on it
            self._lost_host(owner.host_name)
            return False
        try:
            holds = await asyncio.wait_for(host.handle.holds.remote(owner.conversation_id), PROBE_TIMEOUT)
        except RayActorError:
            self._pool.lost(owner.host_name)
            self._lost_host(owner.host_name)
            return False
        except TimeoutError:
            self._fence(owner.host_name, host.handle)
            return False
        if not holds:
            self._forget(owner)
        return holds

    def _fence(self, name: str, handle: ray.actor.ActorHandle) -> None:
        """An actor that does not answer may still be serving: kill it before its conversations
        are bound elsewhere, so there is never a second live copy."""
        log.warning("conversation actor %s does not answer: killing it before rebinding", name)
        try:
            ray.kill(handle, no_restart=True)
        except Exception:
            pass
        self._pool.lost(name)
        self._lost_host(name)

    def _lost_host(self, name: str) -> None:
        for owner in [o for o in self._owners.values() if o.host_name == name]:
            self._forget(owner)

    def _forget(self, owner: Binding) -> None:
        if self._owners.get(owner.conversation_id) is owner:
            del self._owners[owner.conversation_id]
            host = self._pool.get(owner.host_name)
            if host is not None:
                host.live = max(host.live - 1, 0)

    # --- rebuilding after a restart ---------------------------------------------------------------
    async def _ready(self) -> None:
        if self._rebuilt is None:
            self._rebuilt = asyncio.ensure_future(self._rebuild())
        await asyncio.shield(self._rebuilt)

    async def _rebuild(self) -> None:
        """Learn what the live actors already hold (empty on a first start; after a restart, the
        bindings this shard had). Actors that do not answer are fenced."""
        self._pool.refresh(force=True)
        hosts = self._pool.known()
        shards = self._settings.directory_shards

        async def held(host) -> list[tuple[str, int]]:
            # As long as a bind: an actor still starting holds nothing, but it cannot say so yet.
            try:
                return await asyncio.wait_for(host.handle.held.remote(self._index, shards), BIND_TIMEOUT)
            except RayActorError:
                self._pool.lost(host.name)
            except TimeoutError:
                self._fence(host.name, host.handle)
            return []

        for host, pairs in zip(hosts, await asyncio.gather(*(held(h) for h in hosts)), strict=True):
            for conversation_id, token in pairs:
                self._owners[conversation_id] = Binding(conversation_id, host.name, token)
                host.live += 1
        if self._owners:
            log.warning("directory shard %d rebuilt %d bindings", self._index, len(self._owners))


RemoteDirectoryShard = ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY, max_restarts=-1)(
    DirectoryShard
)


def shard_handle(settings: Settings, index: int) -> ray.actor.ActorHandle:
    """Get or start shard ``index`` (atomic across replicas: the name decides)."""
    return RemoteDirectoryShard.options(
        name=shard_name(index),
        namespace=settings.namespace,
        get_if_exists=True,
        lifetime="detached",
        max_task_retries=-1,  # a shard restarted after its node died answers the retried call
    ).remote(settings, index)


def start_directory(settings: Settings) -> list[ray.ObjectRef]:
    return [shard_handle(settings, k).ping.remote() for k in range(max(settings.directory_shards, 1))]
