"""OpenAI Responses API request bodies from domain messages: pure data, no SDK import.

Used for OpenAI's reasoning models, whose reasoning summaries only the Responses API hands out.
Like ``openai_format`` it runs where the conversation lives and encodes each stored message once.
"""

from __future__ import annotations

from typing import Any

from ..message import Message, ToolReturnPart
from .base import EncodedRequest, MessageCache, ModelRequest, cached_encoding

PROVIDER = "openai_responses"
DEFAULT_EFFORT = "medium"
SUMMARY_EFFORTS = frozenset({"high"})  # efforts at which a reasoning summary is asked for, as Letta does
SUMMARY = "auto"
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_CHAT_MODELS = ("gpt-5-chat",)  # gpt-5 names that are plain chat models (no reasoning settings)


def uses_responses_api(model: str) -> bool:
    """Whether an OpenAI model name is a reasoning model, served through the Responses API."""
    name = model.lower()
    return name.startswith(_REASONING_PREFIXES) and not name.startswith(_CHAT_MODELS)


def encode(request: ModelRequest, cache: MessageCache | None = None) -> EncodedRequest:
    items: list[dict[str, Any]] = []
    for message in request.messages:
        items.extend(cached_encoding(message, cache, encode_message))
    # Reasoning models reject `temperature`, so it is never sent; `store: false` keeps nothing
    # at OpenAI, which is why history goes in full each time.
    body: dict[str, Any] = {
        "model": request.model,
        "instructions": request.system,
        "input": items,
        "reasoning": reasoning_settings(request.reasoning_effort),
        "store": False,
    }
    if request.tools:
        body["tools"] = [
            # Responses tools are strict by default; ours (Letta's) schemas are not written for it.
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": False,
            }
            for t in request.tools
        ]
        if request.forced_tool:
            body["tool_choice"] = {"type": "function", "name": request.forced_tool}
        elif request.tool_required:
            body["tool_choice"] = "required"
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    return EncodedRequest(provider=PROVIDER, endpoint=request.endpoint, body=body)


def reasoning_settings(effort: str | None) -> dict[str, str]:
    """The request's ``reasoning`` object. A summary (the only reasoning the API hands out, and what
    becomes a ``reasoning_message``) is asked for only at an effort in ``SUMMARY_EFFORTS``; at any
    other effort the model still reasons, but the response's reasoning items carry no summary."""
    effort = effort or DEFAULT_EFFORT
    if effort in SUMMARY_EFFORTS:
        return {"effort": effort, "summary": SUMMARY}
    return {"effort": effort}


def encode_message(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "function_call_output", "call_id": p.tool_call_id, "output": p.content}
            for p in message.parts
            if isinstance(p, ToolReturnPart)
        ]
    if message.role == "assistant":
        return _assistant_items(message)
    return [_message_item(message.role, "input_text", message.text())]


def _assistant_items(message: Message) -> list[dict[str, Any]]:
    # Reasoning parts stay out: the API only takes reasoning back as the encrypted items we never
    # ask for, and their summaries are not valid input.
    items: list[dict[str, Any]] = []
    text = message.text()
    if text:
        items.append(_message_item("assistant", "output_text", text))
    for call in message.tool_calls():
        items.append(
            {"type": "function_call", "call_id": call.id, "name": call.name, "arguments": call.arguments}
        )
    return items


def _message_item(role: str, part_type: str, text: str) -> dict[str, Any]:
    """A message item; the API wants input_text from users and system, output_text from itself."""
    return {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]}
