"""Record-replay inference end to end: one session recorded against the fake provider (standing in
for a real one), then replayed by a fresh server with the fake stopped.

The session: every Letta send mode x (an OpenAI model, an Anthropic model with thinking, an OpenAI
reasoning model) x (a greeting, a tool call), then OpenAI Responses turns, one of them streamed.
What clients receive must be the same in both runs apart from ids and timestamps (and from how
token deltas happened to be grouped into chunks, which depends on timing).
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from letta_client import APIStatusError, Letta

from parley.processes import ServerProcess, start_fake_llm, start_server
from runtime.providers.recording import RecordingStore

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream

OPENAI_KEY = "sk-proj-RecordReplayDistinctive-6c1f0e9a2b"
ANTHROPIC_KEY = "sk-ant-api03-RecordReplayDistinctive-3d8b7a"
MODELS: dict[str, dict[str, Any]] = {
    "gpt-4o-mini": {"model": "openai/gpt-4o-mini"},
    "claude-thinking": {
        "model": "anthropic/claude-sonnet-4-5",
        "model_settings": {
            "provider_type": "anthropic",
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        },
    },
    "o4-mini": {"model": "openai/o4-mini"},
}
MODES = ("step", "stream_steps", "stream_tokens", "background", "async")
# A tool whose result is the same every time: the request after it is then the same too (a dice
# roll would make the replayed history differ from the recorded one).
HALF = textwrap.dedent(
    '''
    def half_of(num_sides: int) -> int:
        """
        Returns half the number of sides of a die.

        Args:
            num_sides (int): The number of sides on the die.

        Returns:
            int: Half of num_sides, rounded down.
        """
        return num_sides // 2
    '''
)
PROMPTS = ("Hi!", "Call the half_of tool with 16 sides and tell me the outcome.")
VOLATILE_KEYS = {"id", "otid", "date", "sequence_number"}
TEXT_KEYS = {"content", "reasoning", "arguments", "delta", "text"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Recorded:
    directory: Path
    events: list[Any]
    fake: Any


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """The session, run once by a server in record mode against a live fake provider; the fake is
    stopped before anything else runs."""
    directory = tmp_path_factory.mktemp("recordings")
    fake = start_fake_llm()
    try:
        server = start_server(fake, tmp_path_factory.mktemp("parley-record"), env=env("record", directory))
        try:
            events = session(server)
        finally:
            server.stop()
    finally:
        fake.stop()
    yield Recorded(directory, events, fake)


@pytest.fixture(scope="module")
def replaying(recorded: Recorded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Still pointed at the fake's address: nothing listens there any more.
    server = start_server(
        recorded.fake, tmp_path_factory.mktemp("parley-replay"), env=env("replay", recorded.directory)
    )
    yield server
    server.stop()


def env(mode: str, directory: Path) -> dict[str, str]:
    return {
        "PARLEY_INFERENCE_MODE": mode,
        "PARLEY_RECORDINGS_DIR": str(directory),
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    }


# ---- the session ---------------------------------------------------------------------------------


def session(server: ServerProcess) -> list[Any]:
    """Everything the clients received, step by step, ids and timestamps left out."""
    events: list[Any] = []
    with Letta(base_url=server.url, timeout=60) as client:
        tool = client.tools.upsert(source_code=HALF)
        for name, spec in MODELS.items():
            agent = client.agents.create(
                embedding="openai/text-embedding-3-small",
                memory_blocks=[{"label": "human", "value": "The user is Ada."}],
                tool_ids=[tool.id],
                **spec,
            )
            for mode in MODES:
                for prompt in PROMPTS:
                    events.append((name, mode, prompt, stable(letta_send(client, agent.id, mode, prompt))))
    responses = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", timeout=60)
    conversation = responses.conversations.create()
    for model, text in (("openai/gpt-4o-mini", "remember the word: heron"), ("openai/o4-mini", "Hi!")):
        made = responses.responses.create(model=model, conversation=conversation.id, input=text)
        events.append(("responses", model, text, stable(made.model_dump(mode="json"))))
    streamed = responses.responses.create(
        model="openai/gpt-4o-mini", conversation=conversation.id, input="What is the word?", stream=True
    )
    events.append(("responses", "stream", "", stable(folded([e.model_dump(mode="json") for e in streamed]))))
    items = responses.conversations.items.list(conversation.id, order="asc")
    events.append(("responses", "items", "", stable([i.model_dump(mode="json") for i in items.data])))
    return events


def letta_send(client: Letta, agent_id: str, mode: str, prompt: str) -> Any:
    messages = [{"role": "user", "content": prompt}]
    if mode == "step":
        return client.agents.messages.create(agent_id, messages=messages).model_dump(mode="json")
    if mode == "async":
        run = client.agents.messages.create_async(agent_id, messages=messages)
        deadline = time.monotonic() + 30
        while client.runs.retrieve(run.id).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, "the async run did not finish"
            time.sleep(0.05)
        listed = client.runs.messages.list(run.id).items
        return [client.runs.retrieve(run.id).stop_reason, *(m.model_dump(mode="json") for m in listed)]
    options: dict[str, Any] = {"stream_tokens": mode != "stream_steps"}
    if mode == "background":
        options["background"] = True
    chunks = client.agents.messages.stream(agent_id, messages=messages, **options)
    return folded([c.model_dump(mode="json") for c in chunks if c.message_type != "ping"])


def folded(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive chunks of one message (or delta events of one kind) as one: how many chunks
    carry a message's tokens depends on timing, what they carry does not."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        kind = (chunk.get("message_type") or chunk.get("type"), chunk.get("id") or chunk.get("item_id"))
        if out and kind[0] and (out[-1].get("message_type") or out[-1].get("type"), _ident(out[-1])) == kind:
            if "message_type" in chunk or str(kind[0]).endswith(".delta"):
                out[-1] = merged(out[-1], chunk)
                continue
        out.append(chunk)
    return out


def _ident(chunk: dict[str, Any]) -> Any:
    return chunk.get("id") or chunk.get("item_id")


def _kind(event: Any) -> Any:
    return event.get("message_type") or event.get("type") if isinstance(event, dict) else event


def merged(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merged(a.get(k), b.get(k), k) for k in {**a, **b}}
    if isinstance(a, str) and isinstance(b, str) and key in TEXT_KEYS:
        return a + b
    return a if a is not None else b


def stable(value: Any) -> Any:
    """``value`` without ids and timestamps."""
    if isinstance(value, dict):
        return {
            k: stable(v)
            for k, v in value.items()
            if k not in VOLATILE_KEYS and not k.endswith(("_id", "_ids", "_at"))
        }
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str):
        return _UUID.sub("<uuid>", value)
    return value


# ---- the tests -----------------------------------------------------------------------------------


def test_replay_gives_clients_the_same_events(recorded: Recorded, replaying: ServerProcess) -> None:
    store = RecordingStore(recorded.directory)
    rows = store.rows()
    assert {r.endpoint for r in rows} == {"/v1/chat/completions", "/v1/responses", "/v1/messages"}
    assert any(r.streamed for r in rows) and any(not r.streamed for r in rows)
    replayed = session(replaying)
    assert len(replayed) == len(recorded.events)
    # Step by step, and event by event within a step, so that a difference is shown where it is.
    for then, now in zip(recorded.events, replayed, strict=True):
        assert now[:3] == then[:3]
        if isinstance(then[3], list) and isinstance(now[3], list):
            assert len(now[3]) == len(then[3]), (
                then[:3],
                [_kind(e) for e in then[3]],
                [_kind(e) for e in now[3]],
            )
            for before, after in zip(then[3], now[3], strict=True):
                assert after == before, then[:3]
        assert now == then, then[:3]
    # The comparison had substance: thinking, tool calls and their results came through.
    flat = repr(recorded.events)
    assert "reasoning_message" in flat and "tool_return_message" in flat and "'8'" in flat
    assert len(store.rows()) == len(rows)  # replay records nothing


def test_an_unrecorded_request_fails_its_run_at_once(recorded: Recorded, replaying: ServerProcess) -> None:
    with Letta(base_url=replaying.url, timeout=60) as client:
        agent = client.agents.create(model="openai/gpt-4o-mini", embedding="openai/text-embedding-3-small")
        started = time.monotonic()
        with pytest.raises(APIStatusError) as failed:
            list(
                client.agents.messages.stream(
                    agent.id, messages=[{"role": "user", "content": "Nobody recorded this."}]
                )
            )
        assert time.monotonic() - started < 10
        message = failed.value.body["message"]  # type: ignore[index]
        assert "inference mode 'replay'" in message
        hashes = re.findall(r"request hash ([0-9a-f]{64})", message)
        assert hashes and not RecordingStore(recorded.directory).find(hashes[0])
        run = client.runs.list(agent_id=agent.id, limit=1).items[0]
        assert (run.status, run.stop_reason) == ("failed", "error")
        assert hashes[0] in run.metadata["error"]["message"]
        client.agents.delete(agent.id)


def test_no_api_key_reaches_the_recordings(recorded: Recorded) -> None:
    stored = [p for p in recorded.directory.rglob("*") if p.is_file()]
    assert len(stored) > 30
    for path in stored:
        data = path.read_bytes()
        for key in (OPENAI_KEY, ANTHROPIC_KEY):
            assert key.encode() not in data, path
            assert key[-12:].encode() not in data, path
