"""The send-mode x model matrix: a greeting and a roll_dice tool call, through ``letta-client``.

Every mode (step, stream steps, stream tokens, background with replay, async) on every model
family the fake provider speaks (OpenAI chat, OpenAI reasoning via the Responses API, Anthropic,
Anthropic with extended thinking), to the agent's default conversation and to a named one.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from .test_tools import ROLL_DICE, ROLL_PROMPT

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream

GREETING = "Hi!"
MODELS: dict[str, dict[str, Any]] = {
    "gpt-4o-mini": {"model": "openai/gpt-4o-mini"},
    "o4-mini": {"model": "openai/o4-mini"},
    "claude": {"model": "anthropic/claude-sonnet-4-5"},
    "claude-thinking": {
        "model": "anthropic/claude-sonnet-4-5",
        "model_settings": {
            "provider_type": "anthropic",
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        },
    },
}
REASONS = {"o4-mini", "claude-thinking"}
MODES = ("step", "stream_steps", "stream_tokens", "background", "async")
CASES = [
    (model, mode, target)
    for model in MODELS
    for mode in MODES
    for target in ("default", "named")
    if not (mode == "async" and target == "named")  # create_async exists for agents only
]


@pytest.fixture(scope="module")
def dice_tool(client_module):
    return client_module.tools.upsert(source_code=ROLL_DICE)


@pytest.fixture(scope="module")
def client_module(server):
    from letta_client import Letta

    with Letta(base_url=server.url) as letta:
        yield letta


@pytest.fixture(scope="module")
def agents(client_module, dice_tool):
    made = {
        name: client_module.agents.create(
            embedding="openai/text-embedding-3-small",
            memory_blocks=[{"label": "human", "value": "The user is Ada."}],
            tool_ids=[dice_tool.id],
            **spec,
        )
        for name, spec in MODELS.items()
    }
    yield made
    for agent in made.values():
        client_module.agents.delete(agent.id)


def expected(model: str, prompt: str) -> list[str]:
    reasoning = ["reasoning_message"] if model in REASONS else []
    if prompt == GREETING:
        return [*reasoning, "assistant_message"]
    return [*reasoning, "tool_call_message", "tool_return_message", *reasoning, "assistant_message"]


def merged(chunks: list[Any]) -> list[Any]:
    """Token-streamed chunks of one message folded into one entry (same type and id)."""
    out: list[Any] = []
    for chunk in chunks:
        if chunk.message_type in ("ping", "stop_reason", "usage_statistics"):
            continue
        if out and (out[-1].message_type, out[-1].id) == (chunk.message_type, chunk.id):
            continue
        out.append(chunk)
    return out


def send(
    client, server_url: str, agent_id: str, target: str, mode: str, prompt: str
) -> tuple[list[Any], str]:
    """Send ``prompt`` in ``mode``; returns (the agent's messages, stop reason)."""
    messages = [{"role": "user", "content": prompt}]
    if target == "named":
        conversation_id = client.conversations.create(agent_id=agent_id).id
    if mode == "step":
        if target == "default":
            response = client.agents.messages.create(agent_id, messages=messages)
            return list(response.messages), response.stop_reason.stop_reason
        # The SDK reads every conversation send as SSE; the JSON form is asked for on the wire.
        body = httpx.post(
            f"{server_url}/v1/conversations/{conversation_id}/messages",
            json={"messages": messages, "streaming": False},
            timeout=30,
        ).json()
        return [_Obj(m) for m in body["messages"]], body["stop_reason"]["stop_reason"]
    if mode == "async":
        run = client.agents.messages.create_async(agent_id, messages=messages)
        deadline = time.monotonic() + 30
        while (status := client.runs.retrieve(run.id).status) not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        listed = [m for m in client.runs.messages.list(run.id).items if m.message_type != "user_message"]
        return listed, client.runs.retrieve(run.id).stop_reason or status
    options: dict[str, Any] = {}
    if mode == "stream_tokens":
        options["stream_tokens"] = True
    if mode == "background":
        options.update(background=True, stream_tokens=True)
    if target == "default":
        stream = client.agents.messages.stream(agent_id, messages=messages, **options)
    else:
        stream = client.conversations.messages.create(conversation_id, messages=messages, **options)
    chunks = list(stream)
    for chunk in chunks:
        if chunk.message_type not in ("stop_reason", "usage_statistics"):
            assert chunk.run_id, chunk
    if mode == "background":
        # A replay from the start is the same stream, and so is one from the middle onward.
        run_id = chunks[0].run_id
        replay = list(client.runs.messages.stream(run_id, starting_after=0))

        def shape(items: list[Any]) -> list[tuple[str, str | None, int | None]]:
            # Pings are made afresh for each reader; everything else is the stored stream.
            return [
                (c.message_type, None if c.message_type == "ping" else getattr(c, "id", None), c.seq_id)
                for c in items
            ]

        assert shape(replay) == shape(chunks)
        middle = len(replay) // 2
        tail = list(client.runs.messages.stream(run_id, starting_after=replay[middle].seq_id))
        assert all(c.seq_id > replay[middle].seq_id for c in tail if c.seq_id is not None)
    stop = next(c.stop_reason for c in chunks if c.message_type == "stop_reason")
    return merged(chunks), stop


class _Obj:
    """Attribute access over a JSON message, like the SDK's models."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


def text_of(messages: list[Any], message_type: str, client_chunks: list[Any] | None = None) -> str:
    return "".join(getattr(m, "content", "") or "" for m in messages if m.message_type == message_type)


@pytest.mark.parametrize(("model", "mode", "target"), CASES)
def test_greeting(client_module, server, agents, model, mode, target):
    messages, stop = send(client_module, server.url, agents[model].id, target, mode, GREETING)
    assert [m.message_type for m in messages] == expected(model, GREETING)
    assert stop == "end_turn"
    if mode not in ("stream_tokens", "background"):
        assert messages[-1].content == "Hello! How can I help you today?"


@pytest.mark.parametrize(("model", "mode", "target"), CASES)
def test_roll_dice(client_module, server, agents, model, mode, target):
    messages, stop = send(client_module, server.url, agents[model].id, target, mode, ROLL_PROMPT)
    assert [m.message_type for m in messages] == expected(model, ROLL_PROMPT)
    assert stop == "end_turn"
    call = next(m for m in messages if m.message_type == "tool_call_message")
    returned = next(m for m in messages if m.message_type == "tool_return_message")
    tool_call = call.tool_call if isinstance(call.tool_call, dict) is False else _Obj(call.tool_call)
    assert tool_call.name == "roll_dice"
    assert returned.status == "success", returned.tool_return
    assert 1 <= int(returned.tool_return) <= 16
    if mode not in ("stream_tokens", "background"):
        assert tool_call.arguments == '{"num_sides": 16}'
        assert f"returned: {returned.tool_return}" in messages[-1].content
