"""``ConversationRunner``: one conversation's turns, strictly one at a time.

It owns the busy flag, the run lifecycle and the runs' event logs, and is plain asyncio: the
conversation's Ray actor hosts exactly one of these, and unit tests drive one without Ray.

A send is checked and marked busy before the first ``await``, so of two overlapping sends exactly
one starts and the other fails at once with ``ConversationBusy``. The run itself is an asyncio
task; the request that started it is only its first reader. The flag is cleared and the run row
made terminal *before* the stop reason and ``Done`` reach the log, so a client that sends again
the moment its stream ends is never refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from .agent import Agent
from .agent_loop import AgentLoop
from .clock import utcnow
from .conversation_state import ConversationState
from .errors import ConversationBusy, InvalidArgument, NotFound
from .events import (
    INTERNAL_ERROR,
    Done,
    MessageDone,
    RunError,
    RunEvent,
    RunStarted,
    Stopped,
    encode_batch,
)
from .handles import llm_config_for
from .inputs import stored_inputs
from .message import Message
from .providers.base import Provider
from .run import Run, RunStatus, StopReason, Usage
from .run_log import INTERRUPTED, RunLog, closing_stop, load_run_log
from .store import Page, Store
from .tools.toolbox import Toolbox, ToolRunner
from .turn import InputMessage, TurnRequest

log = logging.getLogger(__name__)

RECENT_LOGS = 8  # finished run logs kept for late readers
# Seconds before each retry of writing a run's end that the store failed (a store briefly away).
END_WRITE_PAUSES = (0.1, 0.5, 2.0)


@dataclass
class ActiveRun:
    run: Run
    log: RunLog
    background: bool
    usage: Usage = field(default_factory=Usage)
    task: asyncio.Task[None] | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)
    cancel_requested: bool = False
    finished: bool = False
    finishing: asyncio.Future[None] | None = None  # held so the clean-up task is not collected


class ConversationRunner:
    def __init__(
        self,
        store: Store,
        provider: Provider,
        conversation_id: str,
        keepalive_seconds: float = 20.0,
        coalesce_interval: float = 0.03,
        coalesce_deltas: int = 16,
        first_batch_hold: float = 0.1,
        compatible_providers: dict[str, str] | None = None,
        tool_runner: ToolRunner | None = None,
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.keepalive = keepalive_seconds
        self.first_batch_hold = first_batch_hold
        self.compatible_providers = compatible_providers or {}
        self.tool_runner = tool_runner
        self.loop = AgentLoop(provider, coalesce_interval, coalesce_deltas)
        self.state: ConversationState | None = None
        self.active: ActiveRun | None = None
        self.readers = 0
        # Writes still going to the store: background runs' logs, ends of runs cut short.
        self._writers: set[asyncio.Task[None]] = set()
        self.last_activity = time.monotonic()
        self._recent: OrderedDict[str, RunLog] = OrderedDict()

    # --- lifecycle ------------------------------------------------------------------------------
    async def activate(self) -> None:
        """Close out runs a previous incarnation left behind (it crashed mid-run), then load state."""
        await close_interrupted_runs(self.store, self.conversation_id)
        self.state = await ConversationState.load(self.store, self.conversation_id)

    @property
    def idle(self) -> bool:
        return self.active is None and self.readers == 0 and not self._writers

    @property
    def active_run_id(self) -> str | None:
        return self.active.run.id if self.active else None

    # --- sending ----------------------------------------------------------------------------------
    async def send(self, request: TurnRequest) -> AsyncIterator[list[RunEvent]]:
        """Start a run and follow its log. Raises ``ConversationBusy`` before yielding anything.

        A send whose ``idempotency_key`` started a run before (a client retrying) follows or
        replays that run instead, unless it failed: a failed turn left nothing, so it is retried."""
        if request.idempotency_key is not None:
            original = await self._sent_before(request.idempotency_key)
            if original is not None:
                async for batch in self._replay(original):
                    yield batch
                return
        if self.active is not None:
            raise ConversationBusy.for_run(self.active.run.id)
        run = Run(
            agent_id="",
            conversation_id=self.conversation_id,
            status=RunStatus.running,
            background=request.background,
            metadata=request.run_metadata,
            request_config=request.request_config,
            idempotency_key=request.idempotency_key,
        )
        active = self.active = ActiveRun(run, RunLog(run.id), request.background)
        self.readers += 1
        self.last_activity = time.monotonic()
        try:
            try:
                agent, blocks, toolbox = await self._prepare(active, request)
            except BaseException:
                self.active = None
                raise
            active.log.append(RunStarted(run_id=run.id, created_at=run.created_at))
            if active.background:
                self._write_through(active.log)
            # A run that outlives its request (background, or keyed for a retry) starts in a fresh
            # context: a host that cancels a departed client's request with its children (Ray
            # Serve's own proxy) must not count the run's provider calls among them. Not for the
            # others: they end with their request anyway, and a fresh context costs CPU per call.
            outlives = active.background or active.run.idempotency_key is not None
            active.task = asyncio.create_task(
                self._drive(active, request, agent, blocks, toolbox),
                context=contextvars.Context() if outlives else None,
            )
            active.task.add_done_callback(functools.partial(self._on_task_done, active))
            if active.cancel_requested:
                active.task.cancel()
            async for batch in active.log.follow(0, self.keepalive, self.first_batch_hold):
                yield batch
        finally:
            self.readers -= 1
            self.last_activity = time.monotonic()
            # A foreground run ends with its request: the client left, so stop spending on it.
            # Unless the send carried an idempotency key: that client may come back for it.
            keep = active.background or active.run.idempotency_key is not None
            if active.task is not None and not active.task.done() and not keep:
                active.task.cancel()

    async def _sent_before(self, key: str) -> Run | None:
        if self.active is not None and self.active.run.idempotency_key == key:
            return self.active.run
        found = await self.store.find_run_by_key(self.conversation_id, key)
        if self.active is not None and self.active.run.idempotency_key == key:
            return self.active.run  # the same retry raced in while the store answered
        if found is None or found.status is RunStatus.failed:
            return None
        return found

    async def _replay(self, run: Run) -> AsyncIterator[list[RunEvent]]:
        """The events of an earlier run: its log when one is at hand, else rebuilt from the
        messages it stored (a foreground run whose actor has passivated since)."""
        try:
            async for batch in self.follow(run.id):
                yield batch
            return
        except NotFound:
            pass
        rebuilt = RunLog(run.id)
        rebuilt.append(RunStarted(run_id=run.id, created_at=run.created_at))
        for message in await self.store.list_run_messages(run.id, Page(limit=10_000)):
            if message.step_id is not None:  # produced by a step, not the input
                rebuilt.append(MessageDone(message=message))
        rebuilt.close(closing_stop(run))
        yield rebuilt.events()

    async def _prepare(self, active: ActiveRun, request: TurnRequest):
        assert self.state is not None, "activate() first"
        state = self.state
        await state.refresh_conversation()
        conversation = state.conversation
        agent = await self.store.get_agent(conversation.agent_id)
        if agent is None:
            raise NotFound(f"Agent {conversation.agent_id} of conversation {self.conversation_id} not found")
        if conversation.model or conversation.model_settings:
            # A conversation may run on another model than its agent's default.
            overrides: dict[str, object] = {}
            if conversation.model:
                overrides["llm_config"] = llm_config_for(
                    conversation.model,
                    conversation.context_window_limit,
                    compatible=self.compatible_providers,
                )
            if conversation.model_settings:
                overrides["model_settings"] = conversation.model_settings
            agent = agent.model_copy(update=overrides)
        agent = self._with_request_overrides(agent, request)
        blocks = await self.store.get_blocks(agent.block_ids)
        toolbox = Toolbox(
            self.store,
            agent,
            await self.store.get_tools(agent.tool_ids),
            self.tool_runner,
            request.client_tools,
        )
        inputs = stored_inputs(request.messages, agent.id, self.conversation_id, active.run.id, state.history)
        active.run.agent_id = agent.id
        # From the row's write on (a cancel during it included), however this ends, so does the row.
        try:
            await self.store.create_run(active.run)
            if request.instructions is None:
                await state.refresh_system_message(agent, blocks)
            # The input is stored before the model is called: an accepted message is never lost.
            await state.append(inputs)
        except BaseException as exc:
            self._end_unprepared(active, exc)
            raise
        return agent, blocks, toolbox

    def _with_request_overrides(self, agent: Agent, request: TurnRequest) -> Agent:
        llm = agent.llm_config
        if request.model:
            llm = llm_config_for(request.model, compatible=self.compatible_providers)
        if request.max_tokens is not None or request.temperature is not None:
            llm = llm.model_copy(
                update={
                    "max_tokens": request.max_tokens if request.max_tokens is not None else llm.max_tokens,
                    "temperature": request.temperature
                    if request.temperature is not None
                    else llm.temperature,
                }
            )
        return agent if llm is agent.llm_config else agent.model_copy(update={"llm_config": llm})

    # --- items (messages added or removed without a run) ------------------------------------------
    async def add_messages(self, messages: Sequence[InputMessage]) -> list[Message]:
        """Append messages to the conversation without calling the model (OpenAI ``items.create``)."""
        if self.active is not None:
            raise ConversationBusy.for_run(self.active.run.id)
        assert self.state is not None
        await self.state.refresh_conversation()
        state = self.state
        stored = stored_inputs(
            messages, state.conversation.agent_id, self.conversation_id, None, state.history, "items"
        )
        await self.state.append(stored)
        self.last_activity = time.monotonic()
        return stored

    async def remove_part(self, message_id: str, part_index: int) -> bool:
        """Remove one part of a stored message (one OpenAI item); the message goes when it has none
        left. False if there is no such part in this conversation."""
        if self.active is not None:
            raise ConversationBusy.for_run(self.active.run.id)
        assert self.state is not None
        self.last_activity = time.monotonic()
        return await self.state.remove_part(message_id, part_index)

    async def _drive(self, active: ActiveRun, request: TurnRequest, agent, blocks, toolbox: Toolbox) -> None:
        run = active.run
        assert self.state is not None
        try:
            stopped = await self.loop.run(
                run, self.state, agent, blocks, request, active.log, active.usage, toolbox
            )
        except asyncio.CancelledError:
            stopped = _cancelled(active)
        except Exception as exc:  # a bug or a store failure: end the run, keep the conversation usable
            log.exception("run %s failed", run.id)
            stopped = _broken(active, exc)
        if active.cancel_requested and stopped.stop_reason is StopReason.error:
            # The cancel reached a provider call or tool first, which failed of it (a cancelled
            # Ray task raises its own error): the run was cancelled, not broken.
            stopped = _cancelled(active)
        await self._finish(active, stopped)

    def _on_task_done(self, active: ActiveRun, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran _drive at all: finish the run here.
        if not active.finished:
            stopped = _cancelled(active)
            active.finishing = asyncio.ensure_future(self._finish(active, stopped))

    async def _finish(self, active: ActiveRun, stopped: Stopped) -> None:
        """Record the run's end, free the conversation, then tell the readers.

        Invariant: once begun, this runs to its end. A cancel of the run's task that arrives
        meanwhile (a cancel, or a foreground reader leaving, just as the run ends) neither stops
        the write of the end nor skips what follows, which would leave the conversation busy and
        its readers waiting; the task ends cancelled afterwards."""
        if active.finished:
            return
        active.finished = True
        run = active.run
        # The event carries the end as the row records it, so a reader renders the run's end
        # from the log without reading the row back.
        stopped.completed_at = utcnow()
        stopped.record_on(run)
        run.total_duration_ns = time.monotonic_ns() - active.started_ns
        writing = asyncio.ensure_future(self._record_end(run))
        interrupted = False
        while not writing.done():
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                interrupted = True
        # Free the conversation first, then tell the readers: their next send must succeed.
        if self.active is active:
            self.active = None
        self.last_activity = time.monotonic()
        self._remember(active.log)
        active.log.append(stopped)
        active.log.append(Done(run_id=run.id))
        if interrupted:
            raise asyncio.CancelledError

    async def _record_end(self, run: Run) -> None:
        """Write the run's end to its row, trying a failing store again after each of
        ``END_WRITE_PAUSES``. If it still fails, the row says running until the conversation's
        next activation closes the run as interrupted (``close_interrupted_runs``)."""
        for pause in (*END_WRITE_PAUSES, None):
            try:
                await self.store.update_run(run)
                return
            except Exception:
                if pause is None:
                    log.exception("could not record the end of run %s", run.id)
                    return
                log.warning(
                    "could not record the end of run %s; again in %.1f s", run.id, pause, exc_info=True
                )
                await asyncio.sleep(pause)

    def _end_unprepared(self, active: ActiveRun, exc: BaseException) -> None:
        """End the row of a run whose send was cut short before its turn began (after the row
        was written, while the input was being stored): cancelled if its reader left, failed if
        the store or a bug failed it. In the background: the send that raises cannot wait."""
        if isinstance(exc, asyncio.CancelledError):
            stopped = _cancelled(active)
        else:
            log.error("run %s failed before its turn began", active.run.id, exc_info=exc)
            stopped = _broken(active, exc)
        stopped.completed_at = utcnow()
        stopped.record_on(active.run)
        self._in_background(self._record_end(active.run))

    def _in_background(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(write)
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)

    def _write_through(self, run_log: RunLog) -> None:
        """Append a background run's log to the store as it grows, so any replica can replay it,
        also after this actor is gone. One write at a time: what accumulates meanwhile goes in the
        next batch, so a fast stream costs few writes."""

        async def write() -> None:
            try:
                async for batch in run_log.follow(0):
                    await self.store.append_run_events(run_log.run_id, encode_batch(batch))
            except Exception:
                log.exception("could not keep the event log of run %s", run_log.run_id)

        self._in_background(write())

    # --- reading ----------------------------------------------------------------------------------
    async def follow(self, run_id: str | None, after: int = 0) -> AsyncIterator[list[RunEvent]]:
        """Follow a run's log from ``after``: the active run when ``run_id`` is None."""
        try:
            run_log = self._find_log(run_id)
        except NotFound:
            run = await self.store.get_run(run_id) if run_id else None
            stored = await load_run_log(self.store, run) if run else None
            if stored is None:
                raise
            run_log = stored
        self.readers += 1
        try:
            async for batch in run_log.follow(after, self.keepalive):
                yield batch
        finally:
            self.readers -= 1
            self.last_activity = time.monotonic()

    def _find_log(self, run_id: str | None) -> RunLog:
        if run_id is None:
            if self.active is None:
                raise InvalidArgument("No active runs found for this conversation.")
            return self.active.log
        if self.active is not None and self.active.run.id == run_id:
            return self.active.log
        found = self._recent.get(run_id)
        if found is None:
            raise NotFound(f"Run {run_id} has no stream on conversation {self.conversation_id}")
        return found

    def _remember(self, run_log: RunLog) -> None:
        self._recent[run_log.run_id] = run_log
        while len(self._recent) > RECENT_LOGS:
            self._recent.popitem(last=False)

    # --- cancelling -------------------------------------------------------------------------------
    async def cancel(self, run_id: str | None = None) -> list[str]:
        """Cancel the active run (if it is ``run_id`` when given); returns the ids cancelled."""
        active = self.active
        if active is None or (run_id is not None and active.run.id != run_id):
            return []
        active.cancel_requested = True  # still storing its input: cancelled as soon as it starts
        if active.task is not None:
            active.task.cancel()
        return [active.run.id]


