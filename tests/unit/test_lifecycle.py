"""The server's lifecycle state: what the ingress refuses in each, and how replicas hear of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ray_fakes import on_a_loop

from actors.lifecycle import LifecycleActor, ServerState
from serve_app.lifecycle import refuses, unavailable


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/agents/"),
        ("POST", "/v1/agents/"),
        ("POST", "/openai/v1/responses"),
        ("POST", "/v1/runs/run-1/stream"),
    ],
)
def test_starting_refuses_everything_but_health(method: str, path: str) -> None:
    assert refuses(ServerState.starting, method, path)
    assert not refuses(ServerState.ready, method, path)


@pytest.mark.parametrize("path", ["/v1/health", "/v1/health/", "/v1/health/live"])
def test_health_answers_in_every_state(path: str) -> None:
    assert not any(refuses(state, "GET", path) for state in ServerState)


@pytest.mark.parametrize(
    ("method", "path", "refused"),
    [
        ("POST", "/v1/conversations/conv-1/messages", True),
        ("POST", "/v1/agents/agent-1/messages/async", True),
        ("POST", "/openai/v1/responses", True),
        ("POST", "/v1/agents/", True),
        ("DELETE", "/v1/conversations/conv-1", True),
        ("PATCH", "/v1/agents/agent-1", True),
        ("GET", "/v1/conversations/conv-1/messages", False),
        ("GET", "/openai/v1/responses/resp_1", False),
        ("POST", "/v1/runs/run-1/stream", False),  # following a turn to its end
        ("POST", "/v1/conversations/conv-1/stream", False),
        ("POST", "/v1/conversations/conv-1/cancel", False),
        ("POST", "/openai/v1/responses/resp_1/cancel", False),
    ],
)
def test_draining_refuses_new_work_only(method: str, path: str, refused: bool) -> None:
    assert refuses(ServerState.draining, method, path) is refused


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/agents/", "detail"), ("/openai/v1/responses", "error")],
)
def test_a_refusal_says_when_to_retry_in_the_shape_of_its_surface(path: str, shape: str) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(unavailable({"path": path}, send, ServerState.draining))
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"2"
    assert int(headers[b"content-length"]) == len(body["body"])
    answer = json.loads(body["body"])
    assert list(answer) == [shape]
    if shape == "error":
        assert answer["error"]["code"] == "server_draining"


@on_a_loop
async def test_a_watch_returns_at_once_on_news_and_waits_otherwise() -> None:
    actor = LifecycleActor()
    assert await actor.watch(None) is ServerState.starting
    waiting = asyncio.ensure_future(actor.watch(ServerState.starting))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await actor.set(ServerState.ready)
    assert await waiting is ServerState.ready
    again = asyncio.ensure_future(actor.watch(ServerState.ready))
    await actor.set(ServerState.ready)  # no change: no news
    await asyncio.sleep(0.05)
    assert not again.done()
    await actor.set(ServerState.draining)
    assert await again is ServerState.draining
