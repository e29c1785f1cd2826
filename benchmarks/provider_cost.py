"""CPU per streamed token on a provider actor's path: the OpenAI adapter, retries, coalescing.

``python -m benchmarks.provider_cost`` starts the fake provider (``--token-delay`` seconds between
tokens, replies of ``--reply-words`` + 2 tokens), then in this one process, on uvloop as in a Ray
actor, runs ``--streams`` concurrent streamed chat completions through what ``ProviderActor``
runs them through (``ProviderRegistry`` -> ``OpenAIProvider`` -> ``coalesce`` with the settings'
defaults), and prints the CPU this process spent (user + system, from ``getrusage``) per token
and per coalesced batch, for each round and as the median over the rounds. What the batches then
cost to cross to the conversation actor (``actors.streams``) is not in it: see
``benchmarks.channel_cost``. No Ray is started.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from dataclasses import dataclass

import uvloop

from parley.processes import start_fake_llm
from runtime.coalesce import StreamGauge, coalesce
from runtime.message import TextPart
from runtime.providers.base import EncodedRequest
from runtime.providers.registry import ProviderRegistry
from runtime.providers.retry import RetryPolicy
from runtime.settings import ProviderCredentials, Settings

from .load import turn_text


@dataclass
class Round:
    tokens: int
    batches: int
    cpu: float
    wall: float


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one(
    registry: ProviderRegistry, gauge: StreamGauge, settings: Settings, turn: int, words: int
) -> tuple[int, int]:
    """One streamed completion, coalesced as the provider actor does; (tokens, batches)."""
    text, expected = turn_text(turn, words)
    encoded = EncodedRequest(
        "openai", None, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    )
    batches = 0
    async for batch in coalesce(
        registry.stream_encoded(encoded), settings.coalesce_ms / 1000, settings.coalesce_tokens, gauge
    ):
        batches += 1
        if batch.response is not None:
            part = batch.response.parts[0]
            assert isinstance(part, TextPart) and part.text == expected, batch.response
            return batch.response.completion_tokens, batches
    raise AssertionError("the stream ended without a response")


async def _rounds(base_url: str, args: argparse.Namespace) -> list[Round]:
    settings = Settings()
    registry = ProviderRegistry(
        ProviderCredentials(openai_api_key="fake", openai_base_url=base_url),
        timeout=settings.provider_timeout_seconds,
        retry=RetryPolicy.from_settings(settings),
    )
    gauge = StreamGauge(settings.coalesce_batches_per_s)
    rounds = []
    try:
        # Warm up: connections open, modules imported, caches filled.
        await asyncio.gather(*(_one(registry, gauge, settings, i, 5) for i in range(min(args.streams, 20))))
        for _ in range(args.rounds):
            before, started = _cpu(), time.monotonic()
            done = await asyncio.gather(
                *(_one(registry, gauge, settings, i, args.reply_words) for i in range(args.streams))
            )
            cpu, wall = _cpu() - before, time.monotonic() - started
            rounds.append(Round(sum(t for t, _ in done), sum(b for _, b in done), cpu, wall))
    finally:
        await registry.aclose()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--reply-words", type=int, default=98, help="extra words per reply (98: 100 tokens)")
    parser.add_argument("--token-delay", type=float, default=0.025, help="seconds between a reply's tokens")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fake = start_fake_llm("--token-delay", str(args.token_delay))
    try:
        rounds = uvloop.run(_rounds(fake.openai_base_url, args))
    finally:
        fake.stop()
    print(f"{args.streams} streams x {args.reply_words + 2} tokens, {args.token_delay * 1000:.0f} ms apart")
    print("| round | tokens | batches | CPU us/token | CPU us/batch | CPU ms/stream | wall s |")
    print("|---|---|---|---|---|---|---|")
    for n, r in enumerate(rounds, 1):
        print(
            f"| {n} | {r.tokens} | {r.batches} | {r.cpu / r.tokens * 1e6:.1f} | {r.cpu / r.batches * 1e6:.1f} "
            f"| {r.cpu / args.streams * 1e3:.2f} | {r.wall:.2f} |"
        )
    per_token = statistics.median(r.cpu / r.tokens * 1e6 for r in rounds)
    per_batch = statistics.median(r.cpu / r.batches * 1e6 for r in rounds)
    print(f"median: {per_token:.1f} us/token, {per_batch:.1f} us/batch")


if __name__ == "__main__":
    main()
