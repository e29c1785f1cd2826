"""Anthropic messages request bodies from domain messages: pure data, no SDK import."""

from __future__ import annotations

import json
from typing import Any

from ..message import Message, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from .base import EncodedRequest, MessageCache, ModelRequest, cached_encoding

DEFAULT_MAX_TOKENS = 4096


def encode(request: ModelRequest, cache: MessageCache | None = None) -> EncodedRequest:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": _turns(request.messages, cache),
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if request.system:  # Anthropic rejects an empty system prompt
        body["system"] = request.system
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.forced_tool:
            body["tool_choice"] = {"type": "tool", "name": request.forced_tool}
        elif request.tool_required:
            body["tool_choice"] = {"type": "any"}
    if request.temperature is not None and not request.thinking:
        body["temperature"] = request.temperature
    if request.thinking:
        body["thinking"] = request.thinking
    return EncodedRequest(provider="anthropic", endpoint=request.endpoint, body=body)


def _turns(messages: list[Message], cache: MessageCache | None) -> list[dict[str, Any]]:
    """Anthropic wants alternating turns; consecutive same-role messages are merged into one turn."""
    out: list[dict[str, Any]] = []
    for message in messages:
        turn = cached_encoding(message, cache, _turn)[0]
        if not turn["content"]:
            continue
        if out and out[-1]["role"] == turn["role"]:
            # A new dict: the cached encodings must stay as they were.
            out[-1] = {"role": turn["role"], "content": [*out[-1]["content"], *turn["content"]]}
        else:
            out.append(turn)
    return out


def _turn(message: Message) -> list[dict[str, Any]]:
    return [{"role": "assistant" if message.role == "assistant" else "user", "content": _blocks(message)}]


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ReasoningPart):
            # Thinking goes back only with its signature (Anthropic rejects unsigned thinking).
            if part.signature and part.text:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
            elif part.signature:
                blocks.append({"type": "redacted_thinking", "data": part.signature})
        elif isinstance(part, ToolCallPart):
            blocks.append(
                {"type": "tool_use", "id": part.id, "name": part.name, "input": _json_object(part.arguments)}
            )
        elif isinstance(part, ToolReturnPart):
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": part.tool_call_id,
                    "content": part.content,
                    "is_error": part.status == "error",
                }
            )
    return blocks


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
