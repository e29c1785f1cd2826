"""OpenAI chat-completions adapter (also any OpenAI-compatible endpoint), via the official SDK.

The SDK runs on its aiohttp transport: with hundreds of concurrent calls on one event loop it keeps
up where the default httpx pool falls behind (measured in shared/notes/ray-on-this-machine.md).

Calls go through the SDK's generic ``post`` (auth, errors, typed parsing all included) rather than
``chat.completions.create``: ``create`` first walks the whole request through the SDK's type-driven
param transform, which cost ~14 ms of CPU per call for a 40-message history here, growing with the
history; the body we build is already in wire form, so that walk buys nothing. Retries are not the
SDK's but Parley's (``retry.py``): ``ProviderRegistry`` builds this adapter with ``max_retries=0``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from ..message import TextPart, ToolCallPart
from .base import EncodedRequest, ModelDelta, ModelRequest, ModelResponse, ProviderError, ResponsePart
from .openai_format import encode
from .recording.transport import Recorder, http_client
from .sdk_errors import as_provider_error

OPENAI_URL = "https://api.openai.com/v1"
_FINISH = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls", "length": "length"}


class OpenAIProvider:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 300.0,
        endpoint_keys: dict[str, str] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._api_key = api_key
        self._endpoint_keys = endpoint_keys or {}
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        self._recorder = recorder
        self._clients: dict[str | None, openai.AsyncOpenAI] = {}

    def _client(self, endpoint: str | None) -> openai.AsyncOpenAI:
        base_url = endpoint or self._base_url
        client = self._clients.get(base_url)
        if client is None:
            api_key = self._key_for(endpoint)
            if not api_key:
                raise ProviderError("OPENAI_API_KEY is not set on the server", "auth")
            client = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=self._max_retries,
                timeout=self._timeout,
                http_client=http_client(openai.DefaultAioHttpClient, self._recorder),
            )
            self._clients[base_url] = client
        return client

    def _key_for(self, endpoint: str | None) -> str | None:
        """OpenAI's key goes only to OpenAI; an OpenAI-compatible server gets its own key, or a
        placeholder (the SDK insists on one), never OpenAI's."""
        own = {_normal(OPENAI_URL), _normal(self._base_url)}
        if endpoint is None or _normal(endpoint) in own:
            return self._api_key
        return self._endpoint_keys.get(endpoint, "none")

    # The wire format this adapter speaks (the Responses adapter swaps in its own).
    encode = staticmethod(encode)

    async def aclose(self) -> None:
        """Close the SDK clients (and their connection pools)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await self.send(self.encode(request))

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        return self.stream_encoded(self.encode(request))

    async def send(self, encoded: EncodedRequest) -> ModelResponse:
        try:
            completion = await self._client(encoded.endpoint).post(
                "/chat/completions", body=encoded.body, cast_to=ChatCompletion
            )
        except Exception as exc:
            raise as_provider_error(exc, openai, "openai", self._timeout) from None
        choice = completion.choices[0]
        parts: list[ResponsePart] = []
        if choice.message.content:
            parts.append(TextPart(text=choice.message.content))
        for call in choice.message.tool_calls or []:
            parts.append(
                ToolCallPart(id=call.id, name=call.function.name, arguments=call.function.arguments or "{}")
            )
        usage = completion.usage
        return ModelResponse(
            parts=parts,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish=_FINISH.get(choice.finish_reason or "stop", "stop"),  # type: ignore[arg-type]
        )

    async def stream_encoded(self, encoded: EncodedRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        assembly = _StreamAssembly()
        try:
            # Chunks as plain dicts (``AsyncStream[object]``): building the SDK's typed chunk for
            # every token cost more CPU than the rest of the token's way through the provider actor.
            stream = await self._client(encoded.endpoint).post(
                "/chat/completions",
                body={**encoded.body, "stream": True, "stream_options": {"include_usage": True}},
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    continue
                usage = chunk.get("usage")
                if usage:
                    assembly.prompt_tokens = usage.get("prompt_tokens") or 0
                    assembly.completion_tokens = usage.get("completion_tokens") or 0
                for choice in chunk.get("choices") or ():
                    for delta in assembly.feed(choice.get("delta") or {}):
                        yield delta
                    finish = choice.get("finish_reason")
                    if finish:
                        assembly.finish = _FINISH.get(finish, "stop")
        except Exception as exc:
            raise as_provider_error(exc, openai, "openai", self._timeout) from None
        yield assembly.response()


class _StreamAssembly:
    """Builds the final response from chunk deltas (wire-form dicts) while handing each fragment on."""

    def __init__(self) -> None:
        self.parts: list[ResponsePart] = []
        self.text_index: int | None = None
        self.tool_index: dict[int, int] = {}  # the wire's tool-call index -> our part index
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish = "stop"

    def feed(self, delta: dict[str, Any]) -> list[ModelDelta]:
        out: list[ModelDelta] = []
        content = delta.get("content")
        if content:
            if self.text_index is None:
                self.text_index = len(self.parts)
                self.parts.append(TextPart(text=""))
            part = self.parts[self.text_index]
            assert isinstance(part, TextPart)
            part.text += content
            out.append(ModelDelta("text", self.text_index, content))
        for call in delta.get("tool_calls") or ():
            index = self.tool_index.get(call.get("index", 0))
            if index is None:
                index = self.tool_index[call.get("index", 0)] = len(self.parts)
                self.parts.append(ToolCallPart(id=call.get("id") or "", name="", arguments=""))
            part = self.parts[index]
            assert isinstance(part, ToolCallPart)
            fn = call.get("function") or {}
            if call.get("id"):
                part.id = call["id"]
            if fn.get("name"):
                part.name += fn["name"]
            fragment = fn.get("arguments") or ""
            part.arguments += fragment
            out.append(ModelDelta("tool_call", index, fragment, tool_call_id=part.id, tool_name=part.name))
        return out

    def response(self) -> ModelResponse:
        for part in self.parts:
            if isinstance(part, ToolCallPart) and not part.arguments:
                part.arguments = "{}"
        return ModelResponse(
            parts=self.parts,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish=self.finish,  # type: ignore[arg-type]
        )


def _normal(url: str | None) -> str:
    return (url or OPENAI_URL).rstrip("/")
