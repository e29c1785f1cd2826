"""``ConversationRunner`` over a real ``SqliteStore`` and a scripted in-test provider, no Ray."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.agent import Agent, Block, LLMConfig
from runtime.conversation import Conversation
from runtime.conversation_runner import ConversationRunner
from runtime.errors import ConversationBusy, InvalidArgument, NotFound
from runtime.events import Delta, MessageDone, RunEvent, RunStarted, Stopped, encode_batch
from runtime.message import ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ProviderError
from runtime.run import Run, RunStatus, StopReason
from runtime.run_log import INTERRUPTED, RunLog
from runtime.store import Page
from runtime.store.sqlite import SqliteStore
from runtime.tools import built_in
from runtime.tools.sandbox import ToolOutcome
from runtime.tools.tool import Tool
from runtime.turn import InputMessage, TurnRequest

pytestmark = pytest.mark.timeout(10)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 5))


# --- a scripted provider --------------------------------------------------------------------------
def reply(text: str = "Hello!", prompt: int = 10, completion: int = 3) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text=text)], prompt_tokens=prompt, completion_tokens=completion)


@dataclass
class Step:
    """What the provider does for one call."""

    response: ModelResponse = field(default_factory=reply)
    deltas: list[ModelDelta] = field(default_factory=list)  # streamed before the response
    gate: asyncio.Event | None = None  # wait for it before answering
    error: ProviderError | None = None  # raised instead of answering


class ScriptedProvider:
    """Plays ``steps`` in order, then repeats the last one."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps) or [Step()]
        self.requests: list[ModelRequest] = []
        self.entered = 0  # calls that reached the provider

    def _next(self, request: ModelRequest) -> Step:
        self.requests.append(request)
        self.entered += 1
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = self._next(request)
        if step.gate is not None:
            await step.gate.wait()
        if step.error is not None:
            raise step.error
        return step.response

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        step = self._next(request)
        for delta in step.deltas:
            yield delta
            await asyncio.sleep(0)
        if step.gate is not None:
            await step.gate.wait()
        if step.error is not None:
            raise step.error
        yield step.response


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "parley.db"))
    yield s
    s.close()


@dataclass
class World:
    store: SqliteStore
    agent: Agent
    blocks: list[Block]
    conversation: Conversation


async def make_world(store: SqliteStore) -> World:
    blocks = [Block(label="persona", value="I am terse."), Block(label="human", value="The user is Ada.")]
    agent = Agent(
        name="runner-test",
        system="You are a test agent.",
        block_ids=[b.id for b in blocks],
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )
    await store.create_agent(agent, blocks)
    conversation = Conversation(agent_id=agent.id)
    await store.create_conversation(conversation)
    return World(store, agent, blocks, conversation)


async def make_runner(
    store: SqliteStore, provider: ScriptedProvider, **kwargs: Any
) -> tuple[ConversationRunner, World]:
    world = await make_world(store)
    runner = ConversationRunner(store, provider, world.conversation.id, **kwargs)
    await runner.activate()
    return runner, world


def request(text: str = "Hi there", **kwargs: Any) -> TurnRequest:
    return TurnRequest(messages=[InputMessage(text=text)], **kwargs)


async def collect(batches: AsyncIterator[list[RunEvent]]) -> list[RunEvent]:
    return [event async for batch in batches for event in batch]


def kinds(events: list[RunEvent]) -> list[str]:
    return [e.kind for e in events]


async def started(stream: AsyncIterator[list[RunEvent]]) -> str:
    """The run id from the first batch of a send."""
    first = await anext(stream)
    assert isinstance(first[0], RunStarted)
    return first[0].run_id


async def until_entered(provider: ScriptedProvider, calls: int = 1) -> None:
    """Let the run task start and reach the provider."""
    for _ in range(100):
        if provider.entered >= calls:
            return
        await asyncio.sleep(0)
    raise AssertionError("the run never reached the provider")


def only(events: list[RunEvent], kind: type[T]) -> T:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, events
    return found[0]


