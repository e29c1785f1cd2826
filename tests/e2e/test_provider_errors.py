"""Provider faults through ``letta-client``: transient ones are retried, the rest end the run
with stop reason ``error`` and a readable message, and the conversation stays usable.

The module runs its own server with a short provider timeout and quick backoff, so that latency
spikes and stalls longer than the timeout take a second or two, not minutes. A retry is safe while
nothing of the provider call has reached the client: a fault before the first token is retried,
one after it ends the run (each mid-stream fault below fails the first attempt only, so a retry,
had there been one, would have succeeded).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from letta_client import APIStatusError, Letta

from parley.processes import FakeLLMProcess, ServerProcess, start_server

from .helpers import assistant_text, send

MODELS = ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5")
RESPONSES_MODEL = "openai/o4-mini"  # the OpenAI Responses API

TIMEOUT_SECONDS = 1.5  # PARLEY_PROVIDER_TIMEOUT_SECONDS of this module's server
MAX_RETRIES = 2
MAX_RETRY_AFTER_SECONDS = 5.0
SLOW = 4.0  # a latency spike or stall: well past the timeout


@pytest.fixture(scope="module")
def faulty_server(
    fake_llm: FakeLLMProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(
        fake_llm,
        tmp_path_factory.mktemp("parley-faults"),
        env={
            "PARLEY_PROVIDER_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "PARLEY_PROVIDER_MAX_RETRIES": str(MAX_RETRIES),
            "PARLEY_PROVIDER_BACKOFF_SECONDS": "0.05",
            "PARLEY_PROVIDER_MAX_RETRY_AFTER_SECONDS": str(MAX_RETRY_AFTER_SECONDS),
        },
    )
    yield started
    started.stop()


@pytest.fixture
def client(faulty_server: ServerProcess) -> Iterator[Letta]:
    with Letta(base_url=faulty_server.url, timeout=60) as letta:
        yield letta


@contextmanager
def conversation_with(client: Letta, model: str) -> Iterator[Any]:
    agent = client.agents.create(model=model, embedding="openai/text-embedding-3-small")
    try:
        yield client.conversations.create(agent_id=agent.id)
    finally:
        client.agents.delete(agent.id)


@pytest.fixture(params=MODELS, ids=["openai", "anthropic"])
def conversation_on(request: pytest.FixtureRequest, client: Letta) -> Iterator[Any]:
    with conversation_with(client, request.param) as conversation:
        yield conversation


def unique() -> str:
    return uuid.uuid4().hex[:8]


# ---- the faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str  # what goes wrong, in words (the closing report counts these)
    directives: str  # how the fake is told to do it
    retried: bool  # True: the run recovers; False: it fails with `error_type`
    error_type: str = ""
    message: str = ""  # a fragment of the readable error
    stream_tokens: bool = True
    # Also through the Responses-API model: where its stream's shape matters (a fault within the
    # stream); faults before any response are the same HTTP exchange as chat completions'.
    responses: bool = False


RETRIED = [
    Fault("latency spike before the answer, past the timeout", f"[[fail_first=1]] [[latency={SLOW}]]", True),
    Fault(
        "stall after the stream opened, before the first token",
        f"[[fail_first=1]] [[stall={SLOW}]]",
        True,
        responses=True,
    ),
    Fault("connection reset before any response", "[[fail_first=1]] [[reset]]", True),
    Fault(
        "connection reset after the stream opened, before the first token",
        "[[fail_first=1]] [[reset=0]]",
        True,
        responses=True,
    ),
    Fault("stream cut before the first token", "[[fail_first=1]] [[cut=0]]", True),
    Fault("5xx burst (500, 502) then success", "[[fail_first=2]] [[status=500,502]]", True),
    Fault("5xx burst, non-streamed call", "[[fail_first=2]] [[status=502,503]]", True, stream_tokens=False),
]
FAILED = [
    Fault(
        "persistent latency spike",
        f"[[latency={SLOW}]]",
        False,
        "llm_timeout",
        f"request timed out: no data from the provider for {TIMEOUT_SECONDS:g} s; gave up after 3 attempts",
    ),
    Fault(
        "stall mid-stream, after tokens were streamed",
        f"[[fail_first=1]] [[stall={SLOW}]] [[stall_after=3]]",
        False,
        "llm_timeout",
        f"no data from the provider for {TIMEOUT_SECONDS:g} s; the reply had already started streaming",
        responses=True,
    ),
    Fault(
        "persistent connection reset before any response",
        "[[reset]]",
        False,
        "llm_connection",
        "connection failed: the provider reset the connection; gave up after 3 attempts",
    ),
    Fault(
        "connection reset mid-stream",
        "[[fail_first=1]] [[reset=3]]",
        False,
        "llm_connection",
        "broke off before it was complete; the reply had already started streaming",
        responses=True,
    ),
    Fault(
        "stream cut mid-reply",
        "[[fail_first=1]] [[cut=3]]",
        False,
        "llm_connection",
        "broke off before it was complete; the reply had already started streaming",
    ),
    Fault(
        "persistent 5xx burst (500, 502, 503)", "[[status=500,502,503]]", False, "llm_server", "API error 503"
    ),
    Fault(
        "429 asking to wait longer than the cap",
        "[[status=429]] [[retry_after=3600]]",
        False,
        "llm_rate_limit",
        f"asked to wait 3600 s before retrying, longer than the {MAX_RETRY_AFTER_SECONDS:g} s",
    ),
]
MODEL_IDS = {
    "openai/gpt-4o-mini": "openai",
    "anthropic/claude-sonnet-4-5": "anthropic",
    RESPONSES_MODEL: "responses",
}


def cases(faults: list[Fault]) -> list[Any]:
    """(model, fault) for each fault on each model it is injected on."""
    return [
        pytest.param(model, fault, id=f"{MODEL_IDS[model]}-{fault.kind}")
        for fault in faults
        for model in (*MODELS, *((RESPONSES_MODEL,) if fault.responses else ()))
    ]


# Kinds injected by the tests of this module outside the two tables above.
OTHER_KINDS = [
    "429 with retry-after, then success",
    "persistent 429",
    "503 once, then success",
    "401 (not retried)",
]
FAULT_KINDS = [f.kind for f in RETRIED + FAILED] + OTHER_KINDS


@pytest.fixture(scope="module", autouse=True)
def report_fault_kinds(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the fault kinds this module injects, past pytest's output capture."""
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    lines = [f"provider fault kinds injected: {len(FAULT_KINDS)}", *(f"  - {k}" for k in FAULT_KINDS)]
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def attempt(client: Letta, conversation_id: str, text: str, stream_tokens: bool) -> tuple[list[Any], Any]:
    """Send and read to the end: the chunks that came, and the error that ended the stream."""
    chunks: list[Any] = []
    stream = client.conversations.messages.create(
        conversation_id, messages=[{"role": "user", "content": text}], stream_tokens=stream_tokens
    )
    try:
        for chunk in stream:
            chunks.append(chunk)
    except APIStatusError as exc:
        return chunks, exc
    return chunks, None


