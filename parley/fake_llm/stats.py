"""Request counters behind the /_fake admin endpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stats:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        # In-flight requests are still running, so only their high-water mark restarts.
        self.requests.clear()
        self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


STATS_KEY = web.AppKey("fake_llm_stats", Stats)


def counted(endpoint: str, handler: Handler) -> Handler:
    """Wrap a provider endpoint so it shows up in the stats (cheaper than a middleware)."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        stats = request.app[STATS_KEY]
        stats.requests[endpoint] += 1
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight
        try:
            return await handler(request)
        finally:
            stats.in_flight -= 1

    return wrapper


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].snapshot())


async def reset_stats(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    stats.reset()
    return web.json_response(stats.snapshot())