# --- a turn ---------------------------------------------------------------------------------------
def test_send_yields_started_message_stopped_done(store: SqliteStore) -> None:
    async def main() -> None:
        runner, world = await make_runner(store, ScriptedProvider(Step(reply("Hello!", 10, 3))))
        events = await collect(runner.send(request("Hi there")))
        assert kinds(events) == ["started", "message", "stopped", "done"]
        assert [e.seq for e in events] == [1, 2, 3, 4]
        run_id = events[0].run_id  # type: ignore[union-attr]
        message = only(events, MessageDone)
        assert message.message.role == "assistant"
        assert message.message.text() == "Hello!"
        assert message.message.run_id == run_id
        assert not message.streamed
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.end_turn
        assert stopped.error is None
        assert (stopped.usage.step_count, stopped.usage.prompt_tokens) == (1, 10)
        assert (stopped.usage.completion_tokens, stopped.usage.total_tokens) == (3, 13)
        assert runner.active is None

        stored = await store.list_messages(world.conversation.id, Page(order="asc"))
        assert [m.role for m in stored] == ["system", "user", "assistant"]
        assert stored[1].text() == "Hi there"
        assert stored[1].run_id == run_id
        assert stored[1].otid  # an otid is assigned to input messages
        assert stored[2].id == message.message.id
        conversation = await store.get_conversation(world.conversation.id)
        assert conversation is not None
        assert conversation.in_context_message_ids == [m.id for m in stored]
        assert conversation.last_message_at is not None

        run_row = await store.get_run(run_id)
        assert run_row is not None
        assert run_row.status is RunStatus.completed
        assert run_row.stop_reason is StopReason.end_turn
        assert run_row.agent_id == world.agent.id
        assert run_row.usage.total_tokens == 13
        assert run_row.completed_at is not None

    run(main())


