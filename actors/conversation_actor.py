"""``ConversationActor``: the one live home of a conversation, activated on demand.

Each conversation is served by exactly one async Ray actor, named after its id, which hosts a
``ConversationRunner`` (busy flag, runs, run logs). Its state lives in the store, so the actor is
only a cache: after ``conversation_idle_seconds`` without work it passivates (exits and frees its
name) and the next call activates a fresh one from the store, as Orleans does with virtual actors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

import ray

from runtime.conversation_runner import ConversationRunner
from runtime.events import encode_batch
from runtime.message import Message
from runtime.settings import Settings
from runtime.store import open_store
from runtime.turn import InputMessage, TurnRequest

from .provider_actor import ProviderPool
from .tool_tasks import RayToolRunner

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 1000  # each stream reader holds one slot while it follows a run


class ActorPassivating(Exception):
    """The actor is exiting; the caller finds or activates the conversation's next actor."""


class ConversationActor:
    def __init__(self, conversation_id: str, settings: Settings) -> None:
        self._settings = settings
        self._store = open_store(settings.resolved_store_url)
        self._runner = ConversationRunner(
            self._store,
            ProviderPool(settings, conversation_id),
            conversation_id,
            keepalive_seconds=settings.keepalive_seconds,
            coalesce_interval=settings.coalesce_ms / 1000,
            coalesce_deltas=settings.coalesce_tokens,
            first_batch_hold=settings.first_batch_hold_ms / 1000,
            compatible_providers=settings.compatible_providers,
            tool_runner=RayToolRunner(
                settings.tool_timeout_seconds, settings.tool_cpus, settings.tool_memory_mb
            ),
        )
        self._activation: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._passivating = False
        # An actor that is never activated exits after the spare TTL, also when whoever created it
        # died before calling it (a replica lost with its node, mid-way through filling its warm
        # pool). A timer thread, as the constructor has no running event loop; the lock orders it
        # against the first activation.
        self._claim_lock = threading.Lock()
        self._unclaimed = threading.Timer(settings.spare_ttl_seconds, self._expire_unclaimed)
        self._unclaimed.daemon = True
        self._unclaimed.start()

    async def _ready(self) -> ConversationRunner:
        if self._activation is None:
            with self._claim_lock:
                if not self._passivating:
                    self._activation = asyncio.ensure_future(self._activate())
                    self._unclaimed.cancel()
        if self._passivating:
            raise ActorPassivating(self._runner.conversation_id)
        assert self._activation is not None
        await self._activation
        return self._runner

    async def _activate(self) -> None:
        try:
            await self._runner.activate()
        except Exception:
            # Nothing to serve (the conversation is gone): leave at once rather than linger.
            self._passivate()
            raise
        self._reaper = asyncio.create_task(self._reap())

    @ray.method(enable_task_events=False)  # per-call task events cost GCS and worker CPU every turn
    async def send(self, request: TurnRequest) -> AsyncIterator[bytes]:
        """The run's events, in batches encoded with ``encode_batch``."""
        runner = await self._ready()
        async for batch in runner.send(request):
            yield encode_batch(batch)

    @ray.method(enable_task_events=False)
    async def follow(self, run_id: str | None, after: int = 0) -> AsyncIterator[bytes]:
        runner = await self._ready()
        async for batch in runner.follow(run_id, after):
            yield encode_batch(batch)

    async def wait_as_spare(self) -> bool:
        """Started ahead of its conversation (the warm pool): answers once the actor is up. If no
        conversation claims it within the spare TTL, it exits by itself."""
        return True

    def _expire_unclaimed(self) -> None:  # on the timer's thread
        with self._claim_lock:
            if self._activation is not None or self._passivating:
                return
            self._passivating = True
        self._passivate()

    async def active_run(self) -> str | None:
        return (await self._ready()).active_run_id

    async def cancel(self, run_id: str | None = None) -> list[str]:
        return await (await self._ready()).cancel(run_id)

    async def add_messages(self, messages: list[InputMessage]) -> list[Message]:
        return await (await self._ready()).add_messages(messages)

    async def remove_part(self, message_id: str, part_index: int) -> bool:
        return await (await self._ready()).remove_part(message_id, part_index)

    async def shutdown(self) -> None:
        """Stop serving now (the conversation was deleted): cancel any run, then exit."""
        await self._runner.cancel()
        self._passivate()

    # --- passivation ------------------------------------------------------------------------------
    async def _reap(self) -> None:
        idle_after = self._settings.conversation_idle_seconds
        state = self._runner.state
        if state is not None and state.conversation.ephemeral:
            idle_after = min(idle_after, self._settings.ephemeral_idle_seconds)
        period = min(max(idle_after / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(period)
            runner = self._runner
            if runner.idle and time.monotonic() - runner.last_activity >= idle_after:
                self._passivate()
                return

    def _passivate(self) -> None:
        # Set before anything can await, so no call that starts from here on does any work.
        self._passivating = True
        try:
            self._store.close()
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


RemoteConversationActor = ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY, max_restarts=0)(
    ConversationActor
)
