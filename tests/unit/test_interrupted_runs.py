"""Runs a crash cut short: ``close_interrupted_runs`` (on activation and at a server's start), no Ray.

The crash is staged in the store: a run row left ``running``, the messages it had stored, the
event batches a background run had written, as a killed server leaves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.agent import Agent, LLMConfig
from runtime.conversation import Conversation
from runtime.conversation_runner import ConversationRunner, close_interrupted_runs
from runtime.events import RunEvent, RunStarted, Stopped, encode_batch
from runtime.message import Message, TextPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse
from runtime.run import Run, RunStatus, StopReason
from runtime.run_log import INTERRUPTED, RunLog
from runtime.store import Page
from runtime.store.sqlite import SqliteStore
from runtime.turn import InputMessage, TurnRequest

pytestmark = pytest.mark.timeout(10)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 5))


class EchoProvider:
    """Answers "ok" and keeps the requests it got."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return ModelResponse(parts=[TextPart(text="ok")], prompt_tokens=1, completion_tokens=1)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        yield await self.complete(request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "parley.db"))
    yield s
    s.close()


async def conversation_of_new_agent(store: SqliteStore) -> Conversation:
    agent = Agent(
        name="crash-test",
        system="You are a test agent.",
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )
    await store.create_agent(agent, [])
    conversation = Conversation(agent_id=agent.id)
    await store.create_conversation(conversation)
    return conversation


async def crashed_run(
    store: SqliteStore, conversation: Conversation, texts: list[str], background: bool = False
) -> tuple[Run, list[Message]]:
    """A run left ``running`` with the messages it had stored, in the model's context."""
    run_row = Run(
        agent_id=conversation.agent_id,
        conversation_id=conversation.id,
        status=RunStatus.running,
        background=background,
    )
    await store.create_run(run_row)
    messages = [
        Message(
            role="user" if i == 0 else "assistant",
            parts=[TextPart(text=text)],
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
            run_id=run_row.id,
        )
        for i, text in enumerate(texts)
    ]
    if messages:
        current = await store.get_conversation(conversation.id)
        assert current is not None
        in_context = [*current.in_context_message_ids, *(m.id for m in messages)]
        await store.append_messages(messages, {"in_context_message_ids": in_context})
    return run_row, messages


async def collect(batches: AsyncIterator[list[RunEvent]]) -> list[RunEvent]:
    return [event async for batch in batches for event in batch]


def test_activation_takes_an_interrupted_turn_out_of_the_context(store: SqliteStore) -> None:
    async def main() -> None:
        conversation = await conversation_of_new_agent(store)
        provider = EchoProvider()
        runner = ConversationRunner(store, provider, conversation.id)
        await runner.activate()
        await collect(runner.send(TurnRequest(messages=[InputMessage(text="first")])))
        crashed, lost = await crashed_run(store, conversation, ["Remember the word: LOST", "Okay"])

        fresh = ConversationRunner(store, provider, conversation.id)
        await fresh.activate()

        row = await store.get_run(crashed.id)
        assert row is not None and row.status is RunStatus.failed
        assert row.stop_reason is StopReason.error and row.metadata["error"] == INTERRUPTED
        stored = await store.get_conversation(conversation.id)
        assert stored is not None
        assert not {m.id for m in lost} & set(stored.in_context_message_ids)
        # Still stored and listed: only the model no longer sees it.
        listed = await store.list_messages(conversation.id, Page(limit=100, order="asc"))
        assert [m.text() for m in listed if m.role != "system"] == ["first", "ok", *(m.text() for m in lost)]
        # The next turn's model request has the complete turn and not the interrupted one.
        await collect(fresh.send(TurnRequest(messages=[InputMessage(text="again")])))
        texts = [m.text() for m in provider.requests[-1].messages]
        assert texts == ["first", "ok", "again"]

    run(main())


def test_a_background_run_cut_before_its_log_was_stored_still_replays_its_end(store: SqliteStore) -> None:
    async def main() -> None:
        conversation = await conversation_of_new_agent(store)
        crashed, _ = await crashed_run(store, conversation, ["hello"], background=True)

        runner = ConversationRunner(store, EchoProvider(), conversation.id)
        await runner.activate()
        replay = await collect(runner.follow(crashed.id))
        assert [(e.kind, e.seq) for e in replay] == [("started", 1), ("stopped", 2), ("done", 3)]
        stopped = replay[1]
        assert isinstance(stopped, Stopped) and stopped.stop_reason is StopReason.error
        assert stopped.error is not None and stopped.error.message == INTERRUPTED
        # A client that saw the opening event resumes after it and gets the end.
        assert [e.kind for e in await collect(runner.follow(crashed.id, after=1))] == ["stopped", "done"]

    run(main())


def test_closing_twice_ends_a_background_log_once(store: SqliteStore) -> None:
    async def main() -> None:
        conversation = await conversation_of_new_agent(store)
        crashed, _ = await crashed_run(store, conversation, ["hello"], background=True)
        await store.append_run_events(crashed.id, encode_batch([RunStarted(run_id=crashed.id, seq=1)]))
        assert [r.id for r in await close_interrupted_runs(store)] == [crashed.id]
        assert await close_interrupted_runs(store) == []
        stored = RunLog.from_chunks(crashed.id, await store.get_run_events(crashed.id))
        assert [e.kind for e in stored.events()] == ["started", "stopped", "done"]

    run(main())


def test_a_starting_server_closes_the_runs_of_every_conversation(store: SqliteStore) -> None:
    async def main() -> None:
        first = await conversation_of_new_agent(store)
        second = await conversation_of_new_agent(store)
        stale = [(await crashed_run(store, c, ["hi"]))[0] for c in (first, second)]
        left_created = Run(agent_id=first.agent_id, conversation_id=first.id)
        finished = Run(
            agent_id=first.agent_id,
            conversation_id=first.id,
            status=RunStatus.completed,
            stop_reason=StopReason.end_turn,
        )
        for row in (left_created, finished):
            await store.create_run(row)

        closed = await close_interrupted_runs(store)

        assert {r.id for r in closed} == {stale[0].id, stale[1].id, left_created.id}
        for row in closed:
            stored = await store.get_run(row.id)
            assert stored is not None and stored.status is RunStatus.failed
            assert stored.metadata["error"] == INTERRUPTED
        assert await store.get_run(finished.id) == finished
        assert await store.list_runs(Page(limit=10), statuses=("created", "running")) == []

    run(main())
