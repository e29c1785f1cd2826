"""A bare async proxy: the floor of any HTTP server in front of the fake provider.

    python -m benchmarks.proxy --upstream http://127.0.0.1:PORT [--port 0]

FastAPI on uvicorn (one process) with the Letta routes the benchmarks use, forwarding each send
to the provider as a chat completion over one shared aiohttp session, as Parley's provider actor
does (streamed only for a streaming send), and answering as Letta does: one JSON
``LettaResponse`` or SSE. No state, no storage, no actors: Parley's numbers against these are
what Parley's own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

MODEL = "gpt-4o-mini"


def build_app(upstream: str) -> FastAPI:
    session: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        session["http"] = aiohttp.ClientSession(
            base_url=upstream, connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        )
        yield
        await session["http"].close()

    app = FastAPI(lifespan=lifespan)

    async def complete(text: str) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        async with session["http"].post("/v1/chat/completions", json=body) as response:
            if response.status != 200:
                raise UpstreamError(response.status, await response.text())
            reply = await response.json()
        return reply["choices"][0]["message"]["content"] or ""

    async def deltas(text: str) -> AsyncIterator[str]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True}
        async with session["http"].post("/v1/chat/completions", json=body) as response:
            if response.status != 200:
                raise UpstreamError(response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    for line in frame.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            return
                        choices = json.loads(data).get("choices") or []
                        if choices and (piece := (choices[0].get("delta") or {}).get("content")):
                            yield piece

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/conversations/")
    async def create_conversation() -> dict[str, str]:
        return {"id": f"conv-{uuid.uuid4()}"}

    @app.delete("/v1/conversations/{conversation_id}")
    async def delete_conversation(conversation_id: str) -> None:
        return None

    @app.post("/v1/conversations/{conversation_id}/messages")
    async def send(conversation_id: str, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        text = body["input"]
        if not body.get("streaming"):
            try:
                reply = await complete(text)
            except UpstreamError as exc:
                return JSONResponse({"error": exc.text}, status_code=exc.status)
            message = {"message_type": "assistant_message", "content": reply}
            return JSONResponse({"messages": [message], "stop_reason": {"stop_reason": "end_turn"}})

        async def events() -> AsyncIterator[bytes]:
            message_id = f"message-{uuid.uuid4()}"
            try:
                async for piece in deltas(text):
                    event = {"id": message_id, "message_type": "assistant_message", "content": piece}
                    yield f"data: {json.dumps(event)}\n\n".encode()
            except UpstreamError as exc:
                yield f"event: error\ndata: {json.dumps({'message': exc.text})}\n\n".encode()
            yield b'data: {"message_type":"stop_reason","stop_reason":"end_turn"}\n\n'
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class UpstreamError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__)
    parser.add_argument("--upstream", required=True, help="the fake provider's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        build_app(args.upstream), log_level="warning", access_log=False, lifespan="on", backlog=1024
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        # The bound socket is handed over, so the port is known before the line below is read.
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has only the flag)
            await asyncio.sleep(0.01)
        print(f"proxy listening on http://{host}:{port}", flush=True)
        await task

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
