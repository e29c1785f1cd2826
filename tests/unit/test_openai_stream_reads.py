"""A response rendered from its run's events equals the one read from the store, byte for byte, and
the replica reads nothing from the store while it streams one.

``create_response`` runs here over a real ``ConversationRunner`` and ``SqliteStore`` with a
scripted provider, no Ray: the run's event batches cross to the "replica" JSON-encoded, as between
processes. The store-based rendering (today's fallback) of the same run is the reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from actors.conversation_client import RunStream
from runtime.conversation import Conversation
from runtime.conversation_runner import ConversationRunner
from runtime.events import (
    INTERNAL_ERROR,
    Done,
    RunError,
    RunEvent,
    RunStarted,
    Stopped,
    decode_batch,
    encode_batch,
)
from runtime.limits import InputLimits
from runtime.message import ReasoningPart, TextPart, ToolCallPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ProviderError
from runtime.run import Run, StopReason, Usage
from runtime.settings import Settings
from runtime.store.sqlite import SqliteStore
from runtime.turn import TurnRequest
from serve_app.letta.render import StreamRenderer
from serve_app.openai import ids
from serve_app.openai.home import home_agent
from serve_app.openai.response_routes import CreateResponse, _events, create_response, response_for
from serve_app.openai.responses import ResponseEnd

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


# --- a scripted provider --------------------------------------------------------------------------
@dataclass
class Step:
    response: ModelResponse | None = None
    deltas: list[ModelDelta] = field(default_factory=list)
    error: ProviderError | None = None


class ScriptedProvider:
    """Plays ``steps`` in order, then repeats the last one."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)

    def _next(self) -> Step:
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = self._next()
        if step.error is not None:
            raise step.error
        assert step.response is not None
        return step.response

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        step = self._next()
        for delta in step.deltas:
            yield delta
            await asyncio.sleep(0)
        if step.error is not None:
            raise step.error
        assert step.response is not None
        yield step.response


