"""``ConversationActor``: a long-lived Ray actor process that serves many conversations in turn.

Each conversation is served by exactly one of these at a time (the directory decides which, see
``directory``), as an ``Activation`` holding its ``ConversationRunner``: the busy flag, the runs
and their logs. All of an actor's activations share its one event loop, so a send's busy check
and mark happen with no ``await`` between them and need no lock, as before. The actor outlives
the conversations it serves, as an Orleans silo outlives its grains: activating a conversation
costs a store read, not a process start, and an idle one costs nothing but its memory.

Every call names its conversation. An actor that does not serve it (it passivated, or was never
bound here) raises ``NotHere`` and the caller resolves the conversation again.

The actor holds at most ``capacity`` activations (its share of the node's cap on live
conversations). Binding one more passivates the least recently used idle activation first; when
all are busy the bind is refused with ``HostFull`` and the directory tries another actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import psutil
import ray

from runtime.conversation_runner import ConversationRunner
from runtime.events import Done, RunEvent, encode_batch
from runtime.message import Message
from runtime.settings import Settings
from runtime.store import open_store
from runtime.turn import InputMessage, TurnRequest

from .activation import Activation, ActivationState, NotHere
from .directory import HostFull, shard_handle, shard_of
from .heap import freeze_startup_heap
from .passivation import PassivationPolicy, default_live_per_node
from .placement import node_of
from .provider_actor import ProviderPool
from .streams import Handoff, hand_off
from .tool_tasks import RayToolRunner

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 100_000  # every stream reader of every hosted conversation holds one slot


DRAIN_POLL_SECONDS = 0.05
DRAIN_GRACE_SECONDS = 5.0  # after cancelling: for the runs to record their end and readers to read it


@dataclass(frozen=True)
class DrainReport:
    """What one actor's ``drain`` did with the turns running when it began."""

    host: str
    finished: int  # ended on their own within the drain time
    cancelled: int  # still running at its end, and cancelled
    still_running: int  # cancelled, yet not ended within the grace time either


@dataclass(frozen=True)
class ActivationReport:
    conversation_id: str
    host: str
    node_id: str
    busy: bool
    idle_seconds: float


@dataclass(frozen=True)
class HostReport:
    name: str
    node_id: str
    pid: int
    live: int
    capacity: int
    activations: list[ActivationReport]


