"""``ConversationClient``: the typed way to call a conversation, wherever it is activated.

Used by the HTTP replicas. Each method names the conversation and returns a typed result; behind
it, the client asks the conversation's directory shard for its binding (cached here), calls the
actor that serves it, and when that actor says ``NotHere`` or cannot be reached, resolves again
naming the binding it could not use, so the shard checks it and binds anew when it is stale.

It is also the boundary where Ray's errors become Parley's: an error raised inside an actor
arrives wrapped in ``RayTaskError`` and leaves here as the original exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

import ray
from ray.exceptions import RayActorError

from runtime.events import RunEvent, RunStarted, decode_batch
from runtime.message import Message
from runtime.settings import Settings
from runtime.turn import InputMessage, TurnRequest

from .activation import NotHere
from .channel import decline
from .conversation_actor import DRAIN_GRACE_SECONDS, DrainReport, HostReport
from .directory import Binding, shard_handle, shard_of, unwrap
from .placement import listed_hosts
from .streams import Handoff, handed, handoff_of, in_background, stream_values

ATTEMPTS = 30
RETRY_DELAY = 0.05  # grows with each attempt, up to MAX_RETRY_DELAY
MAX_RETRY_DELAY = 1.0
CACHED_BINDINGS = 10_000  # most recently used conversations whose binding this replica keeps
REPORT_TIMEOUT = 10.0

T = TypeVar("T")


class RunStream:
    """A started ``send`` or ``follow``: its event batches, as one async iterator.

    The first batch has already arrived when a ``RunStream`` is returned, so errors raised before
    a run starts (busy, not found) surface at the call, while an HTTP status can still be chosen.
    The rest comes over a stream channel (``handoff``), or as Ray items (``generator``, channels
    off); ``died`` asks the producing actor whether it is still there, when its channel breaks.
    """

    def __init__(
        self,
        first: list[RunEvent],
        *,
        handoff: Handoff[bytes] | None = None,
        died: Callable[[], Awaitable[object]] | None = None,
        generator: ray.ObjectRefGenerator | None = None,
    ) -> None:
        self.first = first
        # The batches after the first, until a reader takes them; and how to stop their producer
        # if nobody ever does.
        self._rest: AsyncGenerator[bytes, None] | None = None
        self._give_up: Callable[[], None] = lambda: None
        if handoff is not None and handoff.rest is not None:
            ticket = handoff.rest
            self._rest = handed(dataclasses.replace(handoff, head=()), died)
            self._give_up = lambda: in_background(decline(ticket))
        elif generator is not None:
            # Not recursive: Ray counts the provider calls a run makes as children of the call
            # that started it, and a background run must outlive its first reader.
            self._rest = stream_values(generator, recursive=False)
            self._give_up = lambda: ray.cancel(generator, recursive=False)
        self._reading: AsyncGenerator[list[RunEvent], None] | None = None

    @classmethod
    def of(cls, events: list[RunEvent]) -> RunStream:
        """A stream of events already at hand (a finished run replayed from the store)."""
        return cls(events)

    @property
    def started(self) -> RunStarted | None:
        """The run's opening event, when this stream begins with it (a ``send`` always does)."""
        return next((e for e in self.first if isinstance(e, RunStarted)), None)

    @property
    def run_id(self) -> str | None:
        started = self.started
        return started.run_id if started is not None else None

    def __aiter__(self) -> AsyncGenerator[list[RunEvent], None]:
        self._reading = self._batches()
        return self._reading

    async def _batches(self) -> AsyncGenerator[list[RunEvent], None]:
        yield self.first
        rest, self._rest = self._rest, None
        if rest is None:
            return
        try:
            while True:
                try:
                    data = await anext(rest)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise unwrap(exc) from None
                yield decode_batch(data)
        finally:
            self._reading = None
            await rest.aclose()  # leaving before the end tells the producer to stop

    def close(self) -> None:
        """The reader leaves, maybe before the end (a client gone, a background run's first
        reader): the producer stops sending to it. Safe to call at any time, and more than once."""
        rest, self._rest = self._rest, None
        reading, self._reading = self._reading, None
        if reading is not None:  # left mid-way: its clean-up tells the producer
            in_background(reading.aclose())
        if rest is not None:  # never taken by a reader
            self._give_up()


class ConversationClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._shards: dict[int, ray.actor.ActorHandle] = {}
        self._bindings: OrderedDict[str, Binding] = OrderedDict()
        self._hosts: dict[str, ray.actor.ActorHandle] = {}  # conversation actors by name

    # --- typed calls --------------------------------------------------------------------------------
    async def send(self, conversation_id: str, request: TurnRequest) -> RunStream:
        """Start a run (``ConversationBusy`` at once if one holds the conversation)."""
        if self._settings.stream_channel:
            return await self._handed(
                conversation_id, lambda host: host.send.remote(conversation_id, request)
            )
        return await self._items(
            conversation_id,
            lambda host: host.send_items.options(num_returns="streaming").remote(conversation_id, request),
        )

    async def follow(self, conversation_id: str, run_id: str | None, after: int = 0) -> RunStream:
        """Follow a run (the active one when ``run_id`` is None) from event ``after`` on."""
        if self._settings.stream_channel:
            return await self._handed(
                conversation_id, lambda host: host.follow.remote(conversation_id, run_id, after)
            )
        return await self._items(
            conversation_id,
            lambda host: host.follow_items.options(num_returns="streaming").remote(
                conversation_id, run_id, after
            ),
        )

    async def cancel(self, conversation_id: str, run_id: str | None = None) -> list[str]:
        """Cancel a run (every active one when ``run_id`` is None). A conversation that is not live
        has no run to cancel: it is not activated for this."""
        cancelled = await self._call_live(conversation_id, lambda h: h.cancel.remote(conversation_id, run_id))
        return cancelled or []

    async def add_messages(self, conversation_id: str, messages: list[InputMessage]) -> list[Message]:
        return await self._call(conversation_id, lambda h: h.add_messages.remote(conversation_id, messages))

    async def remove_part(self, conversation_id: str, message_id: str, part_index: int) -> bool:
        return await self._call(
            conversation_id, lambda h: h.remove_part.remote(conversation_id, message_id, part_index)
        )

    async def is_live(self, conversation_id: str) -> bool:
        return await self._lookup(conversation_id) is not None

    async def retire(self, conversation_id: str) -> None:
        """Stop serving a deleted conversation, if it is live (runs cancelled, activation dropped)."""
        await self._call_live(conversation_id, lambda h: h.retire.remote(conversation_id))
        self._bindings.pop(conversation_id, None)

    async def reports(self) -> list[HostReport]:
        """What every conversation actor holds (diagnostics and tests)."""

        async def report(name: str) -> HostReport | None:
            try:
                handle = ray.get_actor(name, namespace=self._settings.namespace)
                return await asyncio.wait_for(handle.report.remote(), REPORT_TIMEOUT)
            except Exception:  # starting, dying or dead: it holds nothing we can reach
                return None

        names = listed_hosts(self._settings)
        return [r for r in await asyncio.gather(*(report(n) for n in names)) if r is not None]

    async def drain(self, seconds: float) -> list[DrainReport]:
        """Every conversation actor lets its running turns end, cancelling those still running after
        ``seconds`` (``ConversationActor.drain``); the actors drain side by side."""

        async def drain(name: str) -> DrainReport | None:
            try:
                handle = ray.get_actor(name, namespace=self._settings.namespace)
                call = handle.drain.remote(seconds)
                return await asyncio.wait_for(call, seconds + DRAIN_GRACE_SECONDS + REPORT_TIMEOUT)
            except Exception:  # starting, dying or dead: nothing of it to wait for
                return None

        names = listed_hosts(self._settings)
        return [r for r in await asyncio.gather(*(drain(n) for n in names)) if r is not None]

    # --- resolving ----------------------------------------------------------------------------------
    def _shard(self, conversation_id: str) -> ray.actor.ActorHandle:
        index = shard_of(conversation_id, self._settings.directory_shards)
        handle = self._shards.get(index)
        if handle is None:
            handle = self._shards[index] = shard_handle(self._settings, index)
        return handle

    async def _resolve(self, conversation_id: str, suspect: Binding | None) -> Binding:
        cached = self._bindings.get(conversation_id)
        if cached is not None and cached is not suspect:
            self._bindings.move_to_end(conversation_id)
            return cached
        token = suspect.token if suspect is not None else None
        try:
            binding: Binding = await self._shard(conversation_id).resolve.remote(conversation_id, token)
        except Exception as exc:
            raise unwrap(exc) from None
        self._bindings[conversation_id] = binding
        if len(self._bindings) > CACHED_BINDINGS:
            self._bindings.popitem(last=False)
        return binding

    async def _lookup(self, conversation_id: str) -> Binding | None:
        cached = self._bindings.get(conversation_id)
        if cached is not None:
            return cached
        try:
            return await self._shard(conversation_id).lookup.remote(conversation_id)
        except Exception as exc:
            raise unwrap(exc) from None

    def _host(self, binding: Binding) -> ray.actor.ActorHandle:
        handle = self._hosts.get(binding.host_name)
        if handle is None:
            try:
                handle = ray.get_actor(binding.host_name, namespace=self._settings.namespace)
            except ValueError:  # no such actor any more
                raise NotHere(binding.conversation_id) from None
            self._hosts[binding.host_name] = handle
        return handle

    def _stale(self, binding: Binding, exc: BaseException) -> None:
        if self._bindings.get(binding.conversation_id) is binding:
            del self._bindings[binding.conversation_id]
        if isinstance(exc, RayActorError):  # a new actor may take the name: look it up again
            self._hosts.pop(binding.host_name, None)

    async def _call(self, conversation_id: str, invoke: Callable[[ray.actor.ActorHandle], Awaitable[T]]) -> T:
        suspect: Binding | None = None
        for attempt in range(ATTEMPTS):
            binding = await self._resolve(conversation_id, suspect)
            try:
                return await invoke(self._host(binding))
            except Exception as exc:
                if not _unusable(exc) or attempt + 1 == ATTEMPTS:
                    raise unwrap(exc) from None
                self._stale(binding, exc)
                suspect = binding
                await _backoff(attempt, exc)
        raise AssertionError("unreachable")

    async def _call_live(
        self, conversation_id: str, invoke: Callable[[ray.actor.ActorHandle], Awaitable[T]]
    ) -> T | None:
        """A call to the conversation's activation if it has one; None (and no activation) if not."""
        binding = await self._lookup(conversation_id)
        if binding is None:
            return None
        try:
            return await invoke(self._host(binding))
        except Exception as exc:
            if _unusable(exc):
                self._stale(binding, exc)
                return None
            raise unwrap(exc) from None

    async def _handed(
        self, conversation_id: str, start: Callable[[ray.actor.ActorHandle], ray.ObjectRef]
    ) -> RunStream:
        async def first_batch(host: ray.actor.ActorHandle) -> RunStream:
            # A request cancelled before the first batch (its client left) cancels the call, so a
            # foreground run stops now, not when an unclaimed offer times out. Not recursive, as
            # in ``RunStream``: a background run's provider calls count as the call's children.
            handoff: Handoff[bytes] = await handoff_of(start(host), recursive=False)
            if not handoff.head:
                return RunStream([])
            return RunStream(decode_batch(handoff.head[0]), handoff=handoff, died=host.ping.remote)

        return await self._call(conversation_id, first_batch)

    async def _items(
        self, conversation_id: str, start: Callable[[ray.actor.ActorHandle], ray.ObjectRefGenerator]
    ) -> RunStream:
        async def first_batch(host: ray.actor.ActorHandle) -> RunStream:
            generator = start(host)
            try:
                first = await (await generator.__anext__())
            except StopAsyncIteration:
                return RunStream([])
            return RunStream(decode_batch(first), generator=generator)

        return await self._call(conversation_id, first_batch)


def _unusable(exc: BaseException) -> bool:
    """The binding cannot serve the call: its actor disowns the conversation, or is unreachable."""
    return isinstance(unwrap(exc), NotHere) or isinstance(exc, RayActorError)


async def _backoff(attempt: int, exc: BaseException) -> None:
    # "Not here" is answered by a live actor: resolve again at once. An unreachable actor may be
    # a dying node: give Ray a moment to notice before asking again.
    if isinstance(exc, RayActorError):
        await asyncio.sleep(min(RETRY_DELAY * (attempt + 1), MAX_RETRY_DELAY))
