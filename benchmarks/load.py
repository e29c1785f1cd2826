"""The load generator: what a turn is against each target, and a bounded phase of turns.

Three targets take the same load shape, so their numbers can stand side by side:

* ``parley``: the Letta API of a Parley server; ``POST /v1/conversations/{id}/messages`` with
  ``{"input": "echo turn <i>", "streaming": false}`` (one JSON ``LettaResponse``) or, streaming,
  ``streaming: true, stream_tokens: true, include_pings: false`` (SSE read to its end).
* ``proxy``: ``benchmarks.proxy``, the same two routes forwarding to the fake provider, no state.
* ``parley`` on its OpenAI surface (``OpenAITarget``, scenario ``fresh``):
  ``POST /openai/v1/conversations``, then ``POST /openai/v1/responses`` with ``{"model", "input",
  "conversation"}``; the reply is the ``output_text`` parts of the response's assistant messages.
* ``direct``: the fake provider itself, ``POST /v1/chat/completions``, as Parley calls it: not
  streamed for a JSON send, streamed (and read to its end) for a streaming one (Parley streams
  from the provider only when the client asked for ``stream_tokens``).

Every reply is checked against the text the fake provider echoes. One asyncio loop (uvloop when
installed) and one shared ``httpx.AsyncClient`` per phase drive all the conversations.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FILLER = "lorem"  # extra words in the echo, so the reply streams that many more tokens


def turn_text(i: int, reply_words: int = 0, prefix: str = "") -> tuple[str, str]:
    """The input of turn ``i`` and the reply the fake provider gives to it."""
    reply = f"turn {i}" + "".join(f" {FILLER}" for _ in range(reply_words))
    return f"{prefix}echo {reply}", reply


RECALL = "What word did I ask you to remember?"


def new_word() -> str:
    """A word for a conversation to remember: unique, so that a reply from another conversation's
    history (or none) cannot pass the check."""
    return "W" + uuid.uuid4().hex[:8].upper()


def remember_text(word: str) -> tuple[str, str]:
    """The turn that tells a conversation a word, and the fake provider's reply to it."""
    return f"Remember the word: {word}", f"Okay, I will remember the word {word}."


def recall_text(word: str) -> tuple[str, str]:
    """The turn that asks for the word, and the reply when the conversation's history has it: the
    fake answers from the history Parley sends it, so a forgotten word gets another reply."""
    return RECALL, f"The word is {word}."


@dataclass
class TurnResult:
    ok: bool
    latency: float  # seconds from sending to the last byte of the reply
    error: str | None = None  # http_<status> | timeout | wrong_reply | stream_error | transport:<Exc>
    ttfb: float | None = None  # streaming: the first byte of the body
    first_token: float | None = None  # streaming: the first piece of reply text
    started: float = 0.0  # perf_counter at the start


class Target:
    """How one kind of server is addressed; see the module docstring."""

    name = "target"

    async def new_conversation(self, client: httpx.AsyncClient) -> str:
        raise NotImplementedError

    def request(self, conversation_id: str, text: str, stream: bool) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def json_reply(self, body: Any) -> str:
        raise NotImplementedError

    def event_text(self, event: dict[str, Any]) -> str | None:
        """The reply text an SSE event carries, or None."""
        raise NotImplementedError

    def event_failed(self, name: str | None, event: Any) -> bool:
        return name == "error"


class LettaTarget(Target):
    """Parley's Letta API, or the bare proxy (which speaks the same two routes)."""

    def __init__(self, name: str, agent_id: str | None = None) -> None:
        self.name = name
        self.agent_id = agent_id

    async def new_conversation(self, client: httpx.AsyncClient) -> str:
        params = {"agent_id": self.agent_id} if self.agent_id else None
        response = await client.post("/v1/conversations/", params=params, json={})
        response.raise_for_status()
        return response.json()["id"]

    def request(self, conversation_id: str, text: str, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"input": text, "streaming": stream}
        if stream:
            body.update(stream_tokens=True, include_pings=False)
        return f"/v1/conversations/{conversation_id}/messages", body

    def json_reply(self, body: Any) -> str:
        return "".join(
            m.get("content") or "" for m in body["messages"] if m.get("message_type") == "assistant_message"
        )

    def event_text(self, event: dict[str, Any]) -> str | None:
        if event.get("message_type") == "assistant_message":
            return event.get("content") or ""
        return None


class OpenAITarget(Target):
    """Parley's OpenAI Conversations and Responses API (``/openai/v1``)."""

    def __init__(self, model: str, name: str = "parley") -> None:
        self.name = name
        self.model = model

    async def new_conversation(self, client: httpx.AsyncClient) -> str:
        response = await client.post("/openai/v1/conversations", json={})
        response.raise_for_status()
        return response.json()["id"]

    def request(self, conversation_id: str, text: str, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "input": text, "conversation": conversation_id}
        if stream:
            body["stream"] = True
        return "/openai/v1/responses", body

    def json_reply(self, body: Any) -> str:
        return "".join(
            part.get("text") or ""
            for item in body["output"]
            if item.get("type") == "message" and item.get("role") == "assistant"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        )

    def event_text(self, event: dict[str, Any]) -> str | None:
        if event.get("type") == "response.output_text.delta":
            return event.get("delta") or ""
        return None

    def event_failed(self, name: str | None, event: Any) -> bool:
        kind = event.get("type") if isinstance(event, dict) else None
        return name in ("error", "response.failed") or kind in ("error", "response.failed")


def delete_path(conversation_id: str) -> str:
    """Where a Parley conversation is deleted: OpenAI-surface ids (``conv_...``) on that surface."""
    if conversation_id.startswith("conv_"):
        return f"/openai/v1/conversations/{conversation_id}"
    return f"/v1/conversations/{conversation_id}"


