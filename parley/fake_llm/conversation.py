"""Protocol-neutral view of one request: what the wire parsers produce and the script reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class BadRequest(Exception):
    """The request body is unusable; rendered as a provider-style 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "system", "user", "assistant" or "tool"
    text: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str  # resolved from the id of the earlier tool call it answers
    text: str


@dataclass(slots=True)
class Conversation:
    model: str
    turns: list[Turn] = field(default_factory=list)
    # Offered tools: name -> JSON schema of the arguments.
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The request's tool_choice when it forces a call: a tool's name, or ANY_TOOL.
    forced_tool: str | None = None
    # Set when the request's final message is a tool result rather than user text.
    tool_result: ToolResult | None = None
    # Characters of messages, system prompt and tool schemas (the basis for prompt tokens).
    prompt_chars: int = 0
    stream: bool = False
    can_reason: bool = False  # Anthropic thinking enabled / Responses `reasoning` set
    # Claude says a sentence before it calls a tool ("I'll roll the die."): the Anthropic wire sets
    # this, and a tool call the prompt gives no words for gets some.
    narrates_tool_calls: bool = False
    max_tokens: int | None = None

    @property
    def final_text(self) -> str:
        """Text of the message the reply answers: the tool result or the last user message."""
        if self.tool_result is not None:
            return self.tool_result.text
        return self.last_user_text

    @property
    def last_user_text(self) -> str:
        for turn in reversed(self.turns):
            if turn.role == "user":
                return turn.text
        return ""

    def user_texts(self) -> list[str]:
        return [turn.text for turn in self.turns if turn.role == "user"]


def text_of(content: Any) -> str:
    """Join the text of a content value that is a string or a list of parts/blocks.

    Every dialect uses one of these two shapes; parts without text (images, ...) add nothing.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    pieces.append(text)
        return "\n".join(pieces)
    raise BadRequest("content must be a string or a list of content parts")


def tool_list(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `tools`, checked to be a list of objects."""
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise BadRequest("tools must be a list of objects", "tools")
    return tools


def schema_chars(tools: list[dict[str, Any]]) -> int:
    """Characters the tool definitions add to the prompt (one encode for the whole list)."""
    return len(json.dumps(tools, separators=(",", ":"))) if tools else 0


ANY_TOOL = "*"


def forced_tool(choice: Any) -> str | None:
    """What a request's ``tool_choice`` forces, in any of the three wire forms: a tool's name
    (OpenAI chat ``{"type": "function", "function": {"name"}}``, Responses ``{"type": "function",
    "name"}``, Anthropic ``{"type": "tool", "name"}``), ``ANY_TOOL`` (``"required"``, Anthropic
    ``{"type": "any"}``), or None (auto, none, absent)."""
    if choice == "required":
        return ANY_TOOL
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "any":
        return ANY_TOOL
    if kind in ("function", "tool"):
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return name if isinstance(name, str) and name else None
    return None
