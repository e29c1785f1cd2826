"""Record-replay inference at the provider HTTP layer, through the real SDKs and the fake LLM.

Every provider path (OpenAI chat completions, OpenAI Responses, Anthropic with thinking, an
OpenAI-compatible server; streamed and not) is recorded against the fake provider, then replayed
with the fake stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from parley.fake_llm import FakeLLMOptions, FakeLLMThread
from parley.fake_llm.recorded_timing import RecordedTimings
from runtime.message import Message, TextPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ProviderError, ToolSchema
from runtime.providers.encoding import encode
from runtime.providers.recording import RecordingMissing, RecordingStore, request_key
from runtime.providers.recording.key import normalised_body
from runtime.providers.recording.modes import InferenceMode, ReplayTiming
from runtime.providers.recording.transport import Recorder
from runtime.providers.registry import ProviderRegistry
from runtime.providers.retry import RetryPolicy
from runtime.settings import ProviderCredentials, Settings

pytestmark = pytest.mark.timeout(30)

OPENAI_KEY = "sk-parley-distinctive-openai-7f3a9c"
ANTHROPIC_KEY = "sk-ant-parley-distinctive-41d2e8"
COMPATIBLE_KEY = "local-distinctive-key-9b7e"
DICE = ToolSchema(
    name="roll_dice",
    parameters={
        "type": "object",
        "properties": {"num_sides": {"type": "integer"}},
        "required": ["num_sides"],
    },
)
THINKING = {"type": "enabled", "budget_tokens": 1024}
# (provider, model, extra request fields): every wire format the adapters speak.
PATHS: list[tuple[str, str, dict[str, Any]]] = [
    ("openai", "gpt-4o-mini", {}),
    ("openai_responses", "o4-mini", {"reasoning_effort": "low"}),
    ("anthropic", "claude-sonnet-4-5", {"thinking": THINKING, "max_tokens": 2048}),
    ("openai", "llama-3", {"endpoint": "COMPATIBLE"}),
]


@pytest.fixture
def fake() -> Iterator[FakeLLMThread]:
    with FakeLLMThread() as server:
        yield server


def credentials(fake: FakeLLMThread) -> ProviderCredentials:
    return ProviderCredentials(
        openai_api_key=OPENAI_KEY,
        openai_base_url=fake.openai_base_url,
        anthropic_api_key=ANTHROPIC_KEY,
        anthropic_base_url=fake.base_url,
        endpoint_keys={compatible_url(fake): COMPATIBLE_KEY},
    )


def compatible_url(fake: FakeLLMThread) -> str:
    # The same fake, under another spelling of its address: an "OpenAI-compatible server".
    return fake.openai_base_url.replace("127.0.0.1", "localhost")


def request(fake: FakeLLMThread, provider: str, model: str, text: str, **extra: Any) -> ModelRequest:
    if extra.get("endpoint") == "COMPATIBLE":
        extra["endpoint"] = compatible_url(fake)
    return ModelRequest(
        provider=provider,
        model=model,
        system="You are a test.",
        messages=[Message(role="user", agent_id="agent-x", parts=[TextPart(text=text)])],
        tools=[DICE],
        **extra,
    )


def recorder(directory: Path, mode: InferenceMode, timing: ReplayTiming = "instant") -> Recorder:
    return Recorder(mode, RecordingStore(directory), timing)


async def call(
    fake: FakeLLMThread, rec: Recorder, req: ModelRequest, stream: bool
) -> tuple[list[ModelDelta], ModelResponse]:
    """One call through a fresh registry with ``rec`` under its SDK clients."""
    registry = ProviderRegistry(credentials(fake), retry=RetryPolicy(max_retries=0), recorder=rec)
    try:
        encoded = encode(req)
        if not stream:
            return [], await registry.send(encoded)
        deltas: list[ModelDelta] = []
        async for item in registry.stream_encoded(encoded):
            if isinstance(item, ModelDelta):
                deltas.append(item)
            else:
                return deltas, item
        raise AssertionError("the stream ended without a response")
    finally:
        await registry.aclose()


def fake_total(fake: FakeLLMThread) -> int:
    return httpx2.get(f"{fake.base_url}/_fake/stats", timeout=5).json()["total"]


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_every_provider_path_replays_what_was_recorded(fake: FakeLLMThread, tmp_path: Path) -> None:
    prompts = ["Hi!", "Call the roll_dice tool with 6 sides."]
    cases = [(p, s, text) for p in PATHS for s in (False, True) for text in prompts]

    async def session(rec: Recorder) -> list[Any]:
        out = []
        for (provider, model, extra), stream, text in cases:
            deltas, response = await call(fake, rec, request(fake, provider, model, text, **extra), stream)
            out.append(([(d.part, d.index, d.text, d.tool_name) for d in deltas], response.model_dump()))
        return out

    recorded = asyncio.run(session(recorder(tmp_path, "record")))
    assert fake_total(fake) == len(cases)
    rows = RecordingStore(tmp_path).rows()
    assert len(rows) == len(cases)
    assert {r.endpoint for r in rows} == {"/v1/chat/completions", "/v1/responses", "/v1/messages"}
    assert sum(r.streamed for r in rows) == len(cases) // 2
    fake.stop()
    assert asyncio.run(session(recorder(tmp_path, "replay"))) == recorded
    # A reasoning model's thinking and a tool call came back, so the comparison had substance.
    assert any(p["type"] == "reasoning" for _, r in recorded for p in r["parts"] if "type" in p) or any(
        "signature" in p for _, r in recorded for p in r["parts"]
    )
    assert any(r["finish"] == "tool_calls" for _, r in recorded)


def test_no_credential_reaches_a_recording(fake: FakeLLMThread, tmp_path: Path) -> None:
    # As the provider actor builds it: every configured key is kept out, besides each request's own.
    settings = Settings(inference_mode="record", recordings_dir=str(tmp_path))
    rec = Recorder.from_settings(settings, credentials(fake).secrets())
    assert rec is not None

    async def session() -> None:
        for provider, model, extra in PATHS:
            for stream in (False, True):
                # The key in the prompt too: whatever echoes it back, it is redacted.
                text = f"Echo: {OPENAI_KEY} {ANTHROPIC_KEY}"
                await call(fake, rec, request(fake, provider, model, text, **extra), stream)

    asyncio.run(session())
    stored = all_bytes(tmp_path)
    assert len(RecordingStore(tmp_path).rows()) == 2 * len(PATHS)
    for key in (OPENAI_KEY, ANTHROPIC_KEY, COMPATIBLE_KEY):
        assert key.encode() not in stored
    assert b"***" in stored


def test_an_unrecorded_request_fails_at_once_naming_mode_and_hash(
    fake: FakeLLMThread, tmp_path: Path
) -> None:
    req = request(fake, "openai", "gpt-4o-mini", "Never recorded.")
    expected_hash = request_key("POST", "/v1/chat/completions", encode(req).body)
    for stream in (False, True):
        started = time.monotonic()
        with pytest.raises(ProviderError) as failed:
            asyncio.run(call(fake, recorder(tmp_path, "replay"), req, stream))
        assert time.monotonic() - started < 2
        assert isinstance(failed.value, RecordingMissing)
        assert failed.value.kind == "not_found" and failed.value.should_retry is False
        assert "'replay'" in failed.value.message
        if not stream:
            assert expected_hash in failed.value.message
        else:
            assert re.search(r"request hash [0-9a-f]{64}", failed.value.message)
    assert fake_total(fake) == 0  # the network was never used


def test_record_if_missing_records_only_what_is_missing(fake: FakeLLMThread, tmp_path: Path) -> None:
    first = request(fake, "anthropic", "claude-sonnet-4-5", "Hi!", thinking=THINKING, max_tokens=2048)
    second = request(fake, "openai_responses", "o4-mini", "Hi!")
    asyncio.run(call(fake, recorder(tmp_path, "record"), first, True))
    (row,) = RecordingStore(tmp_path).rows()
    file = RecordingStore(tmp_path).file_of(row.hash)
    before = file.read_bytes()
    assert fake_total(fake) == 1

    async def again() -> None:
        rec = recorder(tmp_path, "record-if-missing")
        await call(fake, rec, first, True)
        await call(fake, rec, second, True)
        await call(fake, rec, second, True)

    asyncio.run(again())
    assert fake_total(fake) == 2  # only the missing one went to the provider, once
    rows = RecordingStore(tmp_path).rows()
    assert len(rows) == 2 and row in rows
    assert file.read_bytes() == before


def test_recorded_timing_keeps_inter_chunk_delays(fake: FakeLLMThread, tmp_path: Path) -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "[[token_delay=0.15]] count to 6"}],
    }
    url = f"{fake.openai_base_url}/chat/completions"

    async def read(rec: Recorder) -> list[float]:
        arrived: list[float] = []
        async with rec.client(httpx2.AsyncClient) as client:
            started = time.monotonic()
            async with client.stream("POST", url, json=body) as answer:
                async for _ in answer.aiter_raw():
                    arrived.append(time.monotonic() - started)
        return arrived

    asyncio.run(read(recorder(tmp_path, "record")))
    (row,) = RecordingStore(tmp_path).rows()
    recording = RecordingStore(tmp_path).get(row.hash)
    assert recording is not None and recording.chunks is not None
    offsets = [c.t for c in recording.chunks]
    fake.stop()
    replayed = asyncio.run(read(recorder(tmp_path, "replay", "recorded")))
    assert len(replayed) == len(offsets) >= 6
    gaps = [(b - a, d - c) for a, b, c, d in zip(offsets, offsets[1:], replayed, replayed[1:], strict=False)]
    for recorded_gap, replayed_gap in gaps:
        if recorded_gap >= 0.1:  # the token delays; back-to-back chunks have no delay to keep
            assert abs(replayed_gap - recorded_gap) <= 0.1 * recorded_gap, gaps
    assert sum(g >= 0.1 for g, _ in gaps) >= 5
    instant = asyncio.run(read(recorder(tmp_path, "replay", "instant")))
    assert instant[-1] < 0.1


def test_volatile_parts_do_not_change_the_key() -> None:
    def body(agent: str, when: str, user: str) -> dict[str, Any]:
        system = f"- AGENT_ID: {agent}\n- System prompt last recompiled: {when}"
        return {"model": "m", "user": user, "messages": [{"role": "system", "content": system}]}

    a = body("agent-1f6e1f35-7a55-4d1b-9c5e-2f0c4c7c9d11", "2025-01-02 03:04:05 PM UTC+0000", "u1")
    b = body("agent-0a9e3c21-1b2c-4d3e-8f40-5a6b7c8d9e0f", "2026-11-12 10:11:12 AM UTC+0000", "u2")
    assert request_key("POST", "/v1/chat/completions", a) == request_key("POST", "/v1/chat/completions", b)
    assert request_key("POST", "/v1/chat/completions", a) != request_key("POST", "/v1/responses", a)
    c = {**a, "messages": [{"role": "user", "content": "different"}]}
    assert request_key("POST", "/v1/chat/completions", a) != request_key("POST", "/v1/chat/completions", c)
    assert "user" not in normalised_body(a)


def test_recordings_cli_lists_and_shows(fake: FakeLLMThread, tmp_path: Path) -> None:
    asyncio.run(call(fake, recorder(tmp_path, "record"), request(fake, "openai", "gpt-4o-mini", "Hi!"), True))
    (row,) = RecordingStore(tmp_path).rows()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("SELECT endpoint, model FROM recordings").fetchall() == [
            ("/v1/chat/completions", "gpt-4o-mini")
        ]

    def parley(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "parley", "recordings", *args, "--recordings", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=20,
        )

    listed = parley("list")
    assert listed.returncode == 0, listed.stderr
    assert row.hash[:12] in listed.stdout and "/v1/chat/completions" in listed.stdout
    shown = parley("show", row.hash[:10])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["hash"] == row.hash
    missing = parley("show", "ffffffffffff")
    assert missing.returncode != 0 and "ffffffffffff" in missing.stderr


def test_the_fake_provider_can_take_its_timing_from_recordings(fake: FakeLLMThread, tmp_path: Path) -> None:
    """``parley bench --replay DIR``'s provider: scripted replies, recorded first-byte wait and gaps."""

    async def stream(base_url: str, rec: Recorder | None, text: str) -> list[float]:
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]}
        arrived: list[float] = []
        client = rec.client(httpx2.AsyncClient) if rec else httpx2.AsyncClient()
        async with client:
            started = time.monotonic()
            async with client.stream("POST", f"{base_url}/chat/completions", json=body) as answer:
                async for _ in answer.aiter_raw():
                    arrived.append(time.monotonic() - started)
        return arrived

    asyncio.run(stream(fake.openai_base_url, recorder(tmp_path, "record"), "[[token_delay=0.12]] count to 5"))
    timings = RecordedTimings.load(str(tmp_path))
    (timing,) = timings.timings
    assert len(timing.gaps) >= 4 and all(abs(g - 0.12) < 0.05 for g in timing.gaps[1:])
    with FakeLLMThread(FakeLLMOptions(timings=timings)) as paced:
        arrived = asyncio.run(stream(paced.openai_base_url, None, "count to 9"))
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert sum(abs(g - 0.12) < 0.03 for g in gaps) >= 6, gaps