def test_provider_sees_compiled_system_prompt_and_history(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider()
        runner, world = await make_runner(store, provider)
        await collect(runner.send(request("first")))
        await collect(runner.send(request("second")))
        first, second = provider.requests
        assert "The user is Ada." in first.system
        assert f"- CONVERSATION_ID: {world.conversation.id}" in first.system
        assert (first.provider, first.model) == ("openai", "gpt-4o-mini")
        assert [(m.role, m.text()) for m in first.messages] == [("user", "first")]
        assert [(m.role, m.text()) for m in second.messages] == [
            ("user", "first"),
            ("assistant", "Hello!"),
            ("user", "second"),
        ]

    run(main())


def test_system_message_created_once_and_recompiled_in_place(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider()
        runner, world = await make_runner(store, provider)
        await collect(runner.send(request("one")))
        [system] = [m for m in await store.list_messages(world.conversation.id, Page()) if m.role == "system"]

        # A second turn with unchanged memory leaves the stored system message untouched.
        await collect(runner.send(request("two")))
        [same] = await store.get_messages([system.id])
        assert same.text() == system.text()

        # Change a block's value (a replacement block under the same label) between turns.
        human = Block(label="human", value="The user is Grace.")
        agent = world.agent.model_copy(update={"block_ids": [world.blocks[0].id, human.id]})
        await store.update_agent(agent, [human])
        await collect(runner.send(request("three")))

        stored = await store.list_messages(world.conversation.id, Page(order="asc"))
        systems = [m for m in stored if m.role == "system"]
        assert [m.id for m in systems] == [system.id]
        assert stored[0].id == system.id
        assert systems[0].position == system.position
        assert "The user is Grace." in systems[0].text()
        assert "The user is Ada." not in systems[0].text()
        assert "The user is Grace." in provider.requests[-1].system
        conversation = await store.get_conversation(world.conversation.id)
        assert conversation is not None
        assert conversation.in_context_message_ids == [m.id for m in stored]
        assert [m.role for m in stored] == ["system", *["user", "assistant"] * 3]

    run(main())


def test_turn_keeps_conversation_changes_made_between_turns(store: SqliteStore) -> None:
    async def main() -> None:
        runner, world = await make_runner(store, ScriptedProvider())
        await collect(runner.send(request("one")))
        current = await store.get_conversation(world.conversation.id)
        assert current is not None
        await store.update_conversation(current.id, {"summary": "renamed", "archived": True})

        await collect(runner.send(request("two")))
        after = await store.get_conversation(world.conversation.id)
        assert after is not None
        assert len(after.in_context_message_ids) == 5
        assert (after.summary, after.archived) == ("renamed", True)

    run(main())


# --- one run at a time ----------------------------------------------------------------------------
def test_second_send_while_running_is_refused_at_once(store: SqliteStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = ScriptedProvider(Step(gate=gate), Step(reply("again")))
        runner, world = await make_runner(store, provider)
        first = runner.send(request("one"))
        run_id = await started(first)
        await until_entered(provider)

        with pytest.raises(ConversationBusy) as info:
            await anext(runner.send(request("two")))
        assert info.value.run_id == run_id
        assert run_id in info.value.message
        # The refused input was not stored.
        texts = [m.text() for m in await store.list_messages(world.conversation.id, Page())]
        assert "two" not in texts

        gate.set()
        rest = await collect(first)
        assert kinds(rest) == ["message", "stopped", "done"]
        events = await collect(runner.send(request("three")))
        assert only(events, MessageDone).message.text() == "again"

    run(main())


def test_flag_is_clear_when_stopped_is_observed(store: SqliteStore) -> None:
    async def main() -> None:
        runner, _ = await make_runner(store, ScriptedProvider())
        seen_stopped = False
        follow_up: list[RunEvent] = []
        async for batch in runner.send(request("one")):
            for event in batch:
                if isinstance(event, Stopped):
                    seen_stopped = True
                    assert runner.active is None
                    # A new send at this very moment is accepted.
                    follow_up = await collect(runner.send(request("two")))
        assert seen_stopped
        assert kinds(follow_up) == ["started", "message", "stopped", "done"]

    run(main())


def test_provider_error_fails_the_run(store: SqliteStore) -> None:
    async def main() -> None:
        error = ProviderError("rate limited, slow down", "rate_limit", 429)
        runner, world = await make_runner(store, ScriptedProvider(Step(error=error)))
        events = await collect(runner.send(request("hi")))
        assert kinds(events) == ["started", "stopped", "done"]
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.error
        assert stopped.error is not None
        assert stopped.error.message == "rate limited, slow down"
        assert "rate_limit" in stopped.error.error_type
        assert runner.active is None

        run_row = await store.get_run(stopped.run_id)
        assert run_row is not None
        assert run_row.status is RunStatus.failed
        assert run_row.stop_reason is StopReason.error
        assert "rate limited" in str(run_row.metadata["error"])
        # The accepted input is kept.
        stored = await store.list_messages(world.conversation.id, Page(order="asc"))
        assert [m.role for m in stored] == ["system", "user"]

    run(main())


def test_unexpected_provider_exception_fails_the_run(store: SqliteStore) -> None:
    async def main() -> None:
        class Broken(ScriptedProvider):
            async def complete(self, request: ModelRequest) -> ModelResponse:
                raise RuntimeError("bug in adapter")

        runner, _ = await make_runner(store, Broken())
        events = await collect(runner.send(request()))
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.error
        assert stopped.error is not None
        assert "bug in adapter" in stopped.error.message
        assert runner.active is None
        run_row = await store.get_run(stopped.run_id)
        assert run_row is not None and run_row.status is RunStatus.failed

    run(main())


# --- readers leaving, background runs, following ------------------------------------------------
def test_reader_leaving_cancels_a_foreground_run(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(Step(gate=asyncio.Event()), Step())
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request())
        run_id = await started(stream)
        await until_entered(provider)
        active = runner.active
        assert active is not None and active.task is not None

        await stream.aclose()
        await asyncio.wait_for(active.task, 1)
        assert runner.active is None
        assert runner.readers == 0
        run_row = await store.get_run(run_id)
        assert run_row is not None
        assert run_row.status is RunStatus.cancelled
        assert run_row.stop_reason is StopReason.cancelled
        assert kinds(active.log.read()) == ["started", "stopped", "done"]
        # The conversation is usable again.
        assert kinds(await collect(runner.send(request()))) == ["started", "message", "stopped", "done"]

    run(main())


def test_reader_leaving_right_after_started_releases_the_conversation(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(Step(gate=asyncio.Event()))
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request())
        run_id = await started(stream)
        active = runner.active
        assert active is not None and active.task is not None
        await stream.aclose()  # no await in between: the task has not started yet
        await asyncio.wait([active.task], timeout=1)
        assert runner.active is None
        run_row = await store.get_run(run_id)
        assert run_row is not None and run_row.status is RunStatus.cancelled

    run(main())


def test_cancel_right_after_start_releases_the_conversation(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(Step(gate=asyncio.Event()))
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request(background=True))
        run_id = await started(stream)
        active = runner.active
        assert active is not None and active.task is not None
        assert await runner.cancel() == [run_id]
        await asyncio.wait([active.task], timeout=1)
        assert runner.active is None
        rest = await asyncio.wait_for(collect(stream), 1)
        assert only(rest, Stopped).stop_reason is StopReason.cancelled

    run(main())


def test_background_run_survives_its_reader(store: SqliteStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = ScriptedProvider(Step(gate=gate, response=reply("later")))
        runner, world = await make_runner(store, provider)
        stream = runner.send(request(background=True))
        run_id = await started(stream)
        await until_entered(provider)
        active = runner.active
        assert active is not None and active.task is not None

        await stream.aclose()
        await asyncio.sleep(0.01)
        assert not active.task.done()
        assert runner.active_run_id == run_id
        assert runner.readers == 0

        gate.set()
        await asyncio.wait_for(active.task, 1)
        run_row = await store.get_run(run_id)
        assert run_row is not None
        assert run_row.status is RunStatus.completed
        assert run_row.background
        stored = await store.list_messages(world.conversation.id, Page(limit=1))
        assert stored[0].text() == "later"
        # The whole log is still there for a late reader.
        replay = await collect(runner.follow(run_id))
        assert kinds(replay) == ["started", "message", "stopped", "done"]

    run(main())


def test_background_run_log_is_in_the_store_while_it_runs(store: SqliteStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = ScriptedProvider(Step(gate=gate, response=reply("later")))
        runner, world = await make_runner(store, provider)
        stream = runner.send(request(background=True))
        run_id = await started(stream)
        await stream.aclose()
        await until_entered(provider)
        for _ in range(100):  # the writer appends in the background
            if await store.get_run_events(run_id):
                break
            await asyncio.sleep(0.01)
        partial = RunLog.from_chunks(run_id, await store.get_run_events(run_id))
        assert kinds(partial.events()) == ["started"]
        assert not runner.idle  # a run, and a log still to write

        gate.set()
        active = runner.active
        assert active is not None and active.task is not None
        await asyncio.wait_for(active.task, 1)
        for _ in range(100):
            if runner.idle:
                break
            await asyncio.sleep(0.01)
        assert runner.idle
        # Another actor (after this one passivated) replays it from the store alone.
        fresh = ConversationRunner(store, ScriptedProvider(), world.conversation.id)
        await fresh.activate()
        replay = await collect(fresh.follow(run_id, after=1))
        assert kinds(replay) == ["message", "stopped", "done"]
        assert [e.seq for e in replay] == [2, 3, 4]

    run(main())


def test_a_background_log_cut_by_a_crash_is_closed_on_activation(store: SqliteStore) -> None:
    async def main() -> None:
        world = await make_world(store)
        crashed = Run(
            agent_id=world.agent.id,
            conversation_id=world.conversation.id,
            status=RunStatus.running,
            background=True,
        )
        await store.create_run(crashed)
        await store.append_run_events(crashed.id, encode_batch([RunStarted(run_id=crashed.id, seq=1)]))

        runner = ConversationRunner(store, ScriptedProvider(), world.conversation.id)
        await runner.activate()
        replay = await collect(runner.follow(crashed.id))
        assert kinds(replay) == ["started", "stopped", "done"]
        stopped = only(replay, Stopped)
        assert stopped.stop_reason is StopReason.error
        assert stopped.error is not None and stopped.error.message == INTERRUPTED
        # The closing events are stored too, for replicas that replay without the actor.
        stored = RunLog.from_chunks(crashed.id, await store.get_run_events(crashed.id))
        assert kinds(stored.events()) == ["started", "stopped", "done"]

    run(main())


def test_follow_active_run_from_a_second_reader(store: SqliteStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = ScriptedProvider(Step(gate=gate))
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request())
        run_id = await started(stream)
        await until_entered(provider)
        follower = asyncio.ensure_future(collect(runner.follow(None)))
        await asyncio.sleep(0)
        assert runner.readers == 2
        gate.set()
        first = await collect(stream)
        followed = await asyncio.wait_for(follower, 1)
        assert kinds(followed) == ["started", "message", "stopped", "done"]
        assert [e.seq for e in followed][1:] == [e.seq for e in first]
        assert {getattr(e, "run_id", run_id) for e in followed} == {run_id}
        assert runner.readers == 0

    run(main())


def test_follow_without_active_run_is_invalid(store: SqliteStore) -> None:
    async def main() -> None:
        runner, _ = await make_runner(store, ScriptedProvider())
        with pytest.raises(InvalidArgument):
            await anext(runner.follow(None))
        assert runner.readers == 0

    run(main())


def test_follow_unknown_run_is_not_found(store: SqliteStore) -> None:
    async def main() -> None:
        runner, _ = await make_runner(store, ScriptedProvider())
        with pytest.raises(NotFound):
            await anext(runner.follow("run-unknown"))

    run(main())


def test_follow_finished_run_replays_after_seq(store: SqliteStore) -> None:
    async def main() -> None:
        runner, _ = await make_runner(store, ScriptedProvider())
        events = await collect(runner.send(request()))
        run_id = events[0].run_id  # type: ignore[union-attr]
        for after in range(len(events) + 1):
            replay = await collect(runner.follow(run_id, after=after))
            assert [e.seq for e in replay] == [e.seq for e in events if e.seq > after]
            assert replay == events[after:]

    run(main())


# --- cancelling and activation --------------------------------------------------------------------
def test_cancel_active_run(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(Step(gate=asyncio.Event()))
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request())
        run_id = await started(stream)
        await until_entered(provider)

        assert await runner.cancel("run-someone-else") == []
        assert await runner.cancel() == [run_id]
        rest = await asyncio.wait_for(collect(stream), 1)
        assert kinds(rest) == ["stopped", "done"]
        stopped = only(rest, Stopped)
        assert stopped.stop_reason is StopReason.cancelled
        assert runner.active is None
        run_row = await store.get_run(run_id)
        assert run_row is not None and run_row.status is RunStatus.cancelled
        assert await runner.cancel() == []

    run(main())


def test_activate_fails_runs_left_running(store: SqliteStore) -> None:
    async def main() -> None:
        world = await make_world(store)
        other = Conversation(agent_id=world.agent.id)
        await store.create_conversation(other)
        left_running = Run(
            agent_id=world.agent.id, conversation_id=world.conversation.id, status=RunStatus.running
        )
        left_created = Run(agent_id=world.agent.id, conversation_id=world.conversation.id)
        finished = Run(
            agent_id=world.agent.id,
            conversation_id=world.conversation.id,
            status=RunStatus.completed,
            stop_reason=StopReason.end_turn,
        )
        elsewhere = Run(agent_id=world.agent.id, conversation_id=other.id, status=RunStatus.running)
        for r in (left_running, left_created, finished, elsewhere):
            await store.create_run(r)

        runner = ConversationRunner(store, ScriptedProvider(), world.conversation.id)
        await runner.activate()

        for stale in (left_running, left_created):
            row = await store.get_run(stale.id)
            assert row is not None
            assert row.status is RunStatus.failed
            assert row.stop_reason is StopReason.error
            assert row.completed_at is not None
            assert row.metadata["error"] == INTERRUPTED
            assert "interrupted" in row.metadata["error"]
        assert await store.get_run(finished.id) == finished
        assert await store.get_run(elsewhere.id) == elsewhere

    run(main())


def test_activate_unknown_conversation_is_not_found(store: SqliteStore) -> None:
    async def main() -> None:
        runner = ConversationRunner(store, ScriptedProvider(), "conv-missing")
        with pytest.raises(NotFound):
            await runner.activate()

    run(main())


def test_send_when_agent_is_gone_is_not_found_and_frees_the_flag(store: SqliteStore) -> None:
    async def main() -> None:
        runner, world = await make_runner(store, ScriptedProvider())
        await store.delete_agent(world.agent.id)
        with pytest.raises(NotFound):
            await anext(runner.send(request()))
        assert runner.active is None
        assert runner.readers == 0

    run(main())


# --- token streaming and usage --------------------------------------------------------------------
def test_stream_tokens_emits_deltas_of_the_final_message(store: SqliteStore) -> None:
    async def main() -> None:
        step = Step(
            deltas=[
                ModelDelta("reasoning", 0, "Let me "),
                ModelDelta("reasoning", 0, "think."),
                ModelDelta("text", 1, "Hel"),
                ModelDelta("text", 1, "lo"),
                ModelDelta("text", 1, "!"),
            ],
            response=ModelResponse(
                parts=[ReasoningPart(text="Let me think."), TextPart(text="Hello!")],
                prompt_tokens=7,
                completion_tokens=5,
            ),
        )
        runner, _ = await make_runner(store, ScriptedProvider(step), coalesce_interval=0.001)
        events = await collect(runner.send(request(stream_tokens=True)))
        assert events[0].kind == "started"
        assert kinds(events)[-3:] == ["message", "stopped", "done"]
        deltas = [e for e in events if isinstance(e, Delta)]
        assert deltas
        assert set(kinds(events)[1:-3]) == {"delta"}
        done = only(events, MessageDone)
        assert done.streamed
        assert {d.message_id for d in deltas} == {done.message.id}
        assert "".join(d.text for d in deltas if d.part == "reasoning") == "Let me think."
        assert "".join(d.text for d in deltas if d.part == "text") == "Hello!"
        assert {d.index for d in deltas if d.part == "text"} == {1}
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        usage = only(events, Stopped).usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.step_count) == (7, 5, 1)
        stored = await store.get_messages([done.message.id])
        assert [m.text() for m in stored] == ["Hello!"]
        run_row = await store.get_run(done.message.run_id or "")
        assert run_row is not None and run_row.ttft_ns is not None

    run(main())


def test_stream_tokens_provider_error_mid_stream(store: SqliteStore) -> None:
    async def main() -> None:
        step = Step(
            deltas=[ModelDelta("text", 0, "partial")], error=ProviderError("connection reset", "connection")
        )
        runner, world = await make_runner(store, ScriptedProvider(step), coalesce_interval=0.001)
        events = await collect(runner.send(request(stream_tokens=True)))
        assert kinds(events) == ["started", "delta", "stopped", "done"]
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.error
        assert stopped.error is not None and stopped.error.message == "connection reset"
        assert runner.active is None
        stored = await store.list_messages(world.conversation.id, Page(order="asc"))
        assert [m.role for m in stored] == ["system", "user"]

    run(main())


def test_usage_accumulates_over_steps(store: SqliteStore) -> None:
    async def main() -> None:
        tool_turn = ModelResponse(
            parts=[TextPart(text="checking"), ToolCallPart(id="call_1", name="lookup", arguments="{}")],
            prompt_tokens=5,
            completion_tokens=2,
            finish="tool_calls",
        )
        provider = ScriptedProvider(Step(response=tool_turn))
        runner, _ = await make_runner(store, provider)
        events = await collect(runner.send(request(max_steps=3)))
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.max_steps
        done = [e.message for e in events if isinstance(e, MessageDone)]
        # Each step: the model's call, then the (failed: no such tool) result it gets back.
        assert [m.role for m in done] == ["assistant", "tool"] * 3
        assert all(m.parts[0].status == "error" for m in done if m.role == "tool")
        usage = stopped.usage
        assert (usage.step_count, usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            3,
            15,
            6,
            21,
        )
        run_row = await store.get_run(stopped.run_id)
        assert run_row is not None
        assert run_row.usage == usage
        assert run_row.status is RunStatus.completed

    run(main())


def test_usage_is_per_run(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(
            Step(reply(prompt=10, completion=3)), Step(reply(prompt=20, completion=4))
        )
        runner, _ = await make_runner(store, provider)
        first = only(await collect(runner.send(request())), Stopped).usage
        second = only(await collect(runner.send(request())), Stopped).usage
        assert (first.total_tokens, first.step_count) == (13, 1)
        assert (second.total_tokens, second.step_count) == (24, 1)

    run(main())


# --- tools ----------------------------------------------------------------------------------------
class RecordingToolRunner:
    """Stands in for the Ray task runner: answers from a function, records the calls."""

    def __init__(self, answer: Any = "6") -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls.append((tool.name, arguments))
        if isinstance(self.answer, ToolOutcome):
            return self.answer
        return ToolOutcome(status="success", content=str(self.answer), stdout=["rolled\n"])


ROLL_DICE = Tool(
    name="roll_dice",
    source_code="def roll_dice(num_sides: int) -> int:\n    return 6\n",
    json_schema={
        "name": "roll_dice",
        "description": "Roll a die.",
        "parameters": {"type": "object", "properties": {"num_sides": {"type": "integer"}}},
    },
)


def call_turn(name: str, arguments: str, text: str = "") -> ModelResponse:
    parts: list[Any] = [TextPart(text=text)] if text else []
    parts.append(ToolCallPart(id=f"call_{name}", name=name, arguments=arguments))
    return ModelResponse(parts=parts, prompt_tokens=4, completion_tokens=2, finish="tool_calls")


async def attach(store: SqliteStore, world: World, *tools: Tool) -> None:
    stored = [await store.upsert_tool(t) for t in tools]
    world.agent.tool_ids = [t.id for t in stored]
    await store.update_agent(world.agent)


def test_tool_call_runs_and_the_loop_continues(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(
            Step(response=call_turn("roll_dice", '{"num_sides": 16}', "Rolling.")), Step(reply("You got 6."))
        )
        tools = RecordingToolRunner()
        runner, world = await make_runner(store, provider, tool_runner=tools)
        await attach(store, world, ROLL_DICE)
        events = await collect(runner.send(request("roll a die")))
        done = [e.message for e in events if isinstance(e, MessageDone)]
        assert [m.role for m in done] == ["assistant", "tool", "assistant"]
        assert tools.calls == [("roll_dice", {"num_sides": 16})]
        returned = done[1].parts[0]
        assert isinstance(returned, ToolReturnPart)
        assert (returned.tool_call_id, returned.content, returned.status) == (
            "call_roll_dice",
            "6",
            "success",
        )
        assert returned.stdout == ["rolled\n"]
        assert done[0].step_id == done[1].step_id != done[2].step_id
        assert only(events, Stopped).stop_reason is StopReason.end_turn
        assert only(events, Stopped).usage.step_count == 2
        # The model was offered the tool, and saw its result on the second call.
        assert [t.name for t in provider.requests[0].tools] == ["roll_dice"]
        assert provider.requests[1].messages[-1].role == "tool"
        stored = await store.list_messages(world.conversation.id, Page(order="asc"))
        assert [m.role for m in stored] == ["system", "user", "assistant", "tool", "assistant"]

    run(main())


def test_tool_errors_reach_the_model_not_the_run(store: SqliteStore) -> None:
    async def main() -> None:
        failing = ToolOutcome(status="error", content="ValueError: no dice", stderr=["Traceback ...\n"])
        provider = ScriptedProvider(
            Step(response=call_turn("roll_dice", "{not json")),
            Step(response=call_turn("missing_tool", "{}")),
            Step(response=call_turn("roll_dice", "{}")),
            Step(reply("Sorry.")),
        )
        runner, world = await make_runner(store, provider, tool_runner=RecordingToolRunner(failing))
        await attach(store, world, ROLL_DICE)
        events = await collect(runner.send(request("roll")))
        returns = [
            e.message.parts[0] for e in events if isinstance(e, MessageDone) and e.message.role == "tool"
        ]
        assert [r.status for r in returns] == ["error", "error", "error"]
        assert "not valid JSON" in returns[0].content
        assert "no tool named 'missing_tool'" in returns[1].content
        assert returns[2].content == "ValueError: no dice" and returns[2].stderr == ["Traceback ...\n"]
        assert only(events, Stopped).stop_reason is StopReason.end_turn
        assert runner.active is None

    run(main())


def test_memory_tool_edits_the_block_and_the_next_prompt(store: SqliteStore) -> None:
    async def main() -> None:
        insert = call_turn("memory_insert", '{"label": "human", "new_string": "Likes tea."}')
        provider = ScriptedProvider(Step(response=insert), Step(reply("Noted.")))
        runner, world = await make_runner(store, provider)
        await attach(store, world, *built_in.definitions())
        events = await collect(runner.send(request("I like tea")))
        returned = [
            e.message.parts[0] for e in events if isinstance(e, MessageDone) and e.message.role == "tool"
        ]
        assert returned[0].status == "success", returned
        [human] = [b for b in await store.get_blocks(world.agent.block_ids) if b.label == "human"]
        assert human.value == "The user is Ada.\nLikes tea."
        assert "Likes tea." not in provider.requests[0].system
        assert "Likes tea." in provider.requests[1].system

    run(main())


def test_cancel_during_a_tool_call_ends_the_run(store: SqliteStore) -> None:
    async def main() -> None:
        class HangingRunner:
            entered = asyncio.Event()

            async def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
                self.entered.set()
                await asyncio.sleep(60)
                raise AssertionError("not reached")

        provider = ScriptedProvider(Step(response=call_turn("roll_dice", "{}")))
        hanging = HangingRunner()
        runner, world = await make_runner(store, provider, tool_runner=hanging)
        await attach(store, world, ROLL_DICE)
        stream = runner.send(request("roll", background=True))
        await started(stream)
        await asyncio.wait_for(hanging.entered.wait(), 2)
        assert await runner.cancel() != []
        rest = await collect(stream)
        assert only(rest, Stopped).stop_reason is StopReason.cancelled
        assert runner.active is None

    run(main())


# --- idempotent sends -----------------------------------------------------------------------------
def test_a_retried_key_replays_the_finished_run_without_a_new_turn(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(Step(response=reply("once")))
        runner, world = await make_runner(store, provider)
        first = await collect(runner.send(request("hello", idempotency_key="k1")))
        again = await collect(runner.send(request("hello", idempotency_key="k1")))
        assert again == first
        assert provider.entered == 1
        history = await store.list_messages(world.conversation.id, Page(limit=100, order="asc"))
        assert [m.text() for m in history if m.role != "system"] == ["hello", "once"]
        # Another key is another turn.
        await collect(runner.send(request("hello", idempotency_key="k2")))
        assert provider.entered == 2

    run(main())


def test_a_retried_key_follows_the_run_in_flight_instead_of_409(store: SqliteStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        provider = ScriptedProvider(Step(gate=gate, response=reply("slow")))
        runner, _ = await make_runner(store, provider)
        stream = runner.send(request(idempotency_key="k"))
        run_id = await started(stream)
        await stream.aclose()  # the client's connection dropped: a keyed run keeps going
        await until_entered(provider)
        with pytest.raises(ConversationBusy):
            await anext(runner.send(request()))  # a different send is still refused
        retry = asyncio.ensure_future(collect(runner.send(request(idempotency_key="k"))))
        await asyncio.sleep(0.01)
        gate.set()
        events = await asyncio.wait_for(retry, 1)
        assert kinds(events) == ["started", "message", "stopped", "done"]
        assert events[0].run_id == run_id  # type: ignore[union-attr]
        assert only(events, MessageDone).message.text() == "slow"
        assert provider.entered == 1

    run(main())


def test_a_key_whose_run_failed_starts_a_new_run(store: SqliteStore) -> None:
    async def main() -> None:
        provider = ScriptedProvider(
            Step(error=ProviderError("upstream down", "server", status=500)), Step(response=reply("ok"))
        )
        runner, _ = await make_runner(store, provider)
        failed = await collect(runner.send(request(idempotency_key="k")))
        assert only(failed, Stopped).stop_reason is StopReason.error
        retried = await collect(runner.send(request(idempotency_key="k")))
        assert only(retried, Stopped).stop_reason is StopReason.end_turn
        assert retried[0].run_id != failed[0].run_id  # type: ignore[union-attr]

    run(main())


def test_a_retried_key_is_replayed_from_the_store_by_a_later_actor(store: SqliteStore) -> None:
    async def main() -> None:
        runner, world = await make_runner(store, ScriptedProvider(Step(response=reply("kept"))))
        first = await collect(runner.send(request(idempotency_key="k")))
        later = ConversationRunner(store, ScriptedProvider(), world.conversation.id)
        await later.activate()
        again = await collect(later.send(request(idempotency_key="k")))
        assert kinds(again) == kinds(first)
        assert only(again, MessageDone).message == only(first, MessageDone).message
        assert only(again, Stopped).stop_reason is StopReason.end_turn
        assert only(again, Stopped).usage == only(first, Stopped).usage

    run(main())


# --- recording a run's end ------------------------------------------------------------------------
def run_then_close(store: SqliteStore, coro: Coroutine[Any, Any, None]) -> None:
    """``run`` for a test that makes its own store."""
    try:
        run(coro)
    finally:
        store.close()


async def sends_again(runner: ConversationRunner) -> None:
    """The conversation is free: a next send runs to its end."""
    events = await asyncio.wait_for(collect(runner.send(request("again"))), 1)
    assert only(events, Stopped).stop_reason is StopReason.end_turn


class EndGatedStore(SqliteStore):
    """Holds each write of a run's end (``update_run`` of a run no longer running) until ``gate``
    is set, and fails the first ``failures`` of them."""

    def __init__(self, path: str, failures: int = 0) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.ending = asyncio.Event()
        self.failures = failures
        self.end_writes = 0

    async def update_run(self, run: Run) -> None:
        if run.status is not RunStatus.running:
            self.end_writes += 1
            self.ending.set()
            await self.gate.wait()
            if self.end_writes <= self.failures:
                raise OSError("the store is away")
        await super().update_run(run)


@pytest.mark.parametrize("how", ["cancel", "reader leaves"])
def test_a_cancel_while_the_end_is_recorded_still_ends_the_run(tmp_path: Path, how: str) -> None:
    """The run's task is cancelled while it writes the run's end (a cancel, or the reader of a
    foreground run leaving, just then): the end is still recorded, the readers still get it, and
    the conversation is free for the next send."""

    store = EndGatedStore(str(tmp_path / "parley.db"))

    async def main() -> None:
        runner, _ = await make_runner(store, ScriptedProvider(Step(reply("done"))))
        stream = runner.send(request())
        run_id = await started(stream)
        reading = asyncio.ensure_future(collect(stream))
        await asyncio.wait_for(store.ending.wait(), 1)
        if how == "cancel":
            assert await runner.cancel() == [run_id]
        else:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            await stream.aclose()
        await asyncio.sleep(0.01)
        store.gate.set()
        if how == "cancel":
            rest = await asyncio.wait_for(reading, 1)
            assert only(rest, Stopped).stop_reason is StopReason.end_turn
        for _ in range(100):
            if runner.active is None:
                break
            await asyncio.sleep(0.01)
        assert runner.active is None, "the conversation stayed busy"
        row = await store.get_run(run_id)
        assert row is not None and row.status is RunStatus.completed
        await sends_again(runner)

    run_then_close(store, main())


def test_a_failing_write_of_the_end_is_retried(tmp_path: Path) -> None:
    """A store that fails the run's end twice, then takes it: the row records the end."""

    store = EndGatedStore(str(tmp_path / "parley.db"), failures=2)

    async def main() -> None:
        store.gate.set()
        runner, _ = await make_runner(store, ScriptedProvider(Step(reply("done"))))
        events = await collect(runner.send(request()))
        stopped = only(events, Stopped)
        assert stopped.stop_reason is StopReason.end_turn
        assert store.end_writes == 3
        row = await store.get_run(stopped.run_id)
        assert row is not None and row.status is RunStatus.completed
        assert runner.active is None

    run_then_close(store, main())


class InputGatedStore(SqliteStore):
    """Holds the write of a turn's input (``append_messages`` with a user message) until ``gate``
    is set, and fails it when ``fail`` is set."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.fail = False

    async def append_messages(self, messages, conversation_fields=None) -> None:  # type: ignore[override]
        if any(m.role == "user" for m in messages):
            self.writing.set()
            await self.gate.wait()
            if self.fail:
                raise OSError("the store is away")
        await super().append_messages(messages, conversation_fields)


@pytest.mark.parametrize("how", ["reader leaves", "store fails"])
def test_a_send_cut_short_while_storing_its_input_ends_its_run(tmp_path: Path, how: str) -> None:
    """The run's row is written before its input. A send cut short in between (its reader leaves,
    or the store fails the input) ends that row, as cancelled or failed, instead of leaving it
    running, and the conversation is free."""
    store = InputGatedStore(str(tmp_path / "parley.db"))

    async def main() -> None:
        runner, world = await make_runner(store, ScriptedProvider())
        reading = asyncio.ensure_future(collect(runner.send(request())))
        await asyncio.wait_for(store.writing.wait(), 1)
        if how == "reader leaves":
            reading.cancel()
        else:
            store.fail = True
        store.gate.set()
        await asyncio.gather(reading, return_exceptions=True)
        assert runner.active is None
        [row] = await store.list_runs(Page(), conversation_id=world.conversation.id)
        if how == "reader leaves":
            assert (row.status, row.stop_reason) == (RunStatus.cancelled, StopReason.cancelled)
        else:
            assert (row.status, row.stop_reason) == (RunStatus.failed, StopReason.error)
        store.fail = False
        await sends_again(runner)

    run_then_close(store, main())
