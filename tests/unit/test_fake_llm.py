"""The fake LLM provider, driven through the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from parley.fake_llm import FakeLLMOptions, FakeLLMThread, start_fake_llm
from parley.fake_llm.anthropic_wire import signature_for
from parley.fake_llm.conversation import Conversation, ToolResult, Turn
from parley.fake_llm.directives import Directives, extract_directives
from parley.fake_llm.script import decide
from parley.fake_llm.tokens import estimate_tokens, split_tokens

pytestmark = pytest.mark.timeout(5)

REPO_ROOT = Path(__file__).resolve().parents[2]
DICE_SCHEMA = {
    "type": "object",
    "properties": {"num_sides": {"type": "integer"}},
    "required": ["num_sides"],
}
CHAT_TOOLS: Any = [{"type": "function", "function": {"name": "roll_dice", "parameters": DICE_SCHEMA}}]
RESPONSES_TOOLS: Any = [{"type": "function", "name": "roll_dice", "parameters": DICE_SCHEMA}]
ANTHROPIC_TOOLS: Any = [{"name": "roll_dice", "description": "Roll a die.", "input_schema": DICE_SCHEMA}]
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMThread]:
    with FakeLLMThread() as server:
        yield server


@pytest.fixture(scope="module")
def oai(fake: FakeLLMThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="fake", max_retries=0, timeout=5)


@pytest.fixture(scope="module")
def ant(fake: FakeLLMThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key="fake", max_retries=0, timeout=5)


def user(text: str) -> Any:
    return {"role": "user", "content": text}


def http(fake: FakeLLMThread, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        fake.base_url + path, data=body, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---- pure logic ----------------------------------------------------------------------------


def conv_of(*user_texts: str, tools: dict[str, Any] | None = None, can_reason: bool = False) -> Conversation:
    return Conversation(
        model="m", turns=[Turn("user", t) for t in user_texts], tools=tools or {}, can_reason=can_reason
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello!", "Hello! How can I help you today?"),
        ("hey", "Hello! How can I help you today?"),
        ("remember the word: banana", "Okay, I will remember the word banana."),
        ("Please reply with Blue sky.", "Blue sky"),
        ("say   hi there", "hi there"),
        ("echo Same. Text.", "Same. Text."),
        ("count to 3", "1 2 3"),
        ("think about rain.", "I thought about rain."),
        ("what word did I tell you?", "I don't know any word."),
        ("call tool fly", "I have no tool named fly."),
        ("something else", "You said: something else"),
    ],
)
def test_script_rules(text: str, expected: str) -> None:
    assert decide(conv_of(text), text).text == expected


def test_script_recall_uses_most_recent_word() -> None:
    conv = conv_of("remember the word: one", "remember the word two.", "which word?")
    assert decide(conv, "which word?").text == "The word is two."


def test_script_tool_call_arguments() -> None:
    conv = conv_of(tools={"roll_dice": DICE_SCHEMA})
    placeholder = decide(conv, "call roll_dice").tool_call
    assert placeholder is not None and json.loads(placeholder.arguments) == {"num_sides": 1}
    given = decide(conv, 'call tool roll_dice with {"num_sides": 20} and say Rolling.')
    assert given.text == "Rolling"
    assert given.tool_call is not None and json.loads(given.tool_call.arguments) == {"num_sides": 20}


def test_script_tool_result_and_reasoning() -> None:
    conv = conv_of("x", can_reason=True)
    conv.tool_result = ToolResult("roll_dice", "4")
    reply = decide(conv, "4")
    assert reply.text == "Tool roll_dice returned: 4"
    assert reply.reasoning
    assert (
        decide(conv_of("think about it", can_reason=True), "think about it").reasoning == "Thinking about it."
    )


def test_script_count_is_capped() -> None:
    assert decide(conv_of(), "count to 999999").text.endswith(" 10000")


def test_directives_are_parsed_and_stripped() -> None:
    found, text = extract_directives(
        "[[latency=0.5]] hi [[TOKEN_DELAY=0.01]][[status=429]] [[cut=3]] [[hang]]"
    )
    assert found == Directives(latency=0.5, token_delay=0.01, status=429, cut=3, hang=True)
    assert text == "hi"
    assert extract_directives("plain [[other]] text") == (Directives(), "plain [[other]] text")
    assert extract_directives("[[status=200]] x")[0].status is None  # not an error status: ignored


def test_fault_directives_are_parsed() -> None:
    found, text = extract_directives(
        "[[reset]] [[stall=1.5]] [[stall_after=4]] [[retry_after=2.5]] [[status=500,502,503]] go"
    )
    assert text == "go"
    assert (found.reset, found.reset_after) == (True, None)
    assert (found.stall, found.stall_after, found.retry_after) == (1.5, 4, "2.5")
    assert found.status == 500 and found.statuses == (500, 502, 503)
    assert [found.status_for_attempt(n) for n in (1, 2, 3, 4)] == [500, 502, 503, 503]
    assert extract_directives("[[reset=0]] x")[0].reset_after == 0
    assert extract_directives("[[reset=-1]] x")[0] == Directives()  # malformed: ignored
    assert extract_directives("[[status=500,200]] x")[0].status is None  # one bad status spoils it
    assert extract_directives("[[retry_after=soon]] x")[0].retry_after is None
    # Past `fail_first`, only what is not a fault stays.
    transient, _ = extract_directives("[[fail_first=1]] [[latency=3]] [[token_delay=0.1]] x")
    assert transient.has_fault
    assert transient.without_faults() == Directives(token_delay=0.1)


def test_tokens() -> None:
    text = "  Hello there,  world \n again"
    assert "".join(split_tokens(text)) == text
    assert split_tokens("a b") == ["a ", "b"]
    assert estimate_tokens("12345") == 2 and estimate_tokens("") == 0


# ---- OpenAI chat completions ---------------------------------------------------------------


def test_chat_completion(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(model="gpt-test", messages=[user("hello")])
    assert result.model == "gpt-test"
    assert result.id.startswith("chatcmpl-")
    assert result.choices[0].message.content == "Hello! How can I help you today?"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.prompt_tokens == math.ceil(len("hello") / 4)
    assert result.usage.completion_tokens == 7


def test_chat_completion_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-test",
            messages=[user("count to 5")],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "1 2 3 4 5"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_chat_tool_call_round_trip(oai: openai.OpenAI) -> None:
    messages: list[Any] = [user("Please call roll_dice")]
    first = oai.chat.completions.create(model="gpt-test", messages=messages, tools=CHAT_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "roll_dice"
    assert json.loads(call.function.arguments) == {"num_sides": 1}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "4"})
    second = oai.chat.completions.create(model="gpt-test", messages=messages, tools=CHAT_TOOLS)
    assert second.choices[0].message.content == "Tool roll_dice returned: 4"


def test_chat_streamed_tool_call(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="gpt-test",
        tools=CHAT_TOOLS,
        messages=[user('call tool roll_dice with {"num_sides": 20}')],
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"num_sides": 20}]


def test_chat_unknown_tool(oai: openai.OpenAI) -> None:
    missing = oai.chat.completions.create(model="m", messages=[user("call tool fly")], tools=CHAT_TOOLS)
    assert missing.choices[0].message.content == "I have no tool named fly."


def test_max_tokens_truncates_the_reply(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    chat = oai.chat.completions.create(model="m", messages=[user("count to 50")], max_completion_tokens=3)
    assert chat.choices[0].finish_reason == "length"
    assert (chat.choices[0].message.content or "").split() == ["1", "2", "3"]
    response = oai.responses.create(model="m", input="count to 50", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    with ant.messages.stream(model="c", max_tokens=3, messages=[user("count to 50")]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_remember_and_recall_across_turns(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    history: list[Any] = [
        user("remember the word: pineapple"),
        {"role": "assistant", "content": "Okay, I will remember the word pineapple."},
        user("tell me a joke"),
        {"role": "assistant", "content": "You said: tell me a joke"},
        user("What word did I ask you to remember?"),
    ]
    chat = oai.chat.completions.create(model="m", messages=history)
    assert chat.choices[0].message.content == "The word is pineapple."
    message = ant.messages.create(model="c", max_tokens=100, messages=history)
    assert message.content[0].type == "text" and message.content[0].text == "The word is pineapple."


# ---- OpenAI Responses API ------------------------------------------------------------------


def test_responses_create_with_reasoning(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model="gpt-test",
        input="think about tides",
        instructions="Be brief.",
        reasoning={"effort": "low", "summary": "auto"},
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "I thought about tides."
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "Thinking about tides."
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    plain = oai.responses.create(model="gpt-test", input="think about tides")
    assert [item.type for item in plain.output] == ["message"]


def test_responses_stream_event_order(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-test", input=[{"role": "user", "content": "say one two"}]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "one two"


def test_responses_stream_reasoning_and_function_call(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="gpt-test",
        input="call roll_dice",
        tools=RESPONSES_TOOLS,
        reasoning={"effort": "low", "summary": "auto"},
    ) as stream:
        kinds = {e.type for e in stream}
        final = stream.get_final_response()
    assert {
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    } <= kinds
    assert [item.type for item in final.output] == ["reasoning", "function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_responses_reasoning_without_a_summary_asked(oai: openai.OpenAI, stream: bool) -> None:
    """The model reasons all the same (an item, its tokens billed) but hands out no summary."""
    request: dict[str, Any] = {
        "model": "gpt-test",
        "input": "think about tides",
        "reasoning": {"effort": "high"},
    }
    if stream:
        with oai.responses.stream(**request) as events:
            kinds = [e.type for e in events]
            response = events.get_final_response()
        assert not [k for k in kinds if k.startswith("response.reasoning_summary")]
        assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
    else:
        response = oai.responses.create(**request)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary == []
    assert response.output_text == "I thought about tides."
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_responses_no_summary_on_the_answer_to_a_tool_result(oai: openai.OpenAI, stream: bool) -> None:
    """The call that answers a function_call_output continues the turn: its reasoning item comes
    without a summary, though one is asked for."""
    reasoning = {"effort": "high", "summary": "auto"}
    first = oai.responses.create(
        model="gpt-test", input="call roll_dice", tools=RESPONSES_TOOLS, reasoning=reasoning
    )
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    assert first.output[0].summary
    call = first.output[1]
    request: dict[str, Any] = {
        "model": "gpt-test",
        "tools": RESPONSES_TOOLS,
        "reasoning": reasoning,
        "input": [
            {"role": "user", "content": "call roll_dice"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "5"},
        ],
    }
    if stream:
        with oai.responses.stream(**request) as events:
            kinds = [e.type for e in events]
            second = events.get_final_response()
        assert not [k for k in kinds if k.startswith("response.reasoning_summary")]
    else:
        second = oai.responses.create(**request)
    assert [item.type for item in second.output] == ["reasoning", "message"]
    assert second.output[0].summary == []
    assert second.output_text == "Tool roll_dice returned: 5"


def test_responses_function_call_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-test", input="call roll_dice", tools=RESPONSES_TOOLS)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "roll_dice"
    second = oai.responses.create(
        model="gpt-test",
        tools=RESPONSES_TOOLS,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "call roll_dice"}]},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "5"},
        ],
    )
    assert second.output_text == "Tool roll_dice returned: 5"


# ---- Anthropic Messages --------------------------------------------------------------------


def test_anthropic_message(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="claude-test",
        max_tokens=100,
        system=[{"type": "text", "text": "Be nice."}],
        messages=[user("echo Hi, there")],
    )
    assert message.id.startswith("msg_") and message.model == "claude-test"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == "Hi, there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == math.ceil((len("Be nice.") + len("echo Hi, there")) / 4)
    assert message.usage.output_tokens == 2


def test_anthropic_stream(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="c", max_tokens=100, messages=[user("count to 4")]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "1 2 3 4"
    assert final.content[0].type == "text" and final.content[0].text == "1 2 3 4"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


def test_anthropic_tool_use_with_text_first(ant: anthropic.Anthropic) -> None:
    messages: list[Any] = [user("call roll_dice and say Rolling now.")]
    with ant.messages.stream(model="c", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.stop_reason == "tool_use"
    text, tool_use = final.content
    assert text.type == "text" and text.text == "Rolling now"
    assert tool_use.type == "tool_use" and tool_use.input == {"num_sides": 1}

    messages.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]}
    )
    messages.append(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use.id,
                    "content": [{"type": "text", "text": "6"}],
                },
            ],
        }
    )
    answer = ant.messages.create(model="c", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS)
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "Tool roll_dice returned: 6"


def test_anthropic_thinking(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="c", max_tokens=2000, thinking=THINKING, messages=[user("think about stars")]
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Thinking about stars."
    assert thinking.signature == signature_for("Thinking about stars.")
    assert text.type == "text" and text.text == "I thought about stars."

    with ant.messages.stream(
        model="c", max_tokens=2000, thinking=THINKING, messages=[user("think about stars")]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == "Thinking about stars."
    assert final.content[0].signature == thinking.signature


def test_anthropic_count_tokens_and_models(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    counted = ant.messages.count_tokens(model="c", messages=[user("12345678")])
    assert counted.input_tokens == 2
    assert "fake-model" in [m.id for m in oai.models.list()]
    assert "fake-model" in [m.id for m in ant.models.list()]


# ---- failures and directives ---------------------------------------------------------------


def test_context_length_exceeded() -> None:
    with FakeLLMThread(FakeLLMOptions(max_context_tokens=10)) as small:
        oai = openai.OpenAI(base_url=small.openai_base_url, api_key="fake", max_retries=0)
        ant = anthropic.Anthropic(base_url=small.base_url, api_key="fake", max_retries=0)
        long_text = "x" * 100  # 25 tokens
        with pytest.raises(openai.BadRequestError) as oai_error:
            oai.chat.completions.create(model="m", messages=[user(long_text)])
        assert oai_error.value.code == "context_length_exceeded"
        assert "maximum context length is 10 tokens" in oai_error.value.message
        assert "resulted in 25 tokens" in oai_error.value.message
        with pytest.raises(anthropic.BadRequestError) as ant_error:
            ant.messages.create(model="c", max_tokens=10, messages=[user(long_text)])
        assert "prompt is too long: 25 tokens > 10 maximum" in ant_error.value.message


def test_status_directive(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(model="m", messages=[user("[[status=429]] hi")])
    assert rate.value.code == "rate_limit_exceeded"
    assert rate.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="m", input="[[status=500]] hi")
    with pytest.raises(anthropic.RateLimitError) as ant_rate:
        ant.messages.create(model="c", max_tokens=10, messages=[user("hi [[status=429]]")])
    assert ant_rate.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.OverloadedError):
        ant.messages.create(model="c", max_tokens=10, messages=[user("[[status=529]] hi")], stream=True)


def test_fail_first_directive_is_transient(oai: openai.OpenAI) -> None:
    prompt = "[[fail_first=2]] [[status=429]] say unique-7f3a"
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            oai.chat.completions.create(model="m", messages=[user(prompt)])
    third = oai.chat.completions.create(model="m", messages=[user(prompt)])
    assert third.choices[0].message.content == "unique-7f3a"
    with pytest.raises(openai.InternalServerError) as overloaded:  # 503 when no status is given
        oai.chat.completions.create(model="m", messages=[user("[[fail_first=1]] say other-91b2")])
    assert overloaded.value.status_code == 503


def test_status_burst_and_retry_after(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    prompt = "[[fail_first=2]] [[status=500,502]] [[retry_after=0.5]] say burst-5c1d"
    seen = []
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as failed:
            oai.chat.completions.create(model="m", messages=[user(prompt)])
        seen.append(failed.value.status_code)
        assert failed.value.response.headers["retry-after"] == "0.5"
    assert seen == [500, 502]
    third = oai.chat.completions.create(model="m", messages=[user(prompt)])
    assert third.choices[0].message.content == "burst-5c1d"
    # Without fail_first the burst goes on: its last status repeats.
    persistent = "[[status=502,503]] say burst-77aa"
    statuses = []
    for _ in range(3):
        with pytest.raises(anthropic.APIStatusError) as refused:
            ant.messages.create(model="c", max_tokens=10, messages=[user(persistent)])
        statuses.append(refused.value.status_code)
    assert statuses == [502, 503, 503]
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.create(model="c", max_tokens=10, messages=[user("[[status=429]] [[retry_after=30]] hi")])
    assert limited.value.response.headers["retry-after"] == "30"


def test_fail_first_applies_to_every_fault(oai: openai.OpenAI) -> None:
    slow = "[[fail_first=1]] [[latency=0.4]] say spike-0b3e"
    started = time.monotonic()
    oai.chat.completions.create(model="m", messages=[user(slow)])
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    second = oai.chat.completions.create(model="m", messages=[user(slow)])
    assert time.monotonic() - started < 0.4  # the spike is over
    assert second.choices[0].message.content == "spike-0b3e"
    reset = "[[fail_first=1]] [[reset]] say reset-52d0"
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=[user(reset)])
    assert oai.chat.completions.create(model="m", messages=[user(reset)]).choices[0].message.content == (
        "reset-52d0"
    )


def test_reset_directive(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    # Before any response: not even headers come back.
    with pytest.raises(openai.APIConnectionError) as no_answer:
        oai.chat.completions.create(model="m", messages=[user("[[reset]] hi")])
    assert no_answer.value.__cause__ is not None
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="c", max_tokens=10, messages=[user("[[reset]] hi")], stream=True)
    # Mid-stream: the first K tokens arrive, then the connection is reset.
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="m", stream=True, messages=[user("[[reset=2]] count to 20")]
        ):
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == "1 2 "
    received: list[str] = []
    with pytest.raises(httpx2.ReadError):  # the anthropic SDK lets the transport's error through
        with ant.messages.stream(model="c", max_tokens=100, messages=[user("[[reset=0]] count to 9")]) as s:
            received.extend(s.text_stream)
    assert received == []


def test_stall_directive(fake: FakeLLMThread, oai: openai.OpenAI) -> None:
    # A stall the client waits out: the reply completes, late.
    started = time.monotonic()
    stream = oai.chat.completions.create(
        model="m", stream=True, messages=[user("[[stall=0.3]] [[stall_after=2]] count to 4")]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "1 2 3 4"
    assert time.monotonic() - started >= 0.3
    # A stall longer than the client's timeout: the stream opened, then the read timed out.
    impatient = openai.OpenAI(base_url=fake.openai_base_url, api_key="fake", max_retries=0, timeout=0.3)
    pieces: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in impatient.chat.completions.create(
            model="m", stream=True, messages=[user("[[stall=2]] [[stall_after=1]] count to 4")]
        ):
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == "1 "
    started = time.monotonic()
    late = oai.chat.completions.create(model="m", messages=[user("[[stall=0.3]] say late")])
    assert late.choices[0].message.content == "late" and time.monotonic() - started >= 0.3


def test_cut_directive_ends_stream_early(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="m", stream=True, messages=[user("[[cut=3]] count to 20")]
        ):
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == "1 2 3 "

    received: list[str] = []
    try:
        with ant.messages.stream(
            model="c", max_tokens=100, messages=[user("count to 20 [[cut=3]]")]
        ) as stream:
            received.extend(stream.text_stream)
    except Exception:
        pass  # an early end without an error would also be acceptable
    assert "".join(received) == "1 2 3 "

    with pytest.raises(openai.APIConnectionError):  # not streamed: dropped before any reply
        oai.chat.completions.create(model="m", messages=[user("[[cut=1]] hi")])


def test_latency_and_token_delay_directives(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    reply = oai.chat.completions.create(model="m", messages=[user("[[latency=0.3]] hi")])
    assert time.monotonic() - started >= 0.3
    assert reply.choices[0].message.content == "Hello! How can I help you today?"

    started = time.monotonic()
    stream = oai.chat.completions.create(
        model="m", stream=True, messages=[user("[[token_delay=0.05]] count to 5")]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "1 2 3 4 5"
    assert time.monotonic() - started >= 0.2  # four gaps between five tokens


def test_hang_directive_until_client_leaves(fake: FakeLLMThread) -> None:
    impatient = openai.OpenAI(base_url=fake.openai_base_url, api_key="fake", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=[user("[[hang]] hi")])
    deadline = time.monotonic() + 1.0
    while http(fake, "GET", "/_fake/stats")[1]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http(fake, "GET", "/_fake/stats")[1]["in_flight"] == 0


def test_bad_requests(fake: FakeLLMThread) -> None:
    status, body = http(fake, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = http(fake, "POST", "/v1/chat/completions", json.dumps({"model": "m"}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = http(fake, "POST", "/v1/responses", json.dumps({"input": "hi"}).encode())
    assert status == 400 and body["error"]["param"] == "model"
    status, body = http(fake, "POST", "/v1/messages", json.dumps({"model": "c"}).encode())
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_health_and_stats(fake: FakeLLMThread, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    assert http(fake, "GET", "/health") == (200, {"status": "ok"})
    assert http(fake, "POST", "/_fake/reset")[1]["total"] == 0
    oai.chat.completions.create(model="m", messages=[user("hi")])
    oai.chat.completions.create(model="m", messages=[user("hi")])
    ant.messages.create(model="c", max_tokens=10, messages=[user("hi")])
    stats = http(fake, "GET", "/_fake/stats")[1]
    assert stats["requests"] == {"/v1/chat/completions": 2, "/v1/messages": 1}
    assert stats["total"] == 3 and stats["in_flight"] == 0


# ---- starting the server -------------------------------------------------------------------


def test_async_starter_with_async_clients() -> None:
    async def scenario() -> tuple[str | None, str]:
        runner, port = await start_fake_llm("127.0.0.1", 0, FakeLLMOptions())
        try:
            oai = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="fake", max_retries=0)
            ant = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="fake", max_retries=0)
            chat, message = await asyncio.gather(
                oai.chat.completions.create(model="m", messages=[user("say async")]),
                ant.messages.create(model="c", max_tokens=10, messages=[user("say async")]),
            )
            await oai.close()
            await ant.close()
        finally:
            await runner.cleanup()
        block = message.content[0]
        return chat.choices[0].message.content, block.text if block.type == "text" else ""

    assert asyncio.run(scenario()) == ("async", "async")


def test_cli_prints_listening_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "parley.fake_llm", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"fake-llm listening on http://127\.0\.0\.1:(\d+)\n", line)
        assert match is not None, line
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/health", timeout=2) as response:
            assert json.loads(response.read()) == {"status": "ok"}
    finally:
        process.terminate()
        assert process.wait(timeout=3) == 0


def test_tool_choice_in_every_wire_form_is_understood() -> None:
    from parley.fake_llm.conversation import ANY_TOOL, forced_tool

    assert forced_tool("required") == ANY_TOOL
    assert forced_tool({"type": "any"}) == ANY_TOOL
    assert forced_tool({"type": "function", "function": {"name": "a"}}) == "a"  # chat completions
    assert forced_tool({"type": "function", "name": "b"}) == "b"  # Responses
    assert forced_tool({"type": "tool", "name": "c"}) == "c"  # Anthropic
    for unforced in (None, "auto", "none", {"type": "auto"}, {"type": "function"}):
        assert forced_tool(unforced) is None