class DirectTarget(Target):
    """The fake provider called as Parley calls it: a chat completion, streamed when ``stream``."""

    name = "direct"

    def __init__(self, model: str = "gpt-4o-mini") -> None:
        self.model = model

    async def new_conversation(self, client: httpx.AsyncClient) -> str:
        return uuid.uuid4().hex  # a provider has no conversations

    def request(self, conversation_id: str, text: str, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": text}]}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return "/v1/chat/completions", body

    def json_reply(self, body: Any) -> str:
        return body["choices"][0]["message"]["content"] or ""

    def event_text(self, event: dict[str, Any]) -> str | None:
        choices = event.get("choices") or []
        if choices:
            return (choices[0].get("delta") or {}).get("content") or ""
        return None

    def event_failed(self, name: str | None, event: Any) -> bool:
        return name == "error" or (isinstance(event, dict) and "error" in event)


class SseParser:
    """Just enough of server-sent events: ``event:`` and ``data:`` lines, blank-line framed."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            name = None
            data = []
            for line in frame.decode("utf-8", "replace").split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            if data:
                events.append((name, "\n".join(data)))
        return events


async def send_turn(
    client: httpx.AsyncClient, target: Target, conversation_id: str, text: str, expected: str, stream: bool
) -> TurnResult:
    """One turn, checked. Never raises for a failed turn: the failure's kind is in the result."""
    path, body = target.request(conversation_id, text, stream)
    began = time.perf_counter()
    result = TurnResult(ok=False, latency=0.0, started=began)
    try:
        if not stream:
            response = await client.post(path, json=body)
            result.latency = time.perf_counter() - began
            if response.status_code != 200:
                result.error = f"http_{response.status_code}"
                return result
            got = target.json_reply(response.json())
        else:
            pieces: list[str] = []
            failed = False
            async with client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    result.latency = time.perf_counter() - began
                    result.error = f"http_{response.status_code}"
                    return result
                parser = SseParser()
                async for chunk in response.aiter_raw():
                    now = time.perf_counter()
                    if result.ttfb is None:
                        result.ttfb = now - began
                    for name, data in parser.feed(chunk):
                        if data == "[DONE]":
                            continue
                        try:
                            event = json.loads(data)
                        except ValueError:
                            failed = True
                            continue
                        if target.event_failed(name, event):
                            failed = True
                            continue
                        piece = target.event_text(event) if isinstance(event, dict) else None
                        if piece is not None:
                            if result.first_token is None:
                                result.first_token = now - began
                            pieces.append(piece)
            result.latency = time.perf_counter() - began
            if failed:
                result.error = "stream_error"
                return result
            got = "".join(pieces)
    except httpx.TimeoutException:
        result.latency = time.perf_counter() - began
        result.error = "timeout"
        return result
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        result.latency = time.perf_counter() - began
        result.error = f"transport:{type(exc).__name__}"
        return result
    if got != expected:
        result.error = "wrong_reply"
        return result
    result.ok = True
    return result


def make_client(base_url: str, connections: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections + 8, max_keepalive_connections=connections + 8)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)


class Clients:
    """The load generator's ``httpx.AsyncClient``s for one server: one per ``group`` slots
    (conversations), created on first use, all sharing one SSL context.

    One client for everything would make the load generator the bottleneck: httpcore's pool
    scans every connection for every request it places (at 128 connections, 23 ms of CPU per
    turn here, against under 1 ms with small pools).
    """

    def __init__(self, base_url: str, timeout: float, group: int = 4) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.group = group
        self._ssl = ssl.create_default_context()
        self._clients: dict[int, httpx.AsyncClient] = {}

    def get(self, slot: int = 0) -> httpx.AsyncClient:
        key = slot // self.group
        client = self._clients.get(key)
        if client is None:
            size = 2 * self.group + 2  # contention sends two at a time per conversation
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self.timeout, limits=limits, verify=self._ssl
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


@dataclass
class PhaseOutcome:
    results: list[TurnResult] = field(default_factory=list)
    wall: float = 0.0
    stopped_by: str = "count"  # "time" when the phase's deadline cut it short

    @property
    def ok(self) -> list[TurnResult]:
        return [r for r in self.results if r.ok]

    def errors(self) -> dict[str, int]:
        return dict(Counter(r.error for r in self.results if r.error))


async def sequential_turns(
    clients: Clients,
    target: Target,
    conversation_ids: list[str],
    turns_each: int,
    stream: bool,
    max_seconds: float,
    reply_words: int = 0,
    on_turn: Callable[[TurnResult], None] | None = None,
    first_index: int = 1,
    prefix: str = "",
) -> PhaseOutcome:
    """Every conversation sends ``turns_each`` sequential turns, all conversations at once; no
    turn starts after ``max_seconds``. ``prefix`` goes before every turn's text (directives to
    the fake provider, such as ``[[latency=0]]``)."""
    outcome = PhaseOutcome()
    deadline = time.monotonic() + max_seconds

    async def conversation(slot: int, cid: str) -> None:
        client = clients.get(slot)
        for i in range(first_index, first_index + turns_each):
            if time.monotonic() > deadline:
                outcome.stopped_by = "time"
                return
            text, expected = turn_text(i, reply_words, prefix=prefix)
            result = await send_turn(client, target, cid, text, expected, stream)
            outcome.results.append(result)
            if on_turn:
                on_turn(result)

    began = time.perf_counter()
    await asyncio.gather(*(conversation(slot, cid) for slot, cid in enumerate(conversation_ids)))
    outcome.wall = time.perf_counter() - began
    return outcome


def run_async(coro):
    """``asyncio.run`` on uvloop when it is installed (a cheaper load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
