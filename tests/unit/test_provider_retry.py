"""Parley's provider retries (``runtime/providers/retry.py``) and the errors they act on
(``sdk_errors.py``): the policy alone, then through the official SDKs against the fake provider."""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from parley.fake_llm import FakeLLMThread
from runtime.message import Message, TextPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ProviderError
from runtime.providers.encoding import encode
from runtime.providers.registry import ProviderRegistry
from runtime.providers.retry import RetryPolicy, complete_with_retries, stream_with_retries
from runtime.providers.sdk_errors import retry_after_seconds
from runtime.settings import ProviderCredentials, Settings

pytestmark = pytest.mark.timeout(20)

POLICY = RetryPolicy(max_retries=2, backoff_seconds=0.01, max_backoff_seconds=0.04, max_retry_after_seconds=5)


# ---- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retries_done", "expected"),
    [
        (ProviderError("x", "server", 503), 0, "wait"),
        (ProviderError("x", "timeout"), 1, "wait"),
        (ProviderError("x", "connection"), 0, "wait"),
        (ProviderError("x", "bad_request", 408), 0, "wait"),
        (ProviderError("x", "bad_request", 409), 0, "wait"),
        (ProviderError("x", "rate_limit", 429, retry_after=2.0), 0, 2.0),
        (ProviderError("x", "rate_limit", 429, retry_after=60.0), 0, "longer than the 5 s"),
        (ProviderError("x", "server", 500), 2, "gave up after 3 attempts"),
        (ProviderError("x", "bad_request", 400), 0, "not a transient error"),
        (ProviderError("x", "auth", 401), 0, "not a transient error"),
        (ProviderError("x", "context_length", 400), 0, "not a transient error"),
        (ProviderError("x", "server", 500, should_retry=False), 0, "said not to retry"),
        (ProviderError("x", "bad_request", 400, should_retry=False), 0, "not a transient error"),
        (ProviderError("x", "bad_request", 400, should_retry=True), 0, "wait"),
    ],
)
def test_policy_decisions(error: ProviderError, retries_done: int, expected: object) -> None:
    wait = POLICY.wait_before_retry(error, retries_done)
    if expected == "wait":
        assert isinstance(wait, float) and 0 <= wait <= POLICY.max_backoff_seconds
    elif isinstance(expected, float):
        assert wait == expected
    else:
        assert isinstance(wait, str) and str(expected) in wait


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(max_retries=10, backoff_seconds=1.0, max_backoff_seconds=4.0)
    waits = [policy.wait_before_retry(ProviderError("x", "server", 500), n) for n in range(5)]
    assert all(isinstance(w, float) for w in waits)
    lows = [0.75, 1.5, 3.0, 3.0, 3.0]  # jitter takes up to a quarter off
    highs = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(lo <= w <= hi for w, lo, hi in zip(waits, lows, highs, strict=True))  # type: ignore[operator]


def test_policy_from_settings() -> None:
    settings = Settings(
        provider_max_retries=5, provider_backoff_seconds=0.1, provider_max_retry_after_seconds=7
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(
        max_retries=5, backoff_seconds=0.1, max_retry_after_seconds=7
    )


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after_seconds({"retry-after": in_ten}) or 0) <= 10
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0


# ---- the retry loops -----------------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def reply(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text=text)])


def test_complete_retries_until_success() -> None:
    failures = [ProviderError("busy", "rate_limit", 429, retry_after=1.25), ProviderError("x", "server", 502)]
    sleeps = Sleeps()

    async def call() -> ModelResponse:
        if failures:
            raise failures.pop(0)
        return reply("ok")

    response = asyncio.run(complete_with_retries(call, POLICY, sleeps))
    assert response.parts == [TextPart(text="ok")]
    assert sleeps.waits[0] == 1.25 and len(sleeps.waits) == 2  # retry-after honoured, then backoff


def test_complete_gives_up_with_a_readable_error() -> None:
    calls = 0

    async def call() -> ModelResponse:
        nonlocal calls
        calls += 1
        raise ProviderError("openai API error 503: overloaded", "server", 503)

    with pytest.raises(ProviderError) as caught:
        asyncio.run(complete_with_retries(call, POLICY, Sleeps()))
    assert calls == 3
    assert caught.value.message == "openai API error 503: overloaded; gave up after 3 attempts"
    assert (caught.value.kind, caught.value.status) == ("server", 503)


