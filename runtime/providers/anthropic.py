"""Anthropic messages adapter via the official SDK (aiohttp transport, like the OpenAI one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from ..message import Message, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from .base import ModelDelta, ModelRequest, ModelResponse, ProviderError, ResponsePart
from .sdk_errors import provider_error_from

DEFAULT_MAX_TOKENS = 4096
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class AnthropicProvider:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 300.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._clients: dict[str | None, anthropic.AsyncAnthropic] = {}

    def _client(self, endpoint: str | None) -> anthropic.AsyncAnthropic:
        base_url = endpoint or self._base_url
        client = self._clients.get(base_url)
        if client is None:
            if not self._api_key:
                raise ProviderError("ANTHROPIC_API_KEY is not set on the server", "auth")
            client = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=base_url,
                max_retries=self._max_retries,
                timeout=self._timeout,
                http_client=anthropic.DefaultAioHttpClient(),
            )
            self._clients[base_url] = client
        return client

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            reply = await self._client(request.endpoint).messages.create(**_params(request))
        except anthropic.AnthropicError as exc:
            raise provider_error_from(exc, anthropic, "anthropic") from None
        parts: list[ResponsePart] = []
        for block in reply.content:
            if block.type == "text":
                parts.append(TextPart(text=block.text))
            elif block.type == "thinking":
                parts.append(ReasoningPart(text=block.thinking, signature=block.signature))
            elif block.type == "redacted_thinking":
                parts.append(ReasoningPart(text="", signature=block.data))
            elif block.type == "tool_use":
                parts.append(ToolCallPart(id=block.id, name=block.name, arguments=json.dumps(block.input)))
        return ModelResponse(
            parts=parts,
            prompt_tokens=reply.usage.input_tokens,
            completion_tokens=reply.usage.output_tokens,
            finish=_FINISH.get(reply.stop_reason or "end_turn", "stop"),  # type: ignore[arg-type]
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        parts: list[ResponsePart] = []
        by_block: dict[int, int] = {}  # Anthropic's content block index -> our part index
        prompt_tokens = completion_tokens = 0
        finish = "stop"
        try:
            stream = await self._client(request.endpoint).messages.create(**_params(request), stream=True)
            async for event in stream:
                if event.type == "message_start":
                    prompt_tokens = event.message.usage.input_tokens
                elif event.type == "content_block_start":
                    block = event.content_block
                    by_block[event.index] = len(parts)
                    if block.type == "text":
                        parts.append(TextPart(text=""))
                    elif block.type == "thinking":
                        parts.append(ReasoningPart(text=""))
                    elif block.type == "redacted_thinking":
                        parts.append(ReasoningPart(text="", signature=block.data))
                    elif block.type == "tool_use":
                        parts.append(ToolCallPart(id=block.id, name=block.name, arguments=""))
                        yield ModelDelta("tool_call", by_block[event.index], "", block.id, block.name)
                elif event.type == "content_block_delta":
                    index = by_block[event.index]
                    part = parts[index]
                    delta = event.delta
                    if delta.type == "text_delta" and isinstance(part, TextPart):
                        part.text += delta.text
                        yield ModelDelta("text", index, delta.text)
                    elif delta.type == "thinking_delta" and isinstance(part, ReasoningPart):
                        part.text += delta.thinking
                        yield ModelDelta("reasoning", index, delta.thinking)
                    elif delta.type == "signature_delta" and isinstance(part, ReasoningPart):
                        part.signature = (part.signature or "") + delta.signature
                    elif delta.type == "input_json_delta" and isinstance(part, ToolCallPart):
                        part.arguments += delta.partial_json
                        yield ModelDelta("tool_call", index, delta.partial_json, part.id, part.name)
                elif event.type == "message_delta":
                    completion_tokens = event.usage.output_tokens
                    if event.delta.stop_reason:
                        finish = _FINISH.get(event.delta.stop_reason, "stop")
        except anthropic.AnthropicError as exc:
            raise provider_error_from(exc, anthropic, "anthropic") from None
        for part in parts:
            if isinstance(part, ToolCallPart) and not part.arguments:
                part.arguments = "{}"
        yield ModelResponse(
            parts=parts,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish=finish,  # type: ignore[arg-type]
        )


def _params(request: ModelRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": request.model,
        "system": request.system,
        "messages": to_anthropic_messages(request.messages),
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    if request.temperature is not None and not request.thinking:
        params["temperature"] = request.temperature
    if request.thinking:
        params["thinking"] = request.thinking
    return params


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Anthropic wants alternating turns; consecutive same-role messages are merged into one turn."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


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