def _cancelled(active: ActiveRun) -> Stopped:
    """The end of a run that was cancelled, or whose reader left."""
    return Stopped(run_id=active.run.id, stop_reason=StopReason.cancelled, usage=active.usage)


def _broken(active: ActiveRun, exc: BaseException) -> Stopped:
    """The end of a run that a bug or a store failure (``exc``) broke."""
    return Stopped(
        run_id=active.run.id,
        stop_reason=StopReason.error,
        usage=active.usage,
        error=RunError(error_type=INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}"),
    )


# --- runs cut short by a crash --------------------------------------------------------------------
STALE_BATCH = 500


async def close_interrupted_runs(store: Store, conversation_id: str | None = None) -> list[Run]:
    """End the runs a server stopped in the middle of (a crash, a killed node): those of the
    conversation, or of the whole store when None, still ``created`` or ``running``.

    Only call it where none of them can still be going on: when a conversation's actor activates
    (it is the one place its runs run), or when a server starts a Ray of its own (no actor lives).
    Each becomes ``failed`` with stop reason ``error`` and an error saying it was interrupted. Its
    turn leaves the model's context, as the turn of a run the provider failed does: the client
    never got an answer and may send it again. Its messages stay stored and listed. A background
    run's stored stream gets its end, so a replay finishes instead of waiting forever."""
    closed: list[Run] = []
    while True:
        stale = await store.list_runs(
            Page(limit=STALE_BATCH),
            conversation_id=conversation_id,
            statuses=(RunStatus.created.value, RunStatus.running.value),
        )
        for run in stale:
            await _close_interrupted(store, run)
        closed += stale
        if len(stale) < STALE_BATCH:
            return closed


