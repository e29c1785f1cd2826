"""Retrying failed provider calls: Parley's one retry policy, in place of the SDKs' own.

The SDKs retry only until a response starts; a stream that opens and then stalls or breaks before
its first token is just as safe to retry, and their wait for ``retry-after`` is capped by a constant
(two minutes) no server operator chose. So the SDK clients run with ``max_retries=0`` and every call
goes through here instead:

- a call is retried while nothing of it has been handed on (no delta yielded): a non-streamed call
  always, a stream until its first delta; after that a failure ends the call as it is, so a client
  never sees part of a reply twice;
- retried are 408, 409, 429 and 5xx answers, timeouts and connection failures, unless the provider
  says ``x-should-retry: false`` (and anything it says ``x-should-retry: true`` of);
- the wait is the provider's ``retry-after`` when it gives one, up to ``max_retry_after_seconds``
  (asking for more ends the call at once: an earlier retry would only be refused again), else
  exponential backoff with jitter from ``backoff_seconds`` up to ``max_backoff_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from .base import ModelDelta, ModelResponse, ProviderError

log = logging.getLogger(__name__)

RETRIED_KINDS = frozenset({"rate_limit", "server", "timeout", "connection"})
RETRIED_STATUSES = frozenset({408, 409})  # request timeout, lock timeout (as the SDKs do)
NOT_TRANSIENT = "not a transient error"

Sleep = Callable[[float], Awaitable[None]]


class RetrySettings(Protocol):
    provider_max_retries: int
    provider_backoff_seconds: float
    provider_max_retry_after_seconds: float


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_seconds: float = 0.5  # the first wait without retry-after; doubles on each retry
    max_backoff_seconds: float = 8.0
    max_retry_after_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(
            max_retries=max(settings.provider_max_retries, 0),
            backoff_seconds=max(settings.provider_backoff_seconds, 0.0),
            max_retry_after_seconds=max(settings.provider_max_retry_after_seconds, 0.0),
        )

    def wait_before_retry(self, error: ProviderError, retries_done: int) -> float | str:
        """Seconds to wait before retrying after ``error``, or why not to retry."""
        transient = error.kind in RETRIED_KINDS or error.status in RETRIED_STATUSES
        if not transient and error.should_retry is not True:
            return NOT_TRANSIENT
        if error.should_retry is False:
            return "the provider said not to retry"
        if retries_done >= self.max_retries:
            return f"gave up after {retries_done + 1} attempts"
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after_seconds:
                return (
                    f"the provider asked to wait {error.retry_after:g} s before retrying, longer than "
                    f"the {self.max_retry_after_seconds:g} s Parley waits at most"
                )
            return error.retry_after
        backoff = min(self.backoff_seconds * 2**retries_done, self.max_backoff_seconds)
        return backoff * (1 - 0.25 * random.random())


def _final(error: ProviderError, why: str) -> ProviderError:
    """The error a call ends with: the provider's, plus why Parley did not retry it (nothing to
    add for an error no one would retry)."""
    if why == NOT_TRANSIENT:
        return error
    return ProviderError(
        f"{error.message}; {why}", error.kind, error.status, error.retry_after, error.should_retry
    )


async def complete_with_retries(
    call: Callable[[], Awaitable[ModelResponse]], policy: RetryPolicy, sleep: Sleep = asyncio.sleep
) -> ModelResponse:
    """``call()``, retried by ``policy``: nothing of a non-streamed call reaches anyone before it
    has succeeded, so every attempt is safe to repeat."""
    retries = 0
    while True:
        try:
            return await call()
        except ProviderError as exc:
            wait = policy.wait_before_retry(exc, retries)
            if isinstance(wait, str):
                raise _final(exc, wait) from None
            log.info("retrying provider call in %.2f s (retry %d): %s", wait, retries + 1, exc.message)
            await sleep(wait)
            retries += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncIterator[ModelDelta | ModelResponse]],
    policy: RetryPolicy,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[ModelDelta | ModelResponse]:
    """The items of ``open_stream()``; an attempt that fails before its first delta is started
    over by ``policy``, one that fails after it ends the stream with its error."""
    retries = 0
    while True:
        emitted = False
        try:
            async with aclosing(open_stream()) as stream:  # type: ignore[type-var]
                async for item in stream:
                    if isinstance(item, ModelDelta):
                        emitted = True
                    yield item
            return
        except ProviderError as exc:
            if emitted:
                raise _final(exc, "the reply had already started streaming, so it was not retried") from None
            wait = policy.wait_before_retry(exc, retries)
            if isinstance(wait, str):
                raise _final(exc, wait) from None
            log.info("retrying provider stream in %.2f s (retry %d): %s", wait, retries + 1, exc.message)
        await sleep(wait)
        retries += 1
