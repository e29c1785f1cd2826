"""``EventStreamResponse``: chunks as they come, a heartbeat only after a silence, and the source
closed when the client leaves; driven as an ASGI app with a recording ``send``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from serve_app.sse import HEARTBEAT, EventStreamResponse

pytestmark = pytest.mark.timeout(10)

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.4"}}


class Client:
    """The ASGI server's side: records the bodies sent; ``leave`` makes ``receive`` disconnect."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.bodies.append(message["body"])


class Source:
    def __init__(self, pauses: list[float]) -> None:
        self.pauses = pauses
        self.closed = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for n, pause in enumerate(self.pauses):
                await asyncio.sleep(pause)
                yield f"data: {n}\n\n".encode()
        finally:
            self.closed = True


def test_a_silence_gets_a_heartbeat_per_interval_and_a_busy_stream_none() -> None:
    async def main() -> None:
        client, source = Client(), Source([0.35, 0.0])
        await EventStreamResponse(source(), heartbeat=0.1)(SCOPE, client.receive, client.send)
        assert 2 <= client.bodies.count(HEARTBEAT) <= 4
        assert [b for b in client.bodies if b != HEARTBEAT] == [b"data: 0\n\n", b"data: 1\n\n", b""]
        assert source.closed

        busy = Client()
        await EventStreamResponse(Source([0.02] * 15)(), heartbeat=0.1)(SCOPE, busy.receive, busy.send)
        assert HEARTBEAT not in busy.bodies and len(busy.bodies) == 16

    asyncio.run(main())


def test_without_a_heartbeat_a_silence_stays_silent() -> None:
    async def main() -> None:
        client = Client()
        await EventStreamResponse(Source([0.25])(), heartbeat=0.0)(SCOPE, client.receive, client.send)
        assert client.bodies == [b"data: 0\n\n", b""]

    asyncio.run(main())


def test_a_client_that_leaves_closes_the_source_at_once() -> None:
    async def main() -> None:
        client, source = Client(), Source([0.01, 30.0])
        response = asyncio.ensure_future(
            EventStreamResponse(source(), heartbeat=0.1)(SCOPE, client.receive, client.send)
        )
        await asyncio.sleep(0.15)
        client.gone.set()
        await asyncio.wait_for(response, 2)
        assert source.closed
        assert client.bodies[0] == b"data: 0\n\n" and b"" not in client.bodies

    asyncio.run(main())