def test_complete_does_not_retry_a_bad_request() -> None:
    calls = 0

    async def call() -> ModelResponse:
        nonlocal calls
        calls += 1
        raise ProviderError("openai API error 400: nope", "bad_request", 400)

    with pytest.raises(ProviderError) as caught:
        asyncio.run(complete_with_retries(call, POLICY, Sleeps()))
    assert calls == 1 and caught.value.message == "openai API error 400: nope"


OpenStream = Callable[[], AsyncIterator[ModelDelta | ModelResponse]]


def scripted_streams(*scripts: list[object]) -> tuple[list[int], OpenStream]:
    """``open_stream`` for ``stream_with_retries``: attempt N plays script N (an exception item is
    raised there); returns the attempt counter too."""
    attempts = [0]

    def open_stream() -> AsyncIterator[ModelDelta | ModelResponse]:
        script = scripts[attempts[0]]
        attempts[0] += 1

        async def play() -> AsyncIterator[ModelDelta | ModelResponse]:
            for item in script:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]

        return play()

    return attempts, open_stream


async def drain(stream: AsyncIterator[ModelDelta | ModelResponse]) -> list[object]:
    return [item async for item in stream]


def test_stream_is_retried_while_nothing_was_emitted() -> None:
    attempts, open_stream = scripted_streams(
        [ProviderError("openai request timed out", "timeout")],
        [ProviderError("openai connection failed", "connection")],
        [ModelDelta("text", 0, "hi"), reply("hi")],
    )
    sleeps = Sleeps()
    items = asyncio.run(drain(stream_with_retries(open_stream, POLICY, sleeps)))
    assert attempts == [3] and len(sleeps.waits) == 2
    assert items == [ModelDelta("text", 0, "hi"), reply("hi")]


def test_stream_is_not_retried_once_a_delta_was_emitted() -> None:
    attempts, open_stream = scripted_streams(
        [ModelDelta("text", 0, "1 "), ProviderError("openai connection failed: cut", "connection")],
        [ModelDelta("text", 0, "1 2"), reply("1 2")],
    )
    received: list[object] = []

    async def scenario() -> None:
        async for item in stream_with_retries(open_stream, POLICY, Sleeps()):
            received.append(item)

    with pytest.raises(ProviderError) as caught:
        asyncio.run(scenario())
    assert attempts == [1] and received == [ModelDelta("text", 0, "1 ")]
    assert caught.value.message == (
        "openai connection failed: cut; the reply had already started streaming, so it was not retried"
    )


def test_stream_closed_early_closes_the_attempt() -> None:
    closed = []

    def open_stream() -> AsyncIterator[ModelDelta | ModelResponse]:
        async def play() -> AsyncIterator[ModelDelta | ModelResponse]:
            try:
                yield ModelDelta("text", 0, "a")
                yield ModelDelta("text", 0, "b")
            finally:
                closed.append(True)

        return play()

    async def scenario() -> None:
        stream = stream_with_retries(open_stream, POLICY, Sleeps())
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert closed == [True]


# ---- through the SDKs, against the fake provider ------------------------------------------

TIMEOUT = 0.4
SLOW = 1.2  # a latency spike or stall, well past TIMEOUT
PROVIDERS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("openai_responses", "o4-mini")]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMThread]:
    with FakeLLMThread() as server:
        yield server


def run_call(fake: FakeLLMThread, provider: str, model: str, text: str, stream: bool) -> tuple[str, float]:
    """One call through a fresh registry; the text that came (deltas, or the reply) and the time."""
    credentials = ProviderCredentials(
        openai_api_key="k",
        openai_base_url=fake.openai_base_url,
        anthropic_api_key="k",
        anthropic_base_url=fake.base_url,
    )
    request = ModelRequest(
        provider=provider,
        model=model,
        system="s",
        messages=[Message(role="user", agent_id="a", conversation_id="c", parts=[TextPart(text=text)])],
        max_tokens=100,
    )
    encoded = encode(request, None)

    async def scenario() -> str:
        registry = ProviderRegistry(credentials, timeout=TIMEOUT, retry=POLICY)
        try:
            got = ""
            if stream:
                async for item in registry.stream_encoded(encoded):
                    if isinstance(item, ModelDelta) and item.part == "text":
                        got += item.text
                return got
            response = await registry.send(encoded)
            return "".join(p.text for p in response.parts if isinstance(p, TextPart))
        finally:
            await registry.aclose()

    started = time.monotonic()
    got = asyncio.run(scenario())
    return got, time.monotonic() - started


def tag() -> str:
    return uuid.uuid4().hex[:6]


