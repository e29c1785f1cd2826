"""Server-wide settings of the fake provider."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .recorded_timing import RecordedTimings


@dataclass(frozen=True, slots=True)
class FakeLLMOptions:
    latency: float = 0.0  # seconds before the first byte (the whole reply when not streaming)
    token_delay: float = 0.0  # seconds between streamed tokens
    max_context_tokens: int = 32_000  # larger prompts get the provider's context-length 400
    # Recorded real calls to take latency and token gaps from, instead of the two above.
    timings: RecordedTimings | None = None


OPTIONS_KEY = web.AppKey("fake_llm_options", FakeLLMOptions)