def streamed_text(chunks: list[Any]) -> str:
    """The reply text and reasoning that reached the client."""
    parts = []
    for chunk in chunks:
        if chunk.message_type == "assistant_message":
            parts.append(chunk.content)
        elif chunk.message_type == "reasoning_message":
            parts.append(chunk.reasoning)
    return "".join(p for p in parts if isinstance(p, str))


def latest_run(client: Letta, conversation_id: str) -> Any:
    return client.runs.list(conversation_id=conversation_id, limit=1).items[0]


def assert_failed_cleanly(client: Letta, conversation_id: str, error: Any, fault: Fault, sent: str) -> None:
    assert error is not None, f"{fault.kind}: the run did not fail"
    body = error.body
    assert isinstance(body, dict), body
    assert body.get("error_type") == fault.error_type, body
    assert fault.message in body.get("message", ""), body
    run = latest_run(client, conversation_id)
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert fault.message in run.metadata["error"]["message"]
    # The user's message was acknowledged: it stays listed, though out of the model's context.
    listed = client.conversations.messages.list(conversation_id, order="asc").items
    assert sent in [m.content for m in listed if m.message_type == "user_message"]
    word = unique()
    assert assistant_text(send(client, conversation_id, f"say {word}")) == word


@pytest.mark.parametrize(("model", "fault"), cases(RETRIED))
def test_fault_before_output_is_retried(client, model: str, fault: Fault):
    word = unique()
    with conversation_with(client, model) as conversation:
        chunks, error = attempt(
            client, conversation.id, f"{fault.directives} say {word}", fault.stream_tokens
        )
        assert error is None, error.body
        assert assistant_text(chunks).endswith(word)
        run = latest_run(client, conversation.id)
        assert (run.status, run.stop_reason) == ("completed", "end_turn")


@pytest.mark.parametrize(("model", "fault"), cases(FAILED))
def test_fault_ends_the_run_cleanly(client, model: str, fault: Fault):
    text = f"{fault.directives} count to 20 {unique()}"
    with conversation_with(client, model) as conversation:
        chunks, error = attempt(client, conversation.id, text, fault.stream_tokens)
        if "already started streaming" in fault.message:
            assert streamed_text(chunks), "the part streamed before the fault did not reach the client"
        assert_failed_cleanly(client, conversation.id, error, fault, text)


def test_retry_after_is_honoured(client, conversation_on):
    word = unique()
    started = time.monotonic()
    chunks = send(
        client, conversation_on.id, f"[[fail_first=1]] [[status=429]] [[retry_after=1.5]] say {word}"
    )
    assert assistant_text(chunks) == word
    assert time.monotonic() - started >= 1.5


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried(client, conversation_on, status):
    word = unique()
    chunks = send(client, conversation_on.id, f"[[fail_first=1]] [[status={status}]] say {word}")
    assert assistant_text(chunks) == word


def test_persistent_rate_limit_ends_the_run_with_a_readable_error(client, conversation_on):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation_on.id, "[[status=429]] say never")
    body = caught.value.body
    assert isinstance(body, dict) and "429" in body.get("message", ""), body
    assert "gave up after 3 attempts" in body["message"]
    assert body["error_type"] == "llm_rate_limit"
    run = latest_run(client, conversation_on.id)
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert "429" in run.metadata["error"]["message"]
    assert assistant_text(send(client, conversation_on.id, "say recovered")) == "recovered"


def test_bad_request_is_not_retried_and_is_reported(client, conversation_on):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation_on.id, "[[status=401]] say never")
    assert isinstance(caught.value.body, dict), caught.value.body
    assert caught.value.body["error_type"] == "llm_auth"
    assert "attempts" not in caught.value.body["message"]
    assert assistant_text(send(client, conversation_on.id, "say usable")) == "usable"
