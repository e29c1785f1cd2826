"""``ProviderActor``: a small pool of async actors that make every LLM call.

Many slow, streaming provider calls are I/O: one async actor with the SDK's aiohttp transport
carries hundreds at once on its event loop, where plain Ray tasks would hold a worker process per
call (200 concurrent 1-s calls: ~1.1 s here against 26 s and 51 extra processes as tasks). Token
deltas are coalesced here, before they cross to the conversation actor.

``ProviderPool`` is the client side: a ``Provider`` that forwards to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from contextlib import aclosing

import ray
from ray.exceptions import RayActorError

from runtime.coalesce import StreamGauge, coalesce
from runtime.providers.base import (
    DeltaBatch,
    EncodedRequest,
    MessageCache,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    ProviderError,
    WireBatch,
)
from runtime.providers.encoding import encode
from runtime.providers.recording.transport import Recorder
from runtime.providers.registry import ProviderRegistry
from runtime.providers.retry import RetryPolicy
from runtime.settings import ProviderCredentials, Settings

from .channel import ChannelBroken
from .heap import freeze_startup_heap
from .streams import Handoff, hand_off, handed, handoff_of, stream_values

MAX_CONCURRENCY = 2000
# Seconds before each retry of a call whose provider actor died under it (a node lost): the first
# retry at once, then time for Ray to notice the death and restart the actor.
RESTART_PAUSES = (0.0, 0.5, 1.0)


def provider_actor_name(index: int) -> str:
    return f"provider-{index}"


class ProviderActor:
    def __init__(self, settings: Settings, credentials: ProviderCredentials) -> None:
        self._settings = settings
        # Every stream of this actor counts towards its batch budget (``coalesce_batches_per_s``).
        self._streams = StreamGauge(settings.coalesce_batches_per_s)
        # Keys come from where the server was started, not from this worker's environment.
        self._registry = ProviderRegistry(
            credentials,
            timeout=settings.provider_timeout_seconds,
            retry=RetryPolicy.from_settings(settings),
            recorder=Recorder.from_settings(settings, credentials.secrets()),
        )
        freeze_startup_heap()
        self._heap_settled = False

    @ray.method(enable_task_events=False)  # per-call task events cost GCS and worker CPU every turn
    async def complete(self, encoded: EncodedRequest) -> ModelResponse:
        return await self._registry.send(encoded)

    @ray.method(enable_task_events=False)
    async def stream_batches(self, encoded: EncodedRequest) -> Handoff[WireBatch]:
        """The stream's first batch, and a ticket for the rest unless it was the last; every
        batch in its wire form (``DeltaBatch.to_wire``)."""
        return await hand_off(self._batches(encoded), final=_is_last_batch)

    @ray.method(enable_task_events=False)
    async def stream_batch_items(self, encoded: EncodedRequest) -> AsyncIterator[WireBatch]:
        """``stream_batches`` with every batch a Ray item (``PARLEY_STREAM_CHANNEL=0``)."""
        async with self._batches(encoded) as batches:
            async for batch in batches:
                yield batch

    @contextlib.asynccontextmanager
    async def _batches(self, encoded: EncodedRequest) -> AsyncIterator[AsyncIterator[WireBatch]]:
        interval = self._settings.coalesce_ms / 1000
        stream = self._registry.stream_encoded(encoded)
        async with (
            aclosing(coalesce(stream, interval, self._settings.coalesce_tokens, self._streams)) as batches,
            aclosing(_to_wire(batches)) as wire,
        ):
            yield wire
        if not self._heap_settled:  # the SDK has loaded what a stream needs: keep it out of collections
            self._heap_settled = True
            freeze_startup_heap()

    async def ready(self) -> bool:
        return True


async def _to_wire(batches: AsyncIterator[DeltaBatch]) -> AsyncIterator[WireBatch]:
    async for batch in batches:
        yield batch.to_wire()


def _is_last_batch(batch: WireBatch) -> bool:
    return batch[1] is not None


RemoteProviderActor = ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY, max_restarts=-1)(ProviderActor)


def start_provider_actors(settings: Settings, credentials: ProviderCredentials) -> list[ray.ObjectRef]:
    """Create (or find) the pool, detached so it outlives the process that started it; returns
    refs that resolve once every actor is ready (so the caller can start other things meanwhile)."""
    handles = [
        RemoteProviderActor.options(
            name=provider_actor_name(i), namespace=settings.namespace, lifetime="detached", get_if_exists=True
        ).remote(settings, credentials)
        for i in range(max(settings.provider_actors, 1))
    ]
    return [h.ready.remote() for h in handles]


_handles: dict[tuple[str, int], ray.actor.ActorHandle] = {}


def _provider_handle(namespace: str, index: int, refresh: bool) -> ray.actor.ActorHandle:
    """The pool's actor ``index``, looked up once per process (every activation of a conversation
    actor makes a ``ProviderPool``; a GCS lookup each time would cost every first turn)."""
    key = (namespace, index)
    if refresh or key not in _handles:
        _handles[key] = ray.get_actor(provider_actor_name(index), namespace=namespace)
    return _handles[key]


class ProviderPool:
    """A ``Provider`` (and ``BatchingProvider``) that sends each call to one actor of the pool.

    Requests are encoded here, in the conversation's process, with each stored message encoded
    once: only plain wire-ready dicts cross to the provider actor (pickling the domain history
    instead cost ~3.7 ms per call at 200 messages).
    """

    def __init__(self, settings: Settings, key: str) -> None:
        self._settings = settings
        self._caches: dict[str, MessageCache] = {}
        # A conversation sticks to one actor: its calls share that actor's connection pool.
        self._index = zlib.crc32(key.encode()) % max(settings.provider_actors, 1)
        self._handle: ray.actor.ActorHandle | None = None

    def _actor(self, refresh: bool = False) -> ray.actor.ActorHandle:
        if self._handle is None or refresh:
            self._handle = _provider_handle(self._settings.namespace, self._index, refresh)
        return self._handle

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """The call, again after a pause when its actor died under it (``RESTART_PAUSES``): the
        actor restarts elsewhere, and a call made before Ray has noticed the death fails too."""
        for attempt, pause in enumerate((*RESTART_PAUSES, None)):
            ref = self._actor(refresh=attempt > 0).complete.remote(encode(request, self._caches))
            try:
                return await ref
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
            except RayActorError:
                if pause is None:
                    raise ProviderError("the provider actor is unavailable", "connection") from None
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def stream_batches(self, request: ModelRequest) -> AsyncIterator[DeltaBatch]:
        encoded = encode(request, self._caches)
        try:
            if self._settings.stream_channel:
                async with aclosing(self._handed(encoded)) as batches:
                    async for batch in batches:
                        yield batch
            else:
                generator = self._actor().stream_batch_items.options(num_returns="streaming").remote(encoded)
                async with aclosing(stream_values(generator)) as batches:  # leaving early cancels it
                    async for batch in batches:
                        yield DeltaBatch.from_wire(batch)
        except (RayActorError, ChannelBroken):
            self._handle = None
            raise ProviderError("the provider actor went away mid-stream", "connection") from None

    async def _handed(self, encoded: EncodedRequest) -> AsyncIterator[DeltaBatch]:
        # Our run cancelled before the first batch cancels the call (and stops a stream it started).
        handoff: Handoff[WireBatch] = await handoff_of(self._actor().stream_batches.remote(encoded))
        async with aclosing(handed(handoff)) as batches:  # leaving early stops the provider call
            async for batch in batches:
                yield DeltaBatch.from_wire(batch)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        async for batch in self.stream_batches(request):
            for delta in batch.deltas:
                yield delta
            if batch.response is not None:
                yield batch.response
