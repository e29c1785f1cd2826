"""Chat-completions request bodies from domain messages: pure data, no SDK import.

Runs where the conversation lives (so only wire-ready dicts cross to the provider actor) and keeps
each stored message's encoding in a cache: messages never change once stored.
"""

from __future__ import annotations

from typing import Any

from ..message import Message, ToolReturnPart
from .base import EncodedRequest, MessageCache, ModelRequest, cached_encoding


def encode(request: ModelRequest, cache: MessageCache | None = None) -> EncodedRequest:
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}]
    for message in request.messages:
        messages.extend(cached_encoding(message, cache, encode_message))
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
        if request.forced_tool:
            body["tool_choice"] = {"type": "function", "function": {"name": request.forced_tool}}
        elif request.tool_required:
            body["tool_choice"] = "required"
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return EncodedRequest(provider="openai", endpoint=request.endpoint, body=body)


def encode_message(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"role": "tool", "tool_call_id": p.tool_call_id, "content": p.content}
            for p in message.parts
            if isinstance(p, ToolReturnPart)
        ]
    if message.role == "assistant":
        # Reasoning parts are the model's own; chat completions has no way to send them back.
        entry: dict[str, Any] = {"role": "assistant", "content": message.text() or None}
        calls = message.tool_calls()
        if not calls and not entry["content"]:
            return []  # nothing left to say (reasoning only, or its items were deleted)
        if calls:
            entry["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]
        return [entry]
    return [{"role": message.role, "content": message.text()}]
