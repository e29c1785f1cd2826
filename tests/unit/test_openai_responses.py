"""The OpenAI Responses API adapter: its pure encoder, and the adapter against the fake provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from parley.processes import FakeLLMProcess, start_fake_llm
from runtime.message import Message, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ProviderError, ToolSchema
from runtime.providers.encoding import encode as encode_any
from runtime.providers.openai_responses import OpenAIResponsesProvider, _StreamAssembly
from runtime.providers.openai_responses_format import encode, uses_responses_api
from runtime.providers.registry import ProviderRegistry
from runtime.settings import ProviderCredentials

pytestmark = pytest.mark.timeout(20)

T = TypeVar("T")
DICE = ToolSchema(
    name="roll_dice",
    description="Roll a die.",
    parameters={
        "type": "object",
        "properties": {"num_sides": {"type": "integer"}},
        "required": ["num_sides"],
    },
)


def msg(role: str, *parts: Any) -> Message:
    return Message(role=role, parts=list(parts), agent_id="agent-1")  # type: ignore[arg-type]


def request(*messages: Message, **fields: Any) -> ModelRequest:
    fields.setdefault("tools", [])
    return ModelRequest(
        provider="openai_responses", model="o4-mini", system="Be brief.", messages=list(messages), **fields
    )


# ---- the encoder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["o1", "o1-mini", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "GPT-5"]
)
def test_reasoning_models_use_the_responses_api(model: str) -> None:
    assert uses_responses_api(model)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-3.5-turbo", "claude-3-5-sonnet"])
def test_other_models_do_not(model: str) -> None:
    assert not uses_responses_api(model)


def test_encode_builds_a_responses_body() -> None:
    history = [
        msg("user", TextPart(text="roll a die")),
        msg(
            "assistant",
            ReasoningPart(text="They want a roll."),
            TextPart(text="Rolling."),
            ToolCallPart(id="call_1", name="roll_dice", arguments='{"num_sides": 6}'),
        ),
        msg("tool", ToolReturnPart(tool_call_id="call_1", name="roll_dice", content="4")),
        msg("system", TextPart(text="a reminder")),
    ]
    encoded = encode(request(*history, tools=[DICE], max_tokens=500, temperature=0.3))
    assert encoded.provider == "openai_responses"
    assert encoded.endpoint is None
    assert encoded.body == {
        "model": "o4-mini",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "roll a die"}]},
            # The reasoning part is not sent back.
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Rolling."}],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "roll_dice",
                "arguments": '{"num_sides": 6}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "4"},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "a reminder"}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "roll_dice",
                "description": "Roll a die.",
                "parameters": DICE.parameters,
                "strict": False,
            }
        ],
        "max_output_tokens": 500,
        "reasoning": {"effort": "medium"},  # no summary below high effort
        "store": False,
    }  # no temperature: reasoning models refuse it


def test_encode_minimal_request_and_effort() -> None:
    body = encode(request(msg("user", TextPart(text="hi")), reasoning_effort="high")).body
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert "tools" not in body and "max_output_tokens" not in body


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", None])
def test_a_summary_is_asked_for_only_at_high_effort(effort: str | None) -> None:
    body = encode(request(msg("user", TextPart(text="hi")), reasoning_effort=effort)).body
    assert body["reasoning"] == {"effort": effort or "medium"}


def test_an_assistant_turn_with_only_a_tool_call_has_no_message_item() -> None:
    turn = msg("assistant", ToolCallPart(id="c", name="f", arguments="{}"))
    assert encode(request(turn)).body["input"] == [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    ]


def test_encode_reuses_cached_items() -> None:
    user = msg("user", TextPart(text="hi"))
    cache: dict[str, list[dict[str, Any]]] = {}
    first = encode(request(user), cache).body["input"]
    assert len(cache) == 1
    (items,) = cache.values()
    items[0]["content"][0]["text"] = "from the cache"  # stored encodings are trusted as they are
    assert encode(request(user), cache).body["input"][0]["content"][0]["text"] == "from the cache"
    assert first[0]["content"][0]["text"] == "from the cache"  # the very same list


def test_caches_of_one_conversation_keep_each_format_apart() -> None:
    # A conversation whose model changes from gpt-4o to o4-mini keeps one cache per wire format.
    user = msg("user", TextPart(text="hi"))
    caches: dict[str, dict[str, list[dict[str, Any]]]] = {}
    chat = ModelRequest(provider="openai", model="gpt-4o", system="s", messages=[user])
    encode_any(chat, caches)
    assert encode_any(request(user), caches).body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    ]
    assert encode_any(chat, caches).body["messages"][1] == {"role": "user", "content": "hi"}
    assert sorted(caches) == ["openai", "openai_responses"]


def test_registered_encoder_and_adapter() -> None:
    encoded = encode_any(request(msg("user", TextPart(text="hi"))))
    assert encoded.provider == "openai_responses"
    registry = ProviderRegistry(ProviderCredentials(openai_api_key="k"))
    assert isinstance(registry.adapter("openai_responses"), OpenAIResponsesProvider)
    assert type(registry.adapter("openai")).__name__ == "OpenAIProvider"


# ---- stream errors the fake does not produce ---------------------------------------------------


def test_error_event_raises_with_its_kind() -> None:
    event = SimpleNamespace(type="error", code="context_length_exceeded", message="Too long.")
    with pytest.raises(ProviderError) as info:
        _StreamAssembly().feed(event)
    assert info.value.kind == "context_length"
    assert "Too long. (code: context_length_exceeded)" in str(info.value)


def test_failed_response_event_raises() -> None:
    error = SimpleNamespace(code="server_error", message="The model broke.")
    event = SimpleNamespace(type="response.failed", response=SimpleNamespace(status="failed", error=error))
    with pytest.raises(ProviderError) as info:
        _StreamAssembly().feed(event)
    assert info.value.kind == "server"
    assert "The model broke." in str(info.value)


# ---- the adapter against the fake provider -------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    process = start_fake_llm()
    yield process
    process.stop()


def run(fake: FakeLLMProcess, call: Callable[[OpenAIResponsesProvider], Awaitable[T]]) -> T:
    """Run ``call`` with a fresh adapter on a fresh event loop, closing its clients after."""

    async def main() -> T:
        provider = OpenAIResponsesProvider(
            api_key="fake", base_url=fake.openai_base_url, max_retries=0, timeout=10
        )
        try:
            return await call(provider)
        finally:
            for client in provider._clients.values():
                await client.close()

    return asyncio.run(main())


async def collect(provider: OpenAIResponsesProvider, req: ModelRequest) -> list[ModelDelta | ModelResponse]:
    return [item async for item in provider.stream(req)]


def test_complete_gives_reasoning_then_text(fake: FakeLLMProcess) -> None:
    req = request(msg("user", TextPart(text="hello")), reasoning_effort="high")
    response = run(fake, lambda p: p.complete(req))
    assert [type(p) for p in response.parts] == [ReasoningPart, TextPart]
    reasoning, text = response.parts
    assert isinstance(reasoning, ReasoningPart) and reasoning.source == "reasoner_model" and reasoning.text
    assert isinstance(text, TextPart) and text.text == "Hello! How can I help you today?"
    assert response.prompt_tokens > 0 and response.completion_tokens > 0
    assert response.finish == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_below_high_effort_the_reasoning_has_no_summary(fake: FakeLLMProcess, stream: bool) -> None:
    req = request(msg("user", TextPart(text="think about tides")), reasoning_effort="medium")
    if stream:
        *deltas, final = run(fake, lambda p: collect(p, req))
        assert {d.part for d in deltas if isinstance(d, ModelDelta)} == {"text"}
    else:
        final = run(fake, lambda p: p.complete(req))
    assert isinstance(final, ModelResponse)
    assert [type(p) for p in final.parts] == [TextPart]
    assert final.parts[0].text == "I thought about tides."  # type: ignore[union-attr]
    assert final.completion_tokens > len(final.parts[0].text.split())  # it reasoned all the same


def test_stream_deltas_add_up_to_the_final_parts(fake: FakeLLMProcess) -> None:
    req = request(msg("user", TextPart(text="think about tides")), reasoning_effort="high")
    items = run(fake, lambda p: collect(p, req))
    *deltas, final = items
    assert isinstance(final, ModelResponse)
    assert all(isinstance(d, ModelDelta) for d in deltas)
    kinds = [d.part for d in deltas if isinstance(d, ModelDelta)]
    assert kinds == sorted(kinds, key=["reasoning", "text"].index)  # all reasoning, then all text
    assert "reasoning" in kinds and "text" in kinds
    assert [type(p) for p in final.parts] == [ReasoningPart, TextPart]
    for index, part in enumerate(final.parts):
        assert isinstance(part, ReasoningPart | TextPart)
        streamed = "".join(d.text for d in deltas if isinstance(d, ModelDelta) and d.index == index)
        assert streamed == part.text
    assert final.parts[0].text == "Thinking about tides."  # type: ignore[union-attr]
    assert final.prompt_tokens > 0 and final.completion_tokens > 0


def test_tool_call_then_tool_result(fake: FakeLLMProcess) -> None:
    user = msg("user", TextPart(text='call roll_dice with {"num_sides": 16}'))
    first = run(fake, lambda p: p.complete(request(user, tools=[DICE], reasoning_effort="high")))
    assert first.finish == "tool_calls"
    assert [type(p) for p in first.parts] == [ReasoningPart, ToolCallPart]
    call = first.parts[-1]
    assert isinstance(call, ToolCallPart)
    assert (call.name, json.loads(call.arguments)) == ("roll_dice", {"num_sides": 16})
    assert call.id

    history = [
        user,
        msg("assistant", *first.parts),
        msg("tool", ToolReturnPart(tool_call_id=call.id, name="roll_dice", content="11")),
    ]
    second = run(fake, lambda p: p.complete(request(*history, tools=[DICE], reasoning_effort="high")))
    assert second.finish == "stop"
    # The turn's reasoning was summarized before the call: the answer to its result has no summary.
    assert [type(p) for p in second.parts] == [TextPart]
    assert second.parts[-1].text == "Tool roll_dice returned: 11"


def test_streamed_tool_call(fake: FakeLLMProcess) -> None:
    user = msg("user", TextPart(text='call roll_dice with {"num_sides": 16}'))
    *deltas, final = run(fake, lambda p: collect(p, request(user, tools=[DICE])))
    assert isinstance(final, ModelResponse) and final.finish == "tool_calls"
    call = final.parts[-1]
    assert isinstance(call, ToolCallPart)
    index = len(final.parts) - 1
    calls = [d for d in deltas if isinstance(d, ModelDelta) and d.part == "tool_call"]
    assert calls and all(d.index == index for d in calls)
    assert all((d.tool_call_id, d.tool_name) == (call.id, "roll_dice") for d in calls)
    assert "".join(d.text for d in calls) == call.arguments


def test_max_output_tokens_ends_with_length(fake: FakeLLMProcess) -> None:
    response = run(
        fake, lambda p: p.complete(request(msg("user", TextPart(text="count to 50")), max_tokens=5))
    )
    assert response.finish == "length"


def test_server_error_raises_provider_error(fake: FakeLLMProcess) -> None:
    req = request(msg("user", TextPart(text="[[status=500]] hello")))
    with pytest.raises(ProviderError) as info:
        run(fake, lambda p: p.complete(req))
    assert (info.value.kind, info.value.status) == ("server", 500)
    with pytest.raises(ProviderError) as streamed:
        run(fake, lambda p: collect(p, req))
    assert streamed.value.kind == "server"


def test_dropped_stream_raises_provider_error(fake: FakeLLMProcess) -> None:
    req = request(msg("user", TextPart(text="[[cut=2]] count to 20")))
    with pytest.raises(ProviderError) as info:
        run(fake, lambda p: collect(p, req))
    assert info.value.kind == "connection"


def test_context_length_exceeded() -> None:
    small = start_fake_llm("--max-context-tokens", "10")
    try:
        req = request(msg("user", TextPart(text="hello " * 200)))
        with pytest.raises(ProviderError) as info:
            run(small, lambda p: p.complete(req))
    finally:
        small.stop()
    assert (info.value.kind, info.value.status) == ("context_length", 400)
