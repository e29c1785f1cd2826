"""Anthropic messages adapter via the official SDK (aiohttp transport, like the OpenAI one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic

from ..message import ReasoningPart, TextPart, ToolCallPart
from .anthropic_format import encode
from .base import EncodedRequest, ModelDelta, ModelRequest, ModelResponse, ProviderError, ResponsePart
from .recording.transport import Recorder, http_client
from .sdk_errors import as_provider_error

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class AnthropicProvider:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 300.0,
        recorder: Recorder | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._recorder = recorder
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
                http_client=http_client(anthropic.DefaultAioHttpClient, self._recorder),
            )
            self._clients[base_url] = client
        return client

    async def aclose(self) -> None:
        """Close the SDK clients (and their connection pools)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await self.send(encode(request))

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        return self.stream_encoded(encode(request))

    async def send(self, encoded: EncodedRequest) -> ModelResponse:
        try:
            reply = await self._client(encoded.endpoint).messages.create(**encoded.body)
        except Exception as exc:
            raise as_provider_error(exc, anthropic, "anthropic", self._timeout) from None
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

    async def stream_encoded(self, encoded: EncodedRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        parts: list[ResponsePart] = []
        by_block: dict[int, int] = {}  # Anthropic's content block index -> our part index
        prompt_tokens = completion_tokens = 0
        finish = "stop"
        try:
            stream = await self._client(encoded.endpoint).messages.create(**encoded.body, stream=True)
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
        except Exception as exc:
            raise as_provider_error(exc, anthropic, "anthropic", self._timeout) from None
        for part in parts:
            if isinstance(part, ToolCallPart) and not part.arguments:
                part.arguments = "{}"
        yield ModelResponse(
            parts=parts,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish=finish,  # type: ignore[arg-type]
        )
