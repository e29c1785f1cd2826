"""Seed 001 ported test by test: Letta's send-message tests (greeting, roll_dice tool call), every
send mode x every model configuration of the seed, through ``letta-client`` 1.12.1.

The seed's flow: take the agent's newest message with ``agents.messages.list(limit=1)``, switch the
agent's model, send, check what came back, replay a background run from ``starting_after=0``, then
list the agent's messages ``after=`` that newest one and expect exactly the new turn.

The seed's model configurations name real providers; each is mapped onto the fake provider by the
wire it speaks (the seed's own reasoning rules, ``is_reasoner`` below, say what each must show):
the OpenAI chat wire (gpt-4o-mini; gemini-2.5-flash through an OpenAI-compatible endpoint, as the
fake speaks no Gemini wire), the OpenAI Responses wire (o3 at medium reasoning effort, gpt-5 at
high: a reasoning summary is asked for, and so shown, only at high effort, and only before the
tool call of a turn) and the Anthropic wire (claude-3-5-sonnet; claude-3-7-sonnet with extended
thinking). The 1.x SDK names are used for the seed's 0.x calls
(``agents.update`` for ``modify``, ``agents.messages.stream`` for ``create_stream``,
``runs.messages.stream`` for ``runs.stream``, ``tools.upsert`` for ``upsert_from_function``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from letta_client import Letta

from .test_tools import ROLL_DICE

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # agents.messages.stream


@dataclass(frozen=True)
class SeedConfig:
    """One of the seed's LLM configurations, as this server reaches it on the fake provider."""

    name: str
    endpoint_type: str  # the seed config's model_endpoint_type: "anthropic" says a word before a call
    update: dict[str, Any] = field(default_factory=dict)  # agents.update(...) that selects it
    openai_reasoning: bool = False
    reasoning_effort: str | None = None
    anthropic_reasoning: bool = False


def _openai_reasoner(name: str, model: str, effort: str) -> SeedConfig:
    """An OpenAI reasoning model at ``effort``, set through the agent's model settings."""
    settings = {"provider_type": "openai", "reasoning": {"reasoning_effort": effort}}
    update = {"model": model, "model_settings": settings}
    return SeedConfig(name, "openai", update, openai_reasoning=True, reasoning_effort=effort)


