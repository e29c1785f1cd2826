"""Stand-ins for driving Parley's Ray actor classes as plain objects on one event loop.

An actor class (``DirectoryShard``, ``ConversationActor``) is an ordinary class that Ray wraps;
a unit test makes an instance directly, and gives it fakes of the actors it calls, whose methods
are called as Ray's are (``handle.method.remote(...)``, then awaited).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any


class RemoteMethod:
    """``fake.method.remote(*args)`` calls ``fn(*args)``: give it an ``async def`` to await."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self._fn(*args)


def on_a_loop(test):
    """Run an ``async def`` test on a fresh event loop, bounded."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 5))

    return run
