"""The aiohttp application, in-process start-up, and the `python -m parley.fake_llm` CLI."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from . import models, stats
from .anthropic_wire import MESSAGES, count_tokens
from .openai_wire import CHAT
from .options import OPTIONS_KEY, FakeLLMOptions
from .pipeline import make_handler
from .recorded_timing import RecordedTimings
from .responses_wire import RESPONSES
from .stats import STATS_KEY, Stats, counted

MAX_BODY_BYTES = 64 * 1024 * 1024  # long-context benchmarks send big prompts
SHUTDOWN_TIMEOUT = 0.5  # `[[hang]]` handlers must not hold shutdown for aiohttp's default minute


def build_app(options: FakeLLMOptions | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[OPTIONS_KEY] = options or FakeLLMOptions()
    app[STATS_KEY] = Stats()
    provider_routes = [
        ("POST", "/v1/chat/completions", make_handler(CHAT)),
        ("POST", "/v1/responses", make_handler(RESPONSES)),
        ("POST", "/v1/messages", make_handler(MESSAGES)),
        ("POST", "/v1/messages/count_tokens", count_tokens),
        ("GET", "/v1/models", models.list_models),
        ("GET", "/v1/models/{model}", models.get_model),
    ]
    for method, path, handler in provider_routes:
        app.router.add_route(method, path, counted(path, handler))
    app.router.add_get("/health", stats.health)
    app.router.add_get("/_fake/stats", stats.get_stats)
    app.router.add_post("/_fake/reset", stats.reset_stats)
    return app


async def start_fake_llm(
    host: str = "127.0.0.1", port: int = 0, options: FakeLLMOptions | None = None
) -> tuple[web.AppRunner, int]:
    """Serve inside the running event loop; returns the runner (call `cleanup()`) and the port."""
    # No access log: benchmarks push thousands of requests through here.
    runner = web.AppRunner(build_app(options), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    actual_port = runner.addresses[0][1]
    return runner, actual_port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m parley.fake_llm",
        description="Deterministic fake OpenAI/Anthropic server for Parley tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--max-context-tokens", type=int, default=32_000)
    parser.add_argument(
        "--timing-from",
        metavar="DIR",
        help="a recordings directory: answer with the latency and token gaps of its recorded calls",
    )
    return parser.parse_args(argv)


async def _serve_until_signalled(host: str, port: int, options: FakeLLMOptions) -> None:
    runner, actual_port = await start_fake_llm(host, port, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Tests wait for exactly this line and parse the port out of it.
    print(f"fake-llm listening on http://{host}:{actual_port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = FakeLLMOptions(
        latency=args.latency,
        token_delay=args.token_delay,
        max_context_tokens=args.max_context_tokens,
        timings=RecordedTimings.load(args.timing_from) if args.timing_from else None,
    )
    try:
        asyncio.run(_serve_until_signalled(args.host, args.port, options))
    except OSError as exc:  # typically: the port is taken
        print(f"fake-llm: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