TESTED_LLM_CONFIGS = [
    SeedConfig("gpt-4o-mini", "openai", {"model": "openai/gpt-4o-mini"}),
    _openai_reasoner("openai-o3", "openai/o3", "medium"),
    _openai_reasoner("openai-gpt-5", "openai/gpt-5", "high"),
    SeedConfig("claude-3-5-sonnet", "anthropic", {"model": "anthropic/claude-3-5-sonnet-20241022"}),
    SeedConfig(
        "claude-3-7-sonnet-extended",
        "anthropic",
        {
            "model": "anthropic/claude-3-7-sonnet-20250219",
            "model_settings": {
                "provider_type": "anthropic",
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
        },
        anthropic_reasoning=True,
    ),
    SeedConfig("gemini-2.5-flash", "google_ai", {"model": "localai/gemini-2.5-flash"}),
]
SEND_TYPES = ["step", "stream_steps", "stream_tokens", "stream_tokens_background", "async"]

USER_MESSAGE_OTID = str(uuid.uuid4())
USER_MESSAGE_RESPONSE = "Teamwork makes the dream work"
USER_MESSAGE_FORCE_REPLY = [
    {
        "role": "user",
        "content": f"This is an automated test message. Reply with the message '{USER_MESSAGE_RESPONSE}'.",
        "otid": USER_MESSAGE_OTID,
    }
]
USER_MESSAGE_ROLL_DICE = [
    {
        "role": "user",
        "content": "This is an automated test message. Call the roll_dice tool with 16 sides and reply back to me with the outcome.",
        "otid": USER_MESSAGE_OTID,
    }
]


def is_reasoner(config: SeedConfig) -> bool:
    return (config.openai_reasoning and config.reasoning_effort == "high") or config.anthropic_reasoning


def _not_ping(messages: list[Any]) -> list[Any]:
    return [m for m in messages if getattr(m, "message_type", None) != "ping"]


def get_expected_message_count(
    config: SeedConfig, tool_call: bool = False, streaming: bool = False, from_db: bool = False
) -> int:
    count = 1  # assistant message
    if is_reasoner(config):
        count += 1
    if tool_call:
        count += 2  # tool call and tool return
        if config.endpoint_type == "anthropic":
            count += 1  # anthropic models say something before the tool call
    if from_db:
        count += 1  # user message
    if streaming:
        count += 2  # stop reason and usage statistics
    return count


def _assert_count(messages: list[Any], expected: int, config: SeedConfig) -> None:
    if config.openai_reasoning:  # the seed lets a reasoning summary be missing
        assert len(messages) in (expected, expected - 1), messages
    else:
        assert len(messages) == expected, [m.message_type for m in messages]


def _assert_tail(messages: list[Any], index: int) -> None:
    assert messages[index].message_type == "stop_reason"
    assert messages[index].stop_reason == "end_turn"
    index += 1
    usage = messages[index]
    assert usage.message_type == "usage_statistics"
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens > 0
    assert usage.step_count > 0


def _reasoning_first(messages: list[Any], index: int, config: SeedConfig) -> tuple[int, int]:
    otid_suffix = 0
    if is_reasoner(config) and (
        not config.openai_reasoning or messages[index].message_type == "reasoning_message"
    ):
        assert messages[index].message_type == "reasoning_message"
        assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
        index += 1
        otid_suffix += 1
    return index, otid_suffix


def assert_greeting_response(
    messages: list[Any],
    config: SeedConfig,
    streaming: bool = False,
    token_streaming: bool = False,
    from_db: bool = False,
) -> None:
    """The seed's sequence: [UserMessage] -> [ReasoningMessage] -> AssistantMessage [-> stop, usage]."""
    messages = _not_ping(messages)
    _assert_count(messages, get_expected_message_count(config, streaming=streaming, from_db=from_db), config)
    index = 0
    if from_db:
        assert messages[index].message_type == "user_message"
        assert messages[index].otid == USER_MESSAGE_OTID
        index += 1
    index, otid_suffix = _reasoning_first(messages, index, config)
    assert messages[index].message_type == "assistant_message"
    if not token_streaming:
        assert "teamwork" in messages[index].content.lower()
    assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
    index += 1
    if streaming:
        _assert_tail(messages, index)


def assert_tool_call_response(
    messages: list[Any], config: SeedConfig, streaming: bool = False, from_db: bool = False
) -> None:
    """The seed's sequence: [UserMessage] -> [ReasoningMessage] -> [AssistantMessage (anthropic)] ->
    ToolCallMessage -> ToolReturnMessage -> AssistantMessage [-> stop, usage]."""
    messages = _not_ping(messages)
    expected = get_expected_message_count(config, tool_call=True, streaming=streaming, from_db=from_db)
    _assert_count(messages, expected, config)
    index = 0
    if from_db:
        assert messages[index].message_type == "user_message"
        assert messages[index].otid == USER_MESSAGE_OTID
        index += 1
    index, otid_suffix = _reasoning_first(messages, index, config)
    if config.endpoint_type == "anthropic":
        assert messages[index].message_type == "assistant_message"
        assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
        index += 1
        otid_suffix += 1
    assert messages[index].message_type == "tool_call_message"
    assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
    index += 1
    otid_suffix = 0
    assert messages[index].message_type == "tool_return_message"
    assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
    index += 1
    assert messages[index].message_type == "assistant_message"
    assert messages[index].otid and messages[index].otid[-1] == str(otid_suffix)
    index += 1
    if streaming:
        _assert_tail(messages, index)


def accumulate_chunks(chunks: Any, verify_token_streaming: bool = False) -> list[Any]:
    """The seed's fold of streamed chunks: one entry per run of chunks of one message type."""
    messages: list[Any] = []
    current_message = None
    prev_message_type = None
    chunk_count = 0
    for chunk in chunks:
        current_message_type = chunk.message_type
        if prev_message_type != current_message_type:
            messages.append(current_message)
            if (
                prev_message_type
                and verify_token_streaming
                and current_message.message_type
                in ["reasoning_message", "assistant_message", "tool_call_message"]
            ):
                assert chunk_count > 1, f"Expected more than one chunk for {current_message.message_type}"
            current_message = None
            chunk_count = 0
        if current_message is None:
            current_message = chunk
        prev_message_type = current_message_type
        chunk_count += 1
    messages.append(current_message)
    return [m for m in messages if m is not None]


def wait_for_run_completion(client: Letta, run_id: str, timeout: float = 30.0, interval: float = 0.1):
    start = time.monotonic()
    while True:
        run = client.runs.retrieve(run_id)
        if run.status == "completed":
            return run
        if run.status == "failed":
            raise RuntimeError(f"Run {run_id} did not complete: status = {run.status}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"Run {run_id} did not complete within {timeout} seconds ({run.status})")
        time.sleep(interval)


@pytest.fixture
def agent_state(client: Letta):
    """The seed's agent: no base tools, the roll_dice tool, tagged "test"."""
    dice_tool = client.tools.upsert(source_code=ROLL_DICE)
    agent = client.agents.create(
        agent_type="letta_v1_agent",
        name="test_agent",
        include_base_tools=False,
        tool_ids=[dice_tool.id],
        model="openai/gpt-4o",
        embedding="openai/text-embedding-3-small",
        tags=["test"],
    )
    yield agent
    client.agents.delete(agent.id)


def _send(
    client: Letta, agent_id: str, send_type: str, messages: list[dict[str, Any]]
) -> tuple[list[Any], str]:
    if send_type == "step":
        response = client.agents.messages.create(agent_id=agent_id, messages=messages)
        return list(response.messages), response.messages[0].run_id
    if send_type == "async":
        run = client.agents.messages.create_async(agent_id=agent_id, messages=messages)
        run = wait_for_run_completion(client, run.id)
        listed = [m for m in client.runs.messages.list(run_id=run.id) if m.message_type != "user_message"]
        return listed, run.id
    response = client.agents.messages.stream(
        agent_id=agent_id,
        messages=messages,
        stream_tokens=(send_type == "stream_tokens"),
        background=(send_type == "stream_tokens_background"),
    )
    chunks = accumulate_chunks(response)
    return chunks, chunks[0].run_id


@dataclass(frozen=True)
class SeedTurn:
    """One of the seed's two turns: what is sent, and the seed's check of what comes back."""

    messages: list[dict[str, Any]]
    check: Callable[..., None]  # (messages, config, streaming=, [token_streaming=,] from_db=)
    checks_token_streaming: bool  # only the greeting's check tells token streaming apart


GREETING = SeedTurn(USER_MESSAGE_FORCE_REPLY, assert_greeting_response, checks_token_streaming=True)
TOOL_CALL = SeedTurn(USER_MESSAGE_ROLL_DICE, assert_tool_call_response, checks_token_streaming=False)


def _seed_flow(
    client: Letta, agent_state: Any, llm_config: SeedConfig, send_type: str, turn: SeedTurn
) -> None:
    """The seed's test body, the same for both turns: switch the model, send, check what came back
    (and its replay, for a background run), then the new turn as the agent's messages list it."""
    last_message = client.agents.messages.list(agent_id=agent_state.id, limit=1)
    agent_state = client.agents.update(agent_id=agent_state.id, **llm_config.update)
    messages, run_id = _send(client, agent_state.id, send_type, turn.messages)
    streamed = {"streaming": ("stream" in send_type)}
    if turn.checks_token_streaming:
        streamed["token_streaming"] = send_type == "stream_tokens"
    turn.check(messages, llm_config, **streamed)
    if "background" in send_type:
        replayed = accumulate_chunks(client.runs.messages.stream(run_id, starting_after=0))
        turn.check(replayed, llm_config, **streamed)
    messages_from_db = client.agents.messages.list(agent_id=agent_state.id, after=last_message.items[0].id)
    turn.check(list(messages_from_db), llm_config, from_db=True)
    assert run_id is not None
    assert client.runs.retrieve(run_id=run_id).status == "completed"


@pytest.mark.parametrize("llm_config", TESTED_LLM_CONFIGS, ids=[c.name for c in TESTED_LLM_CONFIGS])
@pytest.mark.parametrize("send_type", SEND_TYPES)
def test_greeting(client: Letta, agent_state, llm_config: SeedConfig, send_type: str) -> None:
    _seed_flow(client, agent_state, llm_config, send_type, GREETING)


@pytest.mark.parametrize("llm_config", TESTED_LLM_CONFIGS, ids=[c.name for c in TESTED_LLM_CONFIGS])
@pytest.mark.parametrize("send_type", SEND_TYPES)
def test_tool_call(client: Letta, agent_state, llm_config: SeedConfig, send_type: str) -> None:
    _seed_flow(client, agent_state, llm_config, send_type, TOOL_CALL)


OPENAI_REASONERS = [c for c in TESTED_LLM_CONFIGS if c.openai_reasoning]


@pytest.mark.parametrize("llm_config", OPENAI_REASONERS, ids=[c.name for c in OPENAI_REASONERS])
def test_openai_reasoning_summary_shows_at_high_effort_only(
    client: Letta, agent_state, llm_config: SeedConfig
) -> None:
    """Not the seed's: it lets an OpenAI reasoning summary be missing, so this pins that the fake
    provider's one does show at high effort (before the tool call only) and not at medium."""
    agent_state = client.agents.update(agent_id=agent_state.id, **llm_config.update)
    messages, _ = _send(client, agent_state.id, "step", USER_MESSAGE_ROLL_DICE)
    kinds = [m.message_type for m in _not_ping(messages)]
    turn = ["tool_call_message", "tool_return_message", "assistant_message"]
    assert kinds == (["reasoning_message", *turn] if is_reasoner(llm_config) else turn)
