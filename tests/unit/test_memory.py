"""``runtime.memory``: compiling memory blocks into a conversation's system prompt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runtime.agent import Agent, Block, LLMConfig
from runtime.memory import CORE_MEMORY_PLACEHOLDER, compile_system_prompt, render_blocks, same_prompt

pytestmark = pytest.mark.timeout(5)

NOW = datetime(2024, 5, 6, 15, 4, 5, tzinfo=UTC)


def make_agent(system: str = "You are a test agent.") -> Agent:
    return Agent(
        name="memory-test",
        system=system,
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )


def make_blocks() -> list[Block]:
    return [
        Block(label="persona", value="I am a careful assistant.", limit=5000, description="Who I am."),
        Block(label="human", value="The user is Ada.", limit=2000, read_only=True),
    ]


def compile_(
    agent: Agent,
    blocks: list[Block],
    conversation_id: str | None = "conv-1",
    previous: int = 0,
    now: datetime = NOW,
) -> str:
    return compile_system_prompt(agent, blocks, conversation_id, previous, now)


def test_each_block_is_rendered_with_label_value_limit() -> None:
    prompt = compile_(make_agent(), make_blocks())
    for label, value, limit in [
        ("persona", "I am a careful assistant.", 5000),
        ("human", "The user is Ada.", 2000),
    ]:
        assert f"<{label}>" in prompt
        assert f"</{label}>" in prompt
        assert f"<value>\n{value}\n</value>" in prompt
        assert f"- chars_limit={limit}" in prompt
        assert f"- chars_current={len(value)}" in prompt


def test_blocks_keep_their_order() -> None:
    prompt = compile_(make_agent(), make_blocks())
    assert prompt.index("<persona>") < prompt.index("<human>")


def test_description_rendered_only_when_set() -> None:
    memory = render_blocks(make_blocks())
    assert "<description>\nWho I am.\n</description>" in memory
    assert memory.count("<description>") == 1


def test_read_only_line_only_for_read_only_blocks() -> None:
    memory = render_blocks(make_blocks())
    assert memory.count("- read_only=true") == 1
    human = memory[memory.index("<human>") : memory.index("</human>")]
    assert "- read_only=true" in human


def test_hidden_blocks_are_left_out() -> None:
    blocks = [*make_blocks(), Block(label="secret", value="hidden value", hidden=True)]
    prompt = compile_(make_agent(), blocks)
    assert "<secret>" not in prompt
    assert "hidden value" not in prompt


def test_memory_metadata_section() -> None:
    agent = make_agent()
    prompt = compile_(agent, make_blocks(), conversation_id="conv-abc", previous=7)
    metadata = prompt[prompt.index("<memory_metadata>") :]
    assert metadata.endswith("</memory_metadata>")
    lines = metadata.splitlines()
    assert f"- AGENT_ID: {agent.id}" in lines
    assert "- CONVERSATION_ID: conv-abc" in lines
    recompiled = [line for line in lines if line.startswith("- System prompt last recompiled:")]
    assert len(recompiled) == 1
    assert "2024-05-06 03:04:05 PM" in recompiled[0]
    assert any(line.startswith("- 7 previous messages") for line in lines)


def test_conversation_id_defaults_to_default() -> None:
    prompt = compile_(make_agent(), make_blocks(), conversation_id=None)
    assert "- CONVERSATION_ID: default" in prompt.splitlines()


def test_placeholder_is_replaced_by_memory() -> None:
    agent = make_agent(system=f"Before.\n{CORE_MEMORY_PLACEHOLDER}\nAfter.")
    prompt = compile_(agent, make_blocks())
    assert CORE_MEMORY_PLACEHOLDER not in prompt
    assert prompt.startswith("Before.\n<memory_blocks>")
    assert prompt.index("</memory_blocks>") < prompt.index("After.") < prompt.index("<memory_metadata>")
    assert prompt.count("<memory_blocks>") == 1


def test_memory_appended_without_placeholder() -> None:
    agent = make_agent(system="Plain system prompt.")
    prompt = compile_(agent, make_blocks())
    assert prompt.startswith("Plain system prompt.\n\n<memory_blocks>")
    assert prompt.index("</memory_blocks>") < prompt.index("<memory_metadata>")


def test_same_prompt_ignores_time_and_message_count() -> None:
    agent, blocks = make_agent(), make_blocks()
    first = compile_(agent, blocks, previous=0, now=NOW)
    later = compile_(agent, blocks, previous=12, now=NOW + timedelta(days=3, hours=5))
    assert first != later
    assert same_prompt(first, later)


def test_same_prompt_sees_a_block_value_change() -> None:
    agent, blocks = make_agent(), make_blocks()
    before = compile_(agent, blocks)
    blocks[1] = blocks[1].model_copy(update={"value": "The user is Grace."})
    after = compile_(agent, blocks)
    assert not same_prompt(before, after)


def test_same_prompt_sees_a_system_change() -> None:
    agent, blocks = make_agent("One."), make_blocks()
    changed = agent.model_copy(update={"system": "Two."})
    assert not same_prompt(compile_(agent, blocks), compile_(changed, blocks))
