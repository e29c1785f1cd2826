"""The chat-completions adapter's stream, read as plain dicts, against the fake provider."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest

from parley.processes import FakeLLMProcess, start_fake_llm
from runtime.message import Message, TextPart, ToolCallPart
from runtime.providers.base import (
    EncodedRequest,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    ProviderError,
    ToolSchema,
)
from runtime.providers.openai import OpenAIProvider, _SSEData, _StreamAssembly

pytestmark = pytest.mark.timeout(20)

DICE = ToolSchema(
    name="roll_dice",
    description="Roll a die.",
    parameters={"type": "object", "properties": {"num_sides": {"type": "integer"}}},
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    process = start_fake_llm()
    yield process
    process.stop()


def stream(fake: FakeLLMProcess, text: str, tools: list[ToolSchema]) -> list[ModelDelta | ModelResponse]:
    async def main() -> list[ModelDelta | ModelResponse]:
        provider = OpenAIProvider(api_key="fake", base_url=fake.openai_base_url, max_retries=0, timeout=10)
        request = ModelRequest(
            provider="openai",
            model="gpt-4o-mini",
            system="Be brief.",
            messages=[Message(role="user", parts=[TextPart(text=text)], agent_id="agent-1")],
            tools=tools,
        )
        try:
            return [item async for item in provider.stream(request)]
        finally:
            for client in provider._clients.values():
                await client.close()

    return asyncio.run(main())


def test_streamed_text_adds_up_to_the_response(fake: FakeLLMProcess) -> None:
    *deltas, final = stream(fake, "echo one two three four", [])
    assert isinstance(final, ModelResponse) and final.finish == "stop"
    assert all(isinstance(d, ModelDelta) and d.part == "text" and d.index == 0 for d in deltas)
    assert len(deltas) > 1  # token by token, as the provider sent them
    assert "".join(d.text for d in deltas if isinstance(d, ModelDelta)) == "one two three four"
    assert final.parts == [TextPart(text="one two three four")]
    assert final.prompt_tokens > 0 and final.completion_tokens > 0


def test_streamed_tool_call_carries_its_identity(fake: FakeLLMProcess) -> None:
    *deltas, final = stream(fake, 'call roll_dice with {"num_sides": 16}', [DICE])
    assert isinstance(final, ModelResponse) and final.finish == "tool_calls"
    call = final.parts[-1]
    assert isinstance(call, ToolCallPart)
    assert (call.name, json.loads(call.arguments)) == ("roll_dice", {"num_sides": 16}) and call.id
    calls = [d for d in deltas if isinstance(d, ModelDelta) and d.part == "tool_call"]
    assert calls and all((d.tool_call_id, d.tool_name) == (call.id, "roll_dice") for d in calls)
    assert "".join(d.text for d in calls) == call.arguments


def test_assembly_takes_wire_dicts() -> None:
    assembly = _StreamAssembly()
    fragments: list[dict[str, Any]] = [
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "g"}}]},
    ]
    out = [d for fragment in fragments for d in assembly.feed(fragment)]
    assert out[0] == ModelDelta("text", 0, "Hi")
    assert [(d.index, d.text, d.tool_call_id, d.tool_name) for d in out[1:]] == [
        (1, '{"a"', "call_1", "f"),
        (1, ": 1}", "call_1", "f"),
        (2, "", "call_2", "g"),
    ]
    final = assembly.response()
    assert final.parts == [
        TextPart(text="Hi"),
        ToolCallPart(id="call_1", name="f", arguments='{"a": 1}'),
        ToolCallPart(id="call_2", name="g", arguments="{}"),  # no arguments streamed: an empty object
    ]


# --- the stream's own SSE parsing (``_ChunkStream``, ``_SSEData``) -------------------------------
SSE = (
    b": a comment\r\n"
    b'data: {"a": 1}\r\n\r\n'
    b"event: ping\n"
    b'data:{"b":\n'
    b"data:  2}\n"
    b"id: 7\n\n"
    b"retry: 10\r\r"
    b'data: {"c": "\xc3\xa9"}\r\r'
    b"data: [DONE]\n\n"
    b'data: {"unfinished": true}\n'
)


def sdk_data(chunks: list[bytes]) -> list[bytes]:
    """What the SDK's own decoder makes of ``chunks``: each event's data, as bytes."""
    from openai._streaming import SSEDecoder

    async def main() -> list[bytes]:
        async def source() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return [sse.data.encode() async for sse in SSEDecoder().aiter_bytes(source()) if sse.data]

    return asyncio.run(main())


def our_data(chunks: list[bytes]) -> list[bytes]:
    events = _SSEData()
    return [data for chunk in chunks for data in events.feed(chunk)]


def test_sse_data_matches_the_sdks_decoder_however_the_bytes_are_cut() -> None:
    whole = our_data([SSE])
    assert whole == [b'{"a": 1}', b'{"b":\n 2}', b'{"c": "\xc3\xa9"}', b"[DONE]"]
    assert whole == sdk_data([SSE])
    for cut in range(1, len(SSE)):  # every place one cut can fall, a CRLF's middle included
        assert our_data([SSE[:cut], SSE[cut:]]) == whole, cut
    assert our_data([SSE[i : i + 1] for i in range(len(SSE))]) == whole  # a byte at a time


def test_sse_data_keeps_a_long_event_whole() -> None:
    value = b"x" * 100_000
    chunks = [b'data: "', *(value[i : i + 1000] for i in range(0, len(value), 1000)), b'"\n', b"\n"]
    assert our_data(chunks) == [b'"' + value + b'"']


def stream_from(body: list[bytes]) -> list[ModelDelta | ModelResponse | ProviderError]:
    """The adapter's stream of a chat completion the server answers with ``body`` (in those
    chunks); an error it ends with is the last item."""

    class Body(httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in body:
                yield chunk

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    async def main() -> list[ModelDelta | ModelResponse | ProviderError]:
        url = "http://provider.test/v1"
        provider = OpenAIProvider(api_key="fake", base_url=url, max_retries=0, timeout=10)
        provider._clients[url] = openai.AsyncOpenAI(
            api_key="fake",
            base_url=url,
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
        )
        return await read_out(provider)

    return asyncio.run(main())


async def read_out(provider: OpenAIProvider) -> list[ModelDelta | ModelResponse | ProviderError]:
    """``provider``'s stream of a chat completion, an error it ends with as the last item; then
    the provider is closed."""
    encoded = EncodedRequest("openai", None, {"model": "gpt-4o-mini", "messages": []})
    items: list[ModelDelta | ModelResponse | ProviderError] = []
    try:
        async for item in provider.stream_encoded(encoded):
            items.append(item)
    except ProviderError as exc:
        items.append(exc)
    finally:
        await provider.aclose()
    return items


def chunk(delta: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def test_an_error_in_the_streams_data_fails_it_as_the_sdk_would() -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    items = stream_from([chunk({"content": "Hel"}), b"data: " + json.dumps(error).encode() + b"\n\n"])
    assert items[0] == ModelDelta("text", 0, "Hel")
    assert isinstance(items[1], ProviderError) and len(items) == 2
    assert items[1].message == "openai call failed: APIError: The server had an error"
    # No message of its own: the SDK's words.
    items = stream_from([b'data: {"error": {"code": 500}}\n\n'])
    assert isinstance(items[0], ProviderError)
    assert items[0].message == "openai call failed: APIError: An error occurred during streaming"


def test_a_stream_ends_at_done() -> None:
    items = stream_from([chunk({"content": "Hi"}), b"data: [DONE]\n\n", chunk({"content": " there"})])
    assert items[0] == ModelDelta("text", 0, "Hi")
    assert isinstance(items[1], ModelResponse) and items[1].parts == [TextPart(text="Hi")]
    assert len(items) == 2


def test_a_plain_body_is_read_straight_off_aiohttp(
    fake: FakeLLMProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def through_httpx(self: httpx2.Response, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the body was read through httpx")

    monkeypatch.setattr(httpx2.Response, "aiter_bytes", through_httpx)
    *deltas, final = stream(fake, "echo one two three four", [])
    assert isinstance(final, ModelResponse) and final.parts == [TextPart(text="one two three four")]
    assert len(deltas) > 1


def raw_stream(head: bytes, body: list[bytes]) -> list[ModelDelta | ModelResponse | ProviderError]:
    """The adapter's stream, over the SDK's aiohttp transport, from a server that answers every
    request with ``head`` (status line and headers) and then writes ``body``'s pieces and closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in request_head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(head + b"\r\n")
        for piece in body:
            writer.write(piece)
            await writer.drain()
        writer.transport.abort()  # no orderly end: whatever the body said it would be

    async def main() -> list[ModelDelta | ModelResponse | ProviderError]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        provider = OpenAIProvider(
            api_key="fake", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=10
        )
        try:
            return await read_out(provider)
        finally:
            server.close()

    return asyncio.run(main())


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


def test_a_body_cut_mid_stream_read_off_aiohttp_fails_as_a_lost_connection() -> None:
    items = raw_stream(SSE_HEAD, [chunked(chunk({"content": "Hel"}))])
    assert items[0] == ModelDelta("text", 0, "Hel")
    assert isinstance(items[1], ProviderError) and items[1].kind == "connection" and len(items) == 2


def test_a_content_encoded_body_is_decoded_through_httpx() -> None:
    body = gzip.compress(chunk({"content": "Hi"}) + b"data: [DONE]\n\n")
    head = SSE_HEAD.replace(
        b"transfer-encoding: chunked", b"content-encoding: gzip\r\ncontent-length: %d" % len(body)
    )
    items = raw_stream(head, [body])
    assert items[0] == ModelDelta("text", 0, "Hi")
    assert isinstance(items[1], ModelResponse) and items[1].parts == [TextPart(text="Hi")]
