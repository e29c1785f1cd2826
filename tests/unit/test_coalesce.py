"""``runtime.coalesce``: batching token deltas at the provider's pace, by time and count."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest

from runtime.coalesce import StreamGauge, coalesce, merge
from runtime.message import TextPart
from runtime.providers.base import DeltaBatch, ModelDelta, ModelResponse, ProviderError

pytestmark = pytest.mark.timeout(5)

T = TypeVar("T")
LONG = 30.0  # an interval that never elapses within a test
END = object()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def text(s: str, index: int = 0) -> ModelDelta:
    return ModelDelta("text", index, s)


def response(s: str = "done") -> ModelResponse:
    return ModelResponse(parts=[TextPart(text=s)], prompt_tokens=3, completion_tokens=2)


async def from_queue(queue: asyncio.Queue[object]) -> AsyncIterator[ModelDelta | ModelResponse]:
    """A source the test feeds item by item: ``END`` ends it, an exception is raised from it."""
    while True:
        item = await queue.get()
        if item is END:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, ModelDelta | ModelResponse)
        yield item


def feed(*items: object) -> asyncio.Queue[object]:
    queue: asyncio.Queue[object] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


async def next_batch(batches: AsyncIterator[DeltaBatch]) -> DeltaBatch:
    return await asyncio.wait_for(anext(batches), 1.0)


async def still_waiting(batches: AsyncIterator[DeltaBatch], seconds: float) -> asyncio.Future[DeltaBatch]:
    """Ask for the next batch and check none comes within ``seconds``; the request stays pending
    (cancelling it would close the generator)."""
    pending = asyncio.ensure_future(anext(batches))
    done, _ = await asyncio.wait([pending], timeout=seconds)
    assert not done, f"unexpected batch: {pending.result()}"
    return pending


def test_first_delta_is_yielded_at_once() -> None:
    async def main() -> None:
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=16)
        started = time.monotonic()
        batch = await next_batch(batches)
        assert time.monotonic() - started < 0.5
        assert batch.deltas == [text("a")]
        assert batch.response is None
        await batches.aclose()

    run(main())


def test_batches_hold_at_most_max_deltas() -> None:
    async def main() -> None:
        # Distinct indexes so nothing merges and the counts are visible.
        deltas = [text(str(i), index=i) for i in range(8)]
        queue = feed(*deltas)
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=3)
        assert (await next_batch(batches)).deltas == deltas[:1]
        assert (await next_batch(batches)).deltas == deltas[1:4]
        assert (await next_batch(batches)).deltas == deltas[4:7]
        # One pending delta waits (for the long interval) until the stream ends.
        pending = await still_waiting(batches, 0.05)
        queue.put_nowait(response())
        last = await asyncio.wait_for(pending, 1.0)
        assert last.deltas == deltas[7:]
        assert last.response == response()

    run(main())


def test_a_pause_longer_than_interval_flushes_pending() -> None:
    async def main() -> None:
        interval = 0.03
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=interval, max_deltas=16)
        assert (await next_batch(batches)).deltas == [text("a")]
        queue.put_nowait(text("b"))
        queue.put_nowait(text("c"))
        started = time.monotonic()
        # The source stays open: only the timer can produce this batch.
        batch = await next_batch(batches)
        waited = time.monotonic() - started
        assert batch.deltas == [text("bc")]
        assert batch.response is None
        assert interval * 0.5 <= waited < 0.5
        queue.put_nowait(END)
        with pytest.raises(StopAsyncIteration):
            await next_batch(batches)

    run(main())


def test_adjacent_deltas_of_one_part_are_merged() -> None:
    async def main() -> None:
        queue = feed(
            ModelDelta("reasoning", 0, "th"),
            ModelDelta("reasoning", 0, "in"),
            ModelDelta("reasoning", 0, "k"),
            text("Hel", 1),
            text("lo", 1),
            ModelDelta("tool_call", 2, '{"a"', tool_call_id="call_1", tool_name="f"),
            ModelDelta("tool_call", 2, ": 1}"),
            ModelDelta("tool_call", 3, "{}", tool_call_id="call_2", tool_name="g"),
            response(),
        )
        batches = [b async for b in coalesce(from_queue(queue), interval=LONG, max_deltas=100)]
        assert batches[0].deltas == [ModelDelta("reasoning", 0, "th")]
        assert batches[-1].response == response()
        assert batches[-1].deltas == [
            ModelDelta("reasoning", 0, "ink"),
            text("Hello", 1),
            ModelDelta("tool_call", 2, '{"a": 1}', tool_call_id="call_1", tool_name="f"),
            ModelDelta("tool_call", 3, "{}", tool_call_id="call_2", tool_name="g"),
        ]

    run(main())


def test_merge_keeps_separate_parts_apart() -> None:
    deltas = [text("a", 0), ModelDelta("reasoning", 0, "r"), text("b", 0), text("c", 1)]
    assert merge(deltas) == deltas
    assert merge([]) == []


def test_merge_takes_first_tool_identity() -> None:
    merged = merge(
        [
            ModelDelta("tool_call", 0, "", tool_call_id=None, tool_name=None),
            ModelDelta("tool_call", 0, "{", tool_call_id="call_9", tool_name="lookup"),
            ModelDelta("tool_call", 0, "}", tool_call_id="call_other", tool_name="other"),
        ]
    )
    assert merged == [ModelDelta("tool_call", 0, "{}", tool_call_id="call_9", tool_name="lookup")]


def test_source_error_is_raised_after_flushing_pending() -> None:
    async def main() -> None:
        error = ProviderError("upstream broke", "server", 502)
        queue = feed(text("a"), text("b"), text("c"), error)
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=16)
        assert (await next_batch(batches)).deltas == [text("a")]
        assert (await next_batch(batches)).deltas == [text("bc")]
        with pytest.raises(ProviderError) as info:
            await next_batch(batches)
        assert info.value is error

    run(main())


def test_source_error_with_nothing_pending() -> None:
    async def main() -> None:
        queue = feed(text("a"), RuntimeError("boom"))
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=16)
        assert (await next_batch(batches)).deltas == [text("a")]
        with pytest.raises(RuntimeError, match="boom"):
            await next_batch(batches)

    run(main())


def test_final_response_arrives_on_the_last_batch() -> None:
    async def main() -> None:
        queue = feed(text("a"), text("b"), response("ab"))
        batches = [b async for b in coalesce(from_queue(queue), interval=LONG, max_deltas=16)]
        assert [b.deltas for b in batches] == [[text("a")], [text("b")]]
        assert [b.response for b in batches] == [None, response("ab")]

    run(main())


def test_response_without_deltas() -> None:
    async def main() -> None:
        batches = [b async for b in coalesce(from_queue(feed(response())), interval=LONG)]
        assert batches == [DeltaBatch([], response())]

    run(main())


def test_source_ending_without_response_flushes_pending() -> None:
    async def main() -> None:
        queue = feed(text("a"), text("b"), END)
        batches = [b async for b in coalesce(from_queue(queue), interval=LONG, max_deltas=16)]
        assert batches == [DeltaBatch([text("a")]), DeltaBatch([text("b")])]

    run(main())


# --- pacing: at most one batch per interval, no token held longer ------------------------------
async def paced(deltas: list[ModelDelta], every: float) -> AsyncIterator[ModelDelta | ModelResponse]:
    """A provider sending ``deltas`` one per ``every`` seconds, then its response."""
    for delta in deltas:
        await asyncio.sleep(every)
        yield delta
    yield response()


def test_a_slow_provider_is_forwarded_token_by_token() -> None:
    async def main() -> None:
        deltas = [text(str(i), index=i) for i in range(5)]
        # Tokens further apart than the interval: each is its own batch, sent as it arrives.
        batches = [b async for b in coalesce(paced(deltas, 0.06), interval=0.02, max_deltas=16)]
        assert [b.deltas for b in batches[:5]] == [[d] for d in deltas]
        assert batches[-1].response == response()

    run(main())


def test_a_fast_provider_is_batched_once_per_interval() -> None:
    async def main() -> None:
        interval = 0.1
        deltas = [text(str(i), index=i) for i in range(60)]
        began = time.monotonic()
        arrivals = []
        async for batch in coalesce(paced(deltas, 0.005), interval=interval, max_deltas=1000):
            arrivals.append((time.monotonic() - began, batch))
        sent = [b for _, b in arrivals]
        assert [d for b in sent for d in b.deltas] == deltas  # nothing lost, reordered or merged away
        # ~0.3 s of tokens at one batch per 0.1 s: a handful of batches, not one per token.
        assert len(sent) <= 8
        # Consecutive batches before the last are at least (about) the interval apart.
        times = [t for t, _ in arrivals[:-1]]
        assert all(b - a >= interval * 0.8 for a, b in itertools.pairwise(times))

    run(main())


def test_the_interval_runs_from_the_last_batch_not_the_next_token() -> None:
    async def main() -> None:
        interval = 0.2
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=interval, max_deltas=16)
        sent_first = time.monotonic()
        assert (await next_batch(batches)).deltas == [text("a")]
        await asyncio.sleep(interval * 0.75)
        queue.put_nowait(text("b"))
        batch = await next_batch(batches)
        # Held only for the rest of the interval since "a", not a whole interval after "b".
        assert batch.deltas == [text("b")]
        assert time.monotonic() - sent_first < interval * 1.6
        queue.put_nowait(END)
        assert [b async for b in batches] == []

    run(main())


def test_a_consumer_that_was_busy_gets_everything_queued_in_one_batch() -> None:
    async def main() -> None:
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=0.01, max_deltas=16)
        assert (await next_batch(batches)).deltas == [text("a")]
        for piece in "bcdef":
            queue.put_nowait(text(piece))
        await asyncio.sleep(0.05)  # the consumer is away for longer than the interval
        assert (await next_batch(batches)).deltas == [text("bcdef")]
        queue.put_nowait(response())
        last = await next_batch(batches)
        assert last.deltas == [] and last.response == response()

    run(main())


def test_gauge_widens_the_gap_only_beyond_its_budget() -> None:
    gauge = StreamGauge(batches_per_s=100)
    assert gauge.gap(0.04) == 0.04
    with gauge.tracking(), gauge.tracking():
        assert gauge.open == 2
        assert gauge.gap(0.04) == 0.04  # 2 streams x 25 batches/s is within 100/s
        with gauge.tracking(), gauge.tracking(), gauge.tracking(), gauge.tracking():
            assert gauge.gap(0.04) == pytest.approx(0.06)  # 6 streams share 100 batches/s
    assert gauge.open == 0
    assert StreamGauge(0).gap(0.04) == 0.04  # no budget


def test_a_stream_counts_in_its_gauge_until_it_ends_or_fails() -> None:
    async def main() -> None:
        gauge = StreamGauge(batches_per_s=1000)
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=16, gauge=gauge)
        await next_batch(batches)
        assert gauge.open == 1
        queue.put_nowait(RuntimeError("boom"))
        with pytest.raises(RuntimeError):
            await next_batch(batches)
        assert gauge.open == 0
        done = [b async for b in coalesce(from_queue(feed(response())), gauge=gauge)]
        assert done == [DeltaBatch([], response())] and gauge.open == 0

    run(main())


def test_max_deltas_cuts_a_timed_wait_short() -> None:
    async def main() -> None:
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=LONG, max_deltas=3)
        assert (await next_batch(batches)).deltas == [text("a")]
        queue.put_nowait(text("b", 1))
        queue.put_nowait(text("c", 2))
        pending = await still_waiting(batches, 0.05)  # two pending, waiting for the interval
        queue.put_nowait(text("d", 3))
        assert (await asyncio.wait_for(pending, 1.0)).deltas == [text("b", 1), text("c", 2), text("d", 3)]
        await batches.aclose()

    run(main())


def test_a_gauge_over_its_budget_widens_the_gap() -> None:
    async def main() -> None:
        gauge = StreamGauge(batches_per_s=4)  # one stream open: a gap of 0.25 s, not 0.01
        queue = feed(text("a"))
        batches = coalesce(from_queue(queue), interval=0.01, max_deltas=16, gauge=gauge)
        assert (await next_batch(batches)).deltas == [text("a")]
        sent_first = time.monotonic()
        queue.put_nowait(text("b"))
        pending = await still_waiting(batches, 0.1)
        assert (await asyncio.wait_for(pending, 1.0)).deltas == [text("b")]
        assert time.monotonic() - sent_first >= 0.2
        await batches.aclose()

    run(main())


def test_closing_the_batches_closes_the_source() -> None:
    async def main() -> None:
        closed = asyncio.Event()
        queue = feed(text("a"))

        async def source() -> AsyncIterator[ModelDelta | ModelResponse]:
            try:
                async for item in from_queue(queue):
                    yield item
            finally:
                closed.set()

        batches = coalesce(source(), interval=LONG, max_deltas=16)
        assert (await next_batch(batches)).deltas == [text("a")]
        await batches.aclose()  # the source is waiting for its next delta meanwhile
        await asyncio.wait_for(closed.wait(), 1.0)

    run(main())


def test_a_batch_crosses_processes_as_tuples_and_comes_back_the_same() -> None:
    batch = DeltaBatch(
        [text("a"), ModelDelta("tool_call", 1, '{"x"', tool_call_id="call-1", tool_name="f")], response()
    )
    wire = pickle.loads(pickle.dumps(batch.to_wire(), protocol=5))
    assert DeltaBatch.from_wire(wire) == batch
    assert b"ModelDelta" not in pickle.dumps(batch.to_wire(), protocol=5)  # no class looked up per delta
    assert DeltaBatch.from_wire(DeltaBatch([text("b")]).to_wire()) == DeltaBatch([text("b")])