async def _close_interrupted(store: Store, run: Run) -> None:
    # Each step can be repeated (another crash, right here): the run row, which makes the run be
    # found again, is the last thing written.
    if run.conversation_id is not None:
        produced = {m.id for m in await store.list_run_messages(run.id, Page(limit=10_000))}
        conversation = await store.get_conversation(run.conversation_id) if produced else None
        if conversation is not None:
            kept = [i for i in conversation.in_context_message_ids if i not in produced]
            if len(kept) < len(conversation.in_context_message_ids):
                await store.update_conversation(conversation.id, {"in_context_message_ids": kept})
    run.status = RunStatus.failed
    run.stop_reason = StopReason.error
    run.completed_at = utcnow()
    run.metadata = {**run.metadata, "error": INTERRUPTED}
    if run.background:
        # Its stored stream stops where the crash cut it. Even with nothing stored yet, a client may
        # have its id from the first event (RunStarted, seq 1), so that one is written too.
        cut = RunLog.from_chunks(run.id, await store.get_run_events(run.id))
        opening = (
            [cut.append(RunStarted(run_id=run.id, created_at=run.created_at))] if not cut.last_seq else []
        )
        ending = [*opening, *cut.close(closing_stop(run))]
        if ending:
            await store.append_run_events(run.id, encode_batch(ending))
    await store.update_run(run)
