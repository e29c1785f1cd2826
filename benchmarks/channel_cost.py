"""CPU per streamed item between two async Ray actors: as Ray items, and over a stream channel.

``python -m benchmarks.channel_cost`` starts a Ray of its own (and shuts it down), then has one
actor read ``--streams`` concurrent streams of ``--items`` items from another, paced
``--gap`` seconds apart as a token stream is, once as a Ray streaming-generator call (every item a Ray
item) and once as Parley makes its streaming calls: a plain Ray call handing off the first item
and a ``actors.channel`` ticket for the rest (``actors.streams``). It prints the CPU each of the two actor
processes spent per item, measured from their user + system time; the pacing's own sleeps are
in both sides of both figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import psutil
import ray

from actors.streams import Handoff, hand_off, handed, stream_values

PAYLOAD = b"x" * 200  # about one encoded batch of a token or two


async def _paced(count: int, gap: float) -> AsyncIterator[bytes]:
    for _ in range(count):
        await asyncio.sleep(gap)
        yield PAYLOAD


@ray.remote(num_cpus=0, max_concurrency=1000)
class Producer:
    def pid(self) -> int:
        return os.getpid()

    async def items(self, count: int, gap: float) -> AsyncIterator[bytes]:
        async with aclosing(_paced(count, gap)) as source:
            async for item in source:
                yield item

    async def handed_off(self, count: int, gap: float) -> Handoff[bytes]:
        return await hand_off(aclosing(_paced(count, gap)))


@ray.remote(num_cpus=0, max_concurrency=1000)
class Reader:
    def pid(self) -> int:
        return os.getpid()

    async def read(
        self, producer: ray.actor.ActorHandle, streams: int, count: int, gap: float, channel: bool
    ) -> int:
        async def one() -> int:
            if channel:
                return sum([1 async for _ in handed(await producer.handed_off.remote(count, gap))])
            generator = producer.items.options(num_returns="streaming").remote(count, gap)
            return sum([1 async for _ in stream_values(generator)])

        return sum(await asyncio.gather(*(one() for _ in range(streams))))


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--items", type=int, default=66, help="items per stream (a 100-word reply's batches)")
    parser.add_argument("--gap", type=float, default=0.04, help="seconds between items of a stream")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        producer, reader = Producer.remote(), Reader.remote()
        processes = [psutil.Process(ray.get(a.pid.remote())) for a in (producer, reader)]
        print(f"{args.streams} streams x {args.items} items, {args.gap * 1000:.0f} ms apart")
        print("| round | transport | producer us/item | reader us/item | wall s |")
        print("|---|---|---|---|---|")
        for round_ in range(1, args.rounds + 1):
            for channel in (False, True):
                ray.get(reader.read.remote(producer, 2, 3, 0.001, channel))  # warm both paths
                before = [_cpu(p) for p in processes]
                started = time.monotonic()
                count = ray.get(reader.read.remote(producer, args.streams, args.items, args.gap, channel))
                wall = time.monotonic() - started
                spent = [(_cpu(p) - b) / count * 1e6 for p, b in zip(processes, before, strict=True)]
                transport = "channel" if channel else "Ray items"
                print(f"| {round_} | {transport} | {spent[0]:.0f} | {spent[1]:.0f} | {wall:.2f} |")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