# --- the replica's side ---------------------------------------------------------------------------
class CountingStore:
    """The store as the replica sees it, recording every call made through it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def crossed(batch: list[RunEvent]) -> list[RunEvent]:
    """A batch as it reaches another process."""
    return decode_batch(encode_batch(batch))


def as_written_before(event: RunEvent) -> RunEvent:
    """The event as a runner of the version before this change wrote it (no new fields)."""
    if isinstance(event, RunStarted | Stopped):
        return event.model_copy(
            update={"created_at": None} if isinstance(event, RunStarted) else {"completed_at": None}
        )
    return event


class LocalStream(RunStream):
    """A ``send`` of the runner in this process, its batches crossing as JSON."""

    def __init__(self, first: list[RunEvent], rest: AsyncIterator[list[RunEvent]], legacy: bool) -> None:
        super().__init__(first)
        self._rest = rest
        self._legacy = legacy

    async def __aiter__(self) -> AsyncIterator[list[RunEvent]]:
        yield self.first
        async for batch in self._rest:
            yield self._cross(batch)

    def _cross(self, batch: list[RunEvent]) -> list[RunEvent]:
        out = crossed(batch)
        return [as_written_before(e) for e in out] if self._legacy else out


class LocalConversations:
    def __init__(self, runner: ConversationRunner, legacy: bool) -> None:
        self.runner = runner
        self.legacy = legacy
        self.run_id: str | None = None

    async def send(self, conversation_id: str, turn: TurnRequest) -> RunStream:
        batches = self.runner.send(turn)
        stream = LocalStream([], batches, self.legacy)
        stream.first = stream._cross(await anext(batches))
        self.run_id = stream.run_id
        return stream


@dataclass
class Outcome:
    wire: bytes | dict[str, Any]  # the SSE bytes, or the JSON response
    reference: bytes | dict[str, Any]  # the same run rendered from the store
    replica_calls: list[str]  # store calls the replica made once the run was sent


async def respond(
    tmp_path: Path, steps: list[Step], fields: dict[str, Any], legacy: bool = False, key: str | None = None
) -> Outcome:
    store = SqliteStore(str(tmp_path / "parley.db"))
    try:
        settings = Settings(data_dir=str(tmp_path))
        replica_store = CountingStore(store)
        services: Any = SimpleNamespace(
            settings=settings, store=replica_store, limits=InputLimits.of(settings)
        )
        conversation = Conversation(agent_id=(await home_agent(services)).id)
        await store.create_conversation(conversation)
        runner = ConversationRunner(store, ScriptedProvider(*steps), conversation.id)  # type: ignore[arg-type]
        await runner.activate()
        services.conversations = conversations = LocalConversations(runner, legacy)
        body = CreateResponse.model_validate(
            {"model": "gpt-4o-mini", "conversation": ids.to_openai_conversation(conversation.id), **fields}
        )
        replica_store.calls.clear()
        response = await create_response(body, services, key)
        assert replica_store.calls[:1] == ["get_conversation"]  # _target: the conversation given
        del replica_store.calls[:1]
        run_id = conversations.run_id
        assert run_id is not None
        plain: Any = SimpleNamespace(store=store)
        if isinstance(response, dict):
            stored = await store.get_run(run_id)
            assert stored is not None
            return Outcome(response, await response_for(plain, stored), replica_store.calls)
        wire = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[union-attr]
        calls = list(replica_store.calls)
        log = [e for batch in [b async for b in runner.follow(run_id)] for e in batch]
        reference = b"".join([c async for c in _events(plain, RunStream.of(crossed(log)), run_id)])
        return Outcome(wire, reference, calls)
    finally:
        store.close()


# --- scenarios --------------------------------------------------------------------------------------
def text_reply() -> list[Step]:
    deltas = [ModelDelta(part="text", index=0, text=t) for t in ("Hel", "lo ", "Ada.")]
    response = ModelResponse(parts=[TextPart(text="Hello Ada.")], prompt_tokens=12, completion_tokens=4)
    return [Step(response, deltas)]


def client_tool_calls() -> list[Step]:
    deltas = [
        ModelDelta(part="reasoning", index=0, text="Two lookups."),
        ModelDelta(part="tool_call", index=2, text='{"q": ', tool_call_id="call_a", tool_name="lookup"),
        ModelDelta(part="tool_call", index=2, text='"a"}', tool_call_id="call_a", tool_name="lookup"),
    ]
    response = ModelResponse(
        parts=[
            ReasoningPart(text="Two lookups."),
            TextPart(text=""),
            ToolCallPart(id="call_a", name="lookup", arguments='{"q": "a"}'),
            ToolCallPart(id="call_b", name="lookup", arguments='{"q": "b"}'),
        ],
        prompt_tokens=30,
        completion_tokens=9,
        finish="tool_calls",
    )
    return [Step(response, deltas)]


def cut_off() -> list[Step]:
    response = ModelResponse(
        parts=[TextPart(text="One, two")], prompt_tokens=5, completion_tokens=2, finish="length"
    )
    return [Step(response, [ModelDelta(part="text", index=0, text="One, two")])]


def rate_limited() -> list[Step]:
    return [Step(error=ProviderError("slow down", "rate_limit", status=429))]


TOOLS = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
SCENARIOS: dict[str, tuple[Callable[[], list[Step]], dict[str, Any]]] = {
    "text": (text_reply, {"input": "Hi", "metadata": {"topic": "demo"}, "instructions": "Be brief."}),
    "client_tools": (client_tool_calls, {"input": "Look up a and b", "tools": TOOLS, "temperature": 0.5}),
    "incomplete": (cut_off, {"input": "Count", "max_output_tokens": 2}),
    "failed": (rate_limited, {"input": "Hi", "text": {"format": {"type": "text"}}}),
    # JSON parsing takes NaN; the store keeps it (and so echoes it) as null.
    "nan_echo": (text_reply, {"input": "Hi", "reasoning": {"effort": float("nan")}}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_streamed_response_reads_nothing_and_equals_the_store_rendering(
    tmp_path: Path, scenario: str
) -> None:
    steps, fields = SCENARIOS[scenario]
    outcome = run(respond(tmp_path, steps(), {**fields, "stream": True}))
    assert outcome.replica_calls == []
    assert outcome.wire == outcome.reference
    assert b"response.created" in outcome.wire and b'"sequence_number":0' in outcome.wire


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_foreground_response_reads_nothing_and_equals_the_store_rendering(
    tmp_path: Path, scenario: str
) -> None:
    steps, fields = SCENARIOS[scenario]
    outcome = run(respond(tmp_path, steps(), fields))
    assert outcome.replica_calls == []
    assert outcome.wire == outcome.reference


@pytest.mark.parametrize("stream", [True, False])
def test_events_of_an_older_runner_fall_back_to_the_store(tmp_path: Path, stream: bool) -> None:
    steps, fields = SCENARIOS["client_tools"]
    outcome = run(respond(tmp_path, steps(), {**fields, "stream": stream}, legacy=True))
    assert outcome.wire == outcome.reference
    expected = ["get_run", "get_run", "list_run_messages"] if stream else ["get_run", "list_run_messages"]
    assert outcome.replica_calls == expected


def test_a_keyed_send_reads_the_store_as_before(tmp_path: Path) -> None:
    """A keyed send's stream may be an earlier run's: its response is the stored one's."""

    steps, fields = SCENARIOS["text"]
    outcome = run(respond(tmp_path, steps(), {**fields, "stream": True}, key="order-1234"))
    assert outcome.wire == outcome.reference
    assert outcome.replica_calls == ["get_run", "get_run", "list_run_messages"]