@pytest.mark.parametrize(("provider", "model"), PROVIDERS, ids=["chat", "anthropic", "responses"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
@pytest.mark.parametrize(
    "fault",
    [
        f"[[fail_first=1]] [[latency={SLOW}]]",
        f"[[fail_first=1]] [[stall={SLOW}]]",
        "[[fail_first=1]] [[reset]]",
        "[[fail_first=1]] [[reset=0]]",
        "[[fail_first=2]] [[status=500,503]]",
        "[[fail_first=1]] [[status=429]] [[retry_after=0.3]]",
    ],
)
def test_faults_before_output_are_retried(
    fake: FakeLLMThread, provider: str, model: str, stream: bool, fault: str
) -> None:
    word = tag()
    got, _ = run_call(fake, provider, model, f"{fault} say {word}", stream)
    assert got == word


@pytest.mark.parametrize(("provider", "model"), PROVIDERS, ids=["chat", "anthropic", "responses"])
@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        (
            f"[[latency={SLOW}]]",
            "timeout",
            f"no data from the provider for {TIMEOUT:g} s; gave up after 3",
        ),
        ("[[reset]]", "connection", "connection failed: the provider reset the connection; gave up after 3"),
        ("[[status=500,502,503]]", "server", "API error 503"),
        ("[[status=429]] [[retry_after=60]]", "rate_limit", "asked to wait 60 s before retrying"),
        ("[[status=400]]", "bad_request", "API error 400"),
    ],
)
def test_persistent_faults_fail_with_a_readable_error(
    fake: FakeLLMThread, provider: str, model: str, fault: str, kind: str, message: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        run_call(fake, provider, model, f"{fault} say never {tag()}", stream=True)
    assert caught.value.kind == kind
    assert message in caught.value.message
    assert caught.value.message.startswith("openai " if provider.startswith("openai") else "anthropic ")


@pytest.mark.parametrize(("provider", "model"), PROVIDERS, ids=["chat", "anthropic", "responses"])
@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        ("[[cut=2]]", "connection", "the provider's response broke off before it was complete"),
        ("[[reset=2]]", "connection", "the provider's response broke off before it was complete"),
        (
            f"[[stall={SLOW}]] [[stall_after=2]]",
            "timeout",
            f"no data from the provider for {TIMEOUT:g} s",
        ),
    ],
)
def test_faults_after_output_are_not_retried(
    fake: FakeLLMThread, provider: str, model: str, fault: str, kind: str, message: str
) -> None:
    # Only the first attempt is faulty: a retry would have succeeded, so failing proves there was none.
    with pytest.raises(ProviderError) as caught:
        run_call(fake, provider, model, f"[[fail_first=1]] {fault} count to 9 {tag()}", stream=True)
    assert caught.value.kind == kind
    assert caught.value.message.endswith(
        f"{message}; the reply had already started streaming, so it was not retried"
    )


def test_retry_after_is_waited_for(fake: FakeLLMThread) -> None:
    word = tag()
    got, took = run_call(
        fake, "openai", "gpt-4o-mini", f"[[fail_first=1]] [[status=503]] [[retry_after=0.5]] say {word}", True
    )
    assert got == word and took >= 0.5


def test_the_registry_keeps_provider_keys_out_of_error_messages() -> None:
    from runtime.providers.base import EncodedRequest
    from runtime.providers.registry import ProviderRegistry
    from runtime.settings import ProviderCredentials

    key = "sk-test-very-secret-0123"

    class Echoing:
        """A compatible server that quotes the refused key back."""

        async def send(self, encoded: EncodedRequest) -> ModelResponse:
            raise ProviderError(f"Incorrect API key provided: {key}", "auth", status=401)

        async def stream_encoded(self, encoded: EncodedRequest):
            raise ProviderError(f"Incorrect API key provided: {key}", "auth", status=401)
            yield  # pragma: no cover - makes this a generator

    registry = ProviderRegistry(ProviderCredentials(openai_api_key=key), max_retries=0)
    registry._adapters["openai"] = Echoing()
    encoded = EncodedRequest(provider="openai", endpoint=None, body={})

    async def main() -> list[ProviderError]:
        caught = []
        try:
            await registry.send(encoded)
        except ProviderError as exc:
            caught.append(exc)
        try:
            async for _ in registry.stream_encoded(encoded):
                pass
        except ProviderError as exc:
            caught.append(exc)
        return caught

    for error in asyncio.run(main()):
        assert key not in error.message and key not in str(error)
        assert "Incorrect API key provided: ***" in error.message
        assert (error.kind, error.status) == ("auth", 401)
