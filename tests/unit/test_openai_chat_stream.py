"""The chat-completions adapter's stream, read as plain dicts, against the fake provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from parley.processes import FakeLLMProcess, start_fake_llm
from runtime.message import Message, TextPart, ToolCallPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse, ToolSchema
from runtime.providers.openai import OpenAIProvider, _StreamAssembly

pytestmark = pytest.mark.timeout(20)

DICE = ToolSchema(
    name="roll_dice",
    description="Roll a die.",
    parameters={"type": "object", "properties": {"num_sides": {"type": "integer"}}},
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    process = start_fake_llm()
    yield process
    process.stop()


def stream(fake: FakeLLMProcess, text: str, tools: list[ToolSchema]) -> list[ModelDelta | ModelResponse]:
    async def main() -> list[ModelDelta | ModelResponse]:
        provider = OpenAIProvider(api_key="fake", base_url=fake.openai_base_url, max_retries=0, timeout=10)
        request = ModelRequest(
            provider="openai",
            model="gpt-4o-mini",
            system="Be brief.",
            messages=[Message(role="user", parts=[TextPart(text=text)], agent_id="agent-1")],
            tools=tools,
        )
        try:
            return [item async for item in provider.stream(request)]
        finally:
            for client in provider._clients.values():
                await client.close()

    return asyncio.run(main())


def test_streamed_text_adds_up_to_the_response(fake: FakeLLMProcess) -> None:
    *deltas, final = stream(fake, "echo one two three four", [])
    assert isinstance(final, ModelResponse) and final.finish == "stop"
    assert all(isinstance(d, ModelDelta) and d.part == "text" and d.index == 0 for d in deltas)
    assert len(deltas) > 1  # token by token, as the provider sent them
    assert "".join(d.text for d in deltas if isinstance(d, ModelDelta)) == "one two three four"
    assert final.parts == [TextPart(text="one two three four")]
    assert final.prompt_tokens > 0 and final.completion_tokens > 0


def test_streamed_tool_call_carries_its_identity(fake: FakeLLMProcess) -> None:
    *deltas, final = stream(fake, 'call roll_dice with {"num_sides": 16}', [DICE])
    assert isinstance(final, ModelResponse) and final.finish == "tool_calls"
    call = final.parts[-1]
    assert isinstance(call, ToolCallPart)
    assert (call.name, json.loads(call.arguments)) == ("roll_dice", {"num_sides": 16}) and call.id
    calls = [d for d in deltas if isinstance(d, ModelDelta) and d.part == "tool_call"]
    assert calls and all((d.tool_call_id, d.tool_name) == (call.id, "roll_dice") for d in calls)
    assert "".join(d.text for d in calls) == call.arguments


def test_assembly_takes_wire_dicts() -> None:
    assembly = _StreamAssembly()
    fragments: list[dict[str, Any]] = [
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "g"}}]},
    ]
    out = [d for fragment in fragments for d in assembly.feed(fragment)]
    assert out[0] == ModelDelta("text", 0, "Hi")
    assert [(d.index, d.text, d.tool_call_id, d.tool_name) for d in out[1:]] == [
        (1, '{"a"', "call_1", "f"),
        (1, ": 1}", "call_1", "f"),
        (2, "", "call_2", "g"),
    ]
    final = assembly.response()
    assert final.parts == [
        TextPart(text="Hi"),
        ToolCallPart(id="call_1", name="f", arguments='{"a": 1}'),
        ToolCallPart(id="call_2", name="g", arguments="{}"),  # no arguments streamed: an empty object
    ]
