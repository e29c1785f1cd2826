"""The server's lifecycle state (starting, ready, draining), told to every ingress replica.

One named actor, ``lifecycle``, holds the state; the process that started the server sets it
(``parley.server``). Each ingress replica keeps a ``LifecycleWatch``: one long-poll call that
returns only when the state changes, so a replica learns of a drain within a round trip and an
idle server spends no CPU on it. A replica reads ``watch.state`` on every request without an
await: the last state it heard of.

A replica that cannot reach the actor keeps the state it last heard and tries again; a replica
that never heard one says ``starting``, the safe answer (503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from runtime.settings import Settings

log = logging.getLogger(__name__)

ACTOR_NAME = "lifecycle"
RETRY_SECONDS = 1.0


class ServerState(StrEnum):
    starting = "starting"  # not every actor is up yet: nothing is served
    ready = "ready"
    draining = "draining"  # stopping: running turns finish, new work is refused


class LifecycleActor:
    """Holds the state; ``watch`` answers as soon as it differs from what the caller knows."""

    def __init__(self) -> None:
        self._state = ServerState.starting
        self._changed = asyncio.Event()

    async def set(self, state: ServerState) -> None:
        if state != self._state:
            self._state = state
            self._changed.set()
            self._changed = asyncio.Event()

    async def get(self) -> ServerState:
        return self._state

    @ray.method(enable_task_events=False)
    async def watch(self, known: ServerState | None) -> ServerState:
        while self._state == known:
            await self._changed.wait()
        return self._state


RemoteLifecycleActor = ray.remote(num_cpus=0, max_concurrency=1000)(LifecycleActor)


# The driver's handle. The actor is not detached, so that it ends with the driver and a new server
# never reads an old one's ``draining``; and a non-detached actor lives only while a handle to
# it does, so the driver keeps this one for its whole life.
_driver_handle: ray.actor.ActorHandle | None = None


def start_lifecycle(settings: Settings) -> ray.ObjectRef:
    """Start the actor from the driver (in state ``starting``); the ref resolves once it is up."""
    global _driver_handle
    # On the driver's own node: a replica started after another node died must still find it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    _driver_handle = RemoteLifecycleActor.options(
        name=ACTOR_NAME, namespace=settings.namespace, scheduling_strategy=here
    ).remote()
    return _driver_handle.get.remote()


def set_state(state: ServerState, timeout: float = 30.0) -> None:
    """Set the state from the driver (blocking); ``start_lifecycle`` first."""
    if _driver_handle is None:
        raise RuntimeError("set_state before start_lifecycle")
    ray.get(_driver_handle.set.remote(state), timeout=timeout)


class LifecycleWatch:
    """A replica's view of the state, kept current by one background long-poll."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.state = ServerState.starting
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the state from the running event loop; a no-op when already following it there,
        or outside any loop. (A replica's constructor may run on another loop than its requests:
        the first request then starts the watch on theirs.)"""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        if self._task is not None:
            self._task.cancel()
        self._task = loop.create_task(self._follow())

    async def _follow(self) -> None:
        known: ServerState | None = None
        while True:
            try:
                # Looked up, never created: the driver starts it before any replica.
                handle = ray.get_actor(ACTOR_NAME, namespace=self._settings.namespace)
                while True:
                    known = await handle.watch.remote(known)
                    self.state = known
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the driver is going away, or not up yet
                log.warning("lifecycle watch: %r", error)
                await asyncio.sleep(RETRY_SECONDS)
