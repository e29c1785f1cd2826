"""OpenAI chat-completions adapter (also any OpenAI-compatible endpoint), via the official SDK.

The SDK runs on its aiohttp transport: with hundreds of concurrent calls on one event loop it keeps
up where the default httpx pool falls behind (measured in shared/notes/ray-on-this-machine.md).

Calls go through the SDK's generic ``post`` (auth, errors, typed parsing all included) rather than
``chat.completions.create``: ``create`` first walks the whole request through the SDK's type-driven
param transform, which cost ~14 ms of CPU per call for a 40-message history here, growing with the
history; the body we build is already in wire form, so that walk buys nothing. Retries are not the
SDK's but Parley's (``retry.py``): ``ProviderRegistry`` builds this adapter with ``max_retries=0``.

A stream's server-sent events are parsed here (``_ChunkStream``), not by the SDK's ``AsyncStream``:
see there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import aiohttp
import anyio
import httpx2
import openai
from openai._vendor.httpx_aiohttp.transport import AiohttpResponseStream
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
                stream_cls=_ChunkStream,
            )
            async with aclosing(aiter(stream)) as chunks:  # the connection goes when we do
                async for chunk in chunks:
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


# What the SDK's stream turns into its connection and timeout errors, mid-stream as before it;
# aiohttp's own, for a body read straight off it (``_Body``), as its transport would map them.
_TIMEOUTS = (httpx2.TimeoutException, aiohttp.ServerTimeoutError)
_TRANSPORT_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream, aiohttp.ClientError)
_json = json.JSONDecoder().decode  # ``json.loads`` without its per-call argument checks
# How long the rest of a body after ``[DONE]`` is read for, so the connection can be reused (the
# SDK's wait).
_DRAIN_SECONDS = 0.1


class _ChunkStream(openai.AsyncStream[object]):
    """The SDK's stream of chat-completion chunks, as plain dicts, with the server-sent events
    parsed here from the response's bytes.

    The SDK's ``AsyncStream`` takes each event through three more async generators, a regex line
    splitter and an event object before ``json.loads``: at one event per token, parsing here cut
    the CPU per streamed token by ~16 us of ~96 (``python -m benchmarks.provider_cost``). The call
    itself is still the SDK's (auth, HTTP status errors, timeouts, the recording transport), and
    so is what the stream does:

    - ``[DONE]`` ends it; the rest of the body is then read (for up to ``_DRAIN_SECONDS``) so an
      HTTP/1.1 connection goes back to the pool;
    - an event whose data carries a truthy ``error`` raises ``openai.APIError`` with its message
      (or "An error occurred during streaming") and the error as the body;
    - a timeout or transport failure mid-stream raises ``APITimeoutError`` / ``APIConnectionError``
      from it, as the SDK's stream does;
    - the response is closed however the stream ends.

    Event names, ids and ``retry`` are not used (chat completions sends data-only events), and an
    event without data is skipped (the SDK would fail to parse its empty data as JSON).
    """

    def __aiter__(self) -> AsyncIterator[object]:  # type: ignore[override]
        # The generator itself: the SDK's ``__aiter__`` wraps it in one more per chunk.
        return self._iterator

    async def __stream__(self) -> AsyncIterator[object]:
        response = self.response
        events = _SSEData()
        body = _Body(response)
        try:
            try:
                while chunk := await body.read():
                    for data in events.feed(chunk):
                        if data.startswith(b"[DONE]"):
                            if response.http_version == "HTTP/1.1":
                                await _drain(body)
                            return
                        value = _json(data.decode())  # strict UTF-8, as the SDK's lines
                        if isinstance(value, dict) and value.get("error"):  # JSON's only mapping
                            raise _stream_error(value["error"], response.request)
                        yield value
            except _TIMEOUTS as err:
                raise openai.APITimeoutError(request=response.request) from err
            except _TRANSPORT_ERRORS as err:
                raise openai.APIConnectionError(request=response.request) from err
        finally:
            await body.aclose()
            await response.aclose()


class _Body:
    """A streamed response's body, chunk by chunk: ``read`` returns the next bytes, b"" at the end.

    Under the SDK's aiohttp transport, a body that is not content-encoded is read straight off
    aiohttp's response (``readany``): through httpx, each chunk went through four more async
    iterators (``Response.aiter_bytes``, ``aiter_raw``, the client's bound stream, the transport's
    stream), at one chunk per token. Its errors are aiohttp's own then (``_TIMEOUTS``,
    ``_TRANSPORT_ERRORS``). Any other body (a content encoding, which httpx decodes and aiohttp is
    told not to; another transport, as the recorder's) is read through httpx, as before."""

    def __init__(self, response: httpx2.Response) -> None:
        content = _aiohttp_content(response)
        self._chunks: AsyncIterator[bytes] | None = None
        self.read: Callable[[], Awaitable[bytes]]
        if content is not None:
            self.read = content.readany
        else:
            self._chunks = response.aiter_bytes()
            self.read = self._next_chunk

    async def _next_chunk(self) -> bytes:
        assert self._chunks is not None
        return await anext(self._chunks, b"")

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()  # type: ignore[attr-defined]


def _aiohttp_content(response: httpx2.Response) -> aiohttp.StreamReader | None:
    """The aiohttp body under ``response``, when it may be read directly (see ``_Body``)."""
    if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None
    stream = getattr(response.stream, "_stream", None)  # httpx's client binds the transport's stream
    if not isinstance(stream, AiohttpResponseStream):
        return None
    return stream._aiohttp_response.content


class _SSEData:
    """Splits a server-sent event stream, fed in chunks of bytes, into each event's data (its
    ``data`` lines joined by newlines), per the SSE spec's line rules (CR, LF or CRLF, a CRLF
    split across chunks included).

    Invariant: ``_partial`` holds the bytes after the last complete event, line ends as LF, in
    the pieces they came in (joined only once the event is complete, so a long event is not
    copied again for every chunk of it)."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        self._after_cr = False  # the last chunk ended in CR: an LF starting the next one is its pair

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._after_cr = False
        partial = self._partial
        if b"\n\n" not in chunk and not (partial and partial[-1].endswith(b"\n") and chunk.startswith(b"\n")):
            if chunk:
                partial.append(chunk)
            return []
        if partial:
            partial.append(chunk)
            chunk = b"".join(partial)
            partial.clear()
        *events, rest = chunk.split(b"\n\n")
        if rest:
            partial.append(rest)
        out = []
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:  # the common case: one data line
                out.append(event[6:])
                continue
            data = [
                value[1:] if value.startswith(b" ") else value
                for field, _, value in (line.partition(b":") for line in event.split(b"\n"))
                if field == b"data"
            ]
            if data:
                out.append(b"\n".join(data))
        return out


async def _drain(body: _Body) -> None:
    """Read what is left of a body, briefly; nothing here fails the stream it ends."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await body.read():
                pass


def _stream_error(error: object, request: httpx2.Request) -> openai.APIError:
    """The error the SDK raises for an ``error`` in a stream's data."""
    message = error.get("message") if isinstance(error, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


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