class ConversationActor:
    def __init__(self, settings: Settings, name: str, hosts_on_node: int) -> None:
        self._settings = settings
        self._name = name
        self._store = open_store(settings.resolved_store_url)
        self._tools = RayToolRunner(
            settings.tool_timeout_seconds, settings.tool_cpus, settings.tool_memory_mb
        )
        per_node = settings.live_conversations_per_node or default_live_per_node(
            psutil.virtual_memory().total
        )
        self.capacity = max(1, math.ceil(per_node / max(hosts_on_node, 1)))
        self._policy = PassivationPolicy(settings.conversation_idle_seconds, settings.ephemeral_idle_seconds)
        # Least recently used first: a call moves its activation to the end.
        self._live: OrderedDict[str, Activation] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()
        freeze_startup_heap()

    # --- binding (called by the directory) ---------------------------------------------------------
    @ray.method(enable_task_events=False)
    async def bind(self, conversation_id: str, token: int) -> int:
        """Activate the conversation here under ``token``, loading it from the store. Returns how
        many conversations are live here now: placement's measure of this actor's load, counted
        over every directory shard's placements."""
        self._start_reaper()
        current = self._holding(conversation_id)
        if current is not None:
            current.token = token  # the directory lost track of it (a shard restarted): still ours
            await current.ready()
            return len(self._held())
        # One that is leaving (and idle) refuses every call already: replace it.
        self._live.pop(conversation_id, None)
        if len(self._held()) >= self.capacity:
            victim = self._policy.eviction_victim(self._live.values())
            if victim is None:
                raise HostFull()
            self._passivate(victim)
        activation = Activation(conversation_id, token, self._runner_for(conversation_id))
        self._live[conversation_id] = activation
        try:
            await activation.load()
        except BaseException:
            if self._live.get(conversation_id) is activation:
                del self._live[conversation_id]
            raise
        return len(self._held())

    @ray.method(enable_task_events=False)
    async def holds(self, conversation_id: str) -> bool:
        """Whether the conversation is (being) activated here, for the directory's checks."""
        return self._holding(conversation_id) is not None

    async def held(self, shard: int, shards: int) -> list[tuple[str, int]]:
        """(conversation, token) of every activation here that belongs to directory shard ``shard``."""
        return [
            (a.conversation_id, a.token) for a in self._held() if shard_of(a.conversation_id, shards) == shard
        ]

    async def ping(self) -> bool:
        self._start_reaper()
        return True

    def _runner_for(self, conversation_id: str) -> ConversationRunner:
        s = self._settings
        return ConversationRunner(
            self._store,
            ProviderPool(s, conversation_id),
            conversation_id,
            keepalive_seconds=s.keepalive_seconds,
            coalesce_interval=s.coalesce_ms / 1000,
            coalesce_deltas=s.coalesce_tokens,
            first_batch_hold=s.first_batch_hold_ms / 1000,
            compatible_providers=s.compatible_providers,
            tool_runner=self._tools,
        )

    def _holding(self, conversation_id: str) -> Activation | None:
        """The conversation's activation here, unless it is leaving (then it serves nothing)."""
        activation = self._live.get(conversation_id)
        if activation is None or activation.state is ActivationState.leaving:
            return None
        return activation

    def _held(self) -> list[Activation]:
        """Every activation here that is not leaving, least recently used first."""
        return [a for a in self._live.values() if a.state is not ActivationState.leaving]

    def _serving(self, conversation_id: str) -> Activation:
        """The conversation's activation, marked in use; raises ``NotHere``. No ``await``."""
        activation = self._holding(conversation_id)
        if activation is None:
            raise NotHere(conversation_id)
        self._live.move_to_end(conversation_id)
        activation.calls += 1
        return activation

    # --- the conversation's calls ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _runner(self, conversation_id: str) -> AsyncIterator[ConversationRunner]:
        """The conversation's runner, counted as in use for the call (so it cannot passivate
        meanwhile). Enters without suspending when the activation is active: a send's busy
        check still comes before the call's first ``await``."""
        activation = self._serving(conversation_id)
        try:
            yield await activation.ready()
        finally:
            activation.calls -= 1

    @ray.method(enable_task_events=False)  # per-call task events cost GCS and worker CPU every turn
    async def send(self, conversation_id: str, request: TurnRequest) -> Handoff[bytes]:
        """The run's first batch of events (encoded with ``encode_batch``) and a ticket for the
        rest; ``ConversationBusy`` if a run holds the conversation."""
        return await self._hand_off(conversation_id, lambda r: r.send(request))

    @ray.method(enable_task_events=False)
    async def follow(self, conversation_id: str, run_id: str | None, after: int = 0) -> Handoff[bytes]:
        return await self._hand_off(conversation_id, lambda r: r.follow(run_id, after))

    @ray.method(enable_task_events=False)
    async def send_items(self, conversation_id: str, request: TurnRequest) -> AsyncIterator[bytes]:
        """``send`` with every batch a Ray item (``PARLEY_STREAM_CHANNEL=0``)."""
        async with self._batches(conversation_id, _EncodedBatches(lambda r: r.send(request))) as batches:
            async for batch in batches:
                yield batch

    @ray.method(enable_task_events=False)
    async def follow_items(
        self, conversation_id: str, run_id: str | None, after: int = 0
    ) -> AsyncIterator[bytes]:
        encoded = _EncodedBatches(lambda r: r.follow(run_id, after))
        async with self._batches(conversation_id, encoded) as batches:
            async for batch in batches:
                yield batch

    async def _hand_off(self, conversation_id: str, events: _Events) -> Handoff[bytes]:
        # The first batch comes with the call: a busy conversation or an unknown run is raised at
        # the call, and a run that ended within it needs no channel.
        encoded = _EncodedBatches(events)
        return await hand_off(self._batches(conversation_id, encoded), final=lambda _: encoded.ended)

    @contextlib.asynccontextmanager
    async def _batches(
        self, conversation_id: str, encoded: _EncodedBatches
    ) -> AsyncIterator[_EncodedBatches]:
        """The run's encoded batches, with the conversation counted in use until they are closed."""
        async with self._runner(conversation_id) as runner, aclosing(encoded.of(runner)) as batches:
            yield batches

    @ray.method(enable_task_events=False)
    async def cancel(self, conversation_id: str, run_id: str | None = None) -> list[str]:
        async with self._runner(conversation_id) as runner:
            return await runner.cancel(run_id)

    @ray.method(enable_task_events=False)
    async def add_messages(self, conversation_id: str, messages: list[InputMessage]) -> list[Message]:
        async with self._runner(conversation_id) as runner:
            return await runner.add_messages(messages)

    @ray.method(enable_task_events=False)
    async def remove_part(self, conversation_id: str, message_id: str, part_index: int) -> bool:
        async with self._runner(conversation_id) as runner:
            return await runner.remove_part(message_id, part_index)

    @ray.method(enable_task_events=False)
    async def retire(self, conversation_id: str) -> None:
        """The conversation was deleted: cancel its runs and drop it now."""
        activation = self._holding(conversation_id)
        if activation is None:
            return
        if activation.state is ActivationState.active:
            await activation.runner.cancel()
        if self._holding(conversation_id) is activation:
            activation.state = ActivationState.leaving
            await self._release(activation)

    async def report(self) -> HostReport:
        node_id = node_of(self._name)
        held = self._held()
        return HostReport(
            self._name,
            node_id,
            os.getpid(),
            len(held),
            self.capacity,
            [
                ActivationReport(a.conversation_id, self._name, node_id, not a.idle, a.idle_seconds)
                for a in held
            ],
        )

    # --- stopping the server ----------------------------------------------------------------------
    @ray.method(enable_task_events=False)
    async def drain(self, seconds: float, grace_seconds: float = DRAIN_GRACE_SECONDS) -> DrainReport:
        """The server is stopping: let running turns end, for up to ``seconds``; then cancel those
        still running (each ends ``cancelled``, as a client's cancel would end it, so a reader gets
        its stop reason and the end of its stream) and wait up to ``grace_seconds`` for them to end
        and for their readers to have read it all. New sends are refused at the ingress meanwhile."""
        seen: dict[str, Activation] = {}

        def running() -> list[Activation]:
            # Scanned afresh each time: a send that reached us just before the ingress heard of the
            # drain is waited for too.
            now = [a for a in self._held() if a.runner.active is not None]
            seen.update((a.conversation_id, a) for a in now)
            return now

        await _poll_until(lambda: not running(), seconds)
        cut = running()
        for activation in cut:
            await activation.runner.cancel()
        await _poll_until(
            lambda: all(a.runner.active is None and not a.runner.readers for a in seen.values()),
            grace_seconds,
        )
        return DrainReport(
            self._name,
            finished=len(seen) - len(cut),
            cancelled=len(cut),
            still_running=sum(1 for a in seen.values() if a.runner.active is not None),
        )

    # --- passivation --------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self._policy.check_every)
            for activation in self._policy.expired(self._live.values()):
                self._passivate(activation)

    def _passivate(self, activation: Activation) -> None:
        """Mark it leaving now (the caller checked it is idle, with no ``await`` since), so every
        later call answers ``NotHere``; tell the directory and drop it in the background."""
        activation.state = ActivationState.leaving
        task = asyncio.get_running_loop().create_task(self._release(activation))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _release(self, activation: Activation) -> None:
        conversation_id = activation.conversation_id
        shard = shard_handle(self._settings, shard_of(conversation_id, self._settings.directory_shards))
        try:
            await asyncio.wait_for(shard.release.remote(conversation_id, activation.token), 30)
        except Exception as exc:  # a lost shard rebuilds from what we hold, which no longer has it
            log.warning("could not release %s from the directory: %s", conversation_id, exc)
        finally:
            if self._live.get(conversation_id) is activation:
                del self._live[conversation_id]


_Events = Callable[[ConversationRunner], AsyncIterator[list[RunEvent]]]


class _EncodedBatches:
    """A run's event batches (``events`` of the conversation's runner) encoded with
    ``encode_batch`` for the hop to the reader; ``ended`` once the batch holding the run's
    ``Done`` went. Closing it closes the batches."""

    def __init__(self, events: _Events) -> None:
        self._events = events
        self._batches: AsyncIterator[list[RunEvent]] | None = None
        self.ended = False

    def of(self, runner: ConversationRunner) -> _EncodedBatches:
        self._batches = self._events(runner)
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        assert self._batches is not None, "of(runner) first"
        batch = await anext(self._batches)
        self.ended = bool(batch) and isinstance(batch[-1], Done)
        return encode_batch(batch)

    async def aclose(self) -> None:
        if self._batches is not None:
            await self._batches.aclose()  # type: ignore[attr-defined]


async def _poll_until(done: Callable[[], bool], seconds: float) -> None:
    """Wait until ``done()`` or ``seconds`` have passed. Polled: a run's end and a reader's leaving
    have no event to wait on, and this runs once, when the server stops."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not done() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(DRAIN_POLL_SECONDS)


RemoteConversationActor = ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY, max_restarts=0)(
    ConversationActor
)