# --- what the log vouches for ---------------------------------------------------------------------
def _run_as_created() -> Run:
    return Run(
        id="run-33333333-4444-4555-8666-777777777777",
        agent_id="agent-1",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        request_config={"openai": {"model": "gpt-4o-mini", "conversation": None}},
    )


COMPLETED_AT = datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stop_reason", "error_type", "completed_at", "vouched"),
    [
        (StopReason.end_turn, None, None, False),  # closed by closing_stop, or an older runner
        (StopReason.end_turn, None, COMPLETED_AT, True),
        (StopReason.requires_approval, None, COMPLETED_AT, True),
        (StopReason.error, "llm_rate_limit", COMPLETED_AT, True),
        (StopReason.cancelled, None, COMPLETED_AT, False),
        (StopReason.error, INTERNAL_ERROR, COMPLETED_AT, False),
    ],
)
def test_the_log_vouches_only_for_a_run_that_ended_by_itself(
    stop_reason: StopReason, error_type: str | None, completed_at: datetime | None, vouched: bool
) -> None:
    """A cancel or an exception can land while a message's store write is under way: stored, never
    announced. Such a run's output is read from the store."""
    error = RunError(error_type=error_type, message="x") if error_type else None
    end = ResponseEnd()
    end.feed(
        Stopped(run_id="r", stop_reason=stop_reason, usage=Usage(), error=error, completed_at=completed_at)
    )
    assert (end.response(_run_as_created()) is not None) is vouched


def test_new_event_fields_do_not_reach_the_letta_stream() -> None:
    run_id = "run-11111111-2222-4333-8444-555555555555"
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    error = RunError(error_type="llm_rate_limit", message="slow down")
    events: list[RunEvent] = [
        RunStarted(run_id=run_id, seq=1, created_at=moment),
        Stopped(run_id=run_id, stop_reason=StopReason.error, usage=Usage(), error=error, seq=2),
        Done(run_id=run_id, seq=3),
    ]
    events[1].completed_at = moment  # type: ignore[union-attr]
    without = [as_written_before(e) for e in events]

    def rendered(batch: list[RunEvent]) -> bytes:
        raw = StreamRenderer().render(batch)
        # The opening ping has a fresh id and the time it was made: the rest must match exactly.
        _opening, rest = raw.split(b"\n\n", 1)
        assert b"created_at" not in raw and b"completed_at" not in raw
        return rest

    assert rendered(events) == rendered(without)
