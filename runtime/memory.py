"""Compiling an agent's memory blocks into the system message of a conversation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .agent import Agent, Block

CORE_MEMORY_PLACEHOLDER = "{CORE_MEMORY}"
_RECOMPILED_PREFIX = "- System prompt last recompiled:"
_RECALL_SUFFIX = "previous messages between you and the user are stored in recall memory"


def render_blocks(blocks: Sequence[Block]) -> str:
    sections = []
    for block in blocks:
        if block.hidden:
            continue
        metadata = []
        if block.read_only:
            metadata.append("- read_only=true")
        metadata.append(f"- chars_current={len(block.value)}")
        metadata.append(f"- chars_limit={block.limit}")
        lines = [f"<{block.label}>"]
        if block.description:
            lines += ["<description>", block.description, "</description>"]
        lines += [
            "<metadata>",
            *metadata,
            "</metadata>",
            "<value>",
            block.value,
            "</value>",
            f"</{block.label}>",
        ]
        sections.append("\n".join(lines))
    body = "\n\n".join(sections)
    return (
        "<memory_blocks>\nThe following memory blocks are currently engaged in your core memory unit:\n\n"
        f"{body}\n</memory_blocks>"
    )


def compile_system_prompt(
    agent: Agent,
    blocks: Sequence[Block],
    conversation_id: str | None,
    previous_messages: int,
    now: datetime,
) -> str:
    memory = render_blocks(blocks)
    if CORE_MEMORY_PLACEHOLDER in agent.system:
        prompt = agent.system.replace(CORE_MEMORY_PLACEHOLDER, memory)
    else:
        prompt = f"{agent.system}\n\n{memory}"
    metadata = "\n".join(
        [
            "<memory_metadata>",
            f"- AGENT_ID: {agent.id}",
            f"- CONVERSATION_ID: {conversation_id or 'default'}",
            f"{_RECOMPILED_PREFIX} {now.strftime('%Y-%m-%d %I:%M:%S %p UTC%z')}",
            f"- {previous_messages} {_RECALL_SUFFIX}",
            "</memory_metadata>",
        ]
    )
    return f"{prompt}\n\n{metadata}"


def same_prompt(a: str, b: str) -> bool:
    """Equal apart from the lines that change on every compile (time, message count)."""
    return _stable(a) == _stable(b)


def _stable(prompt: str) -> list[str]:
    return [
        line
        for line in prompt.splitlines()
        if not line.startswith(_RECOMPILED_PREFIX) and not line.endswith(_RECALL_SUFFIX)
    ]
