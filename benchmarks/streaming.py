"""The ``streaming`` scenario: N warm conversations each stream one reply at once, as a chat UI
would read them; on each surface (Letta ``stream_tokens``, OpenAI Responses ``stream=true``).

Per stream it times the first text delta and every gap between text deltas (arrival at the
client, so every hop and every wait inside the server is in it); per phase, the server tree's CPU
per streamed turn, split by hop: each process of the tree is put in one bucket by its title
(``ray::ProviderActor``, ``ray::ConversationActor``, ``ray::ServeReplica``, haproxy, the rest).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from .load import Clients, OpenAITarget, SseParser, Target, turn_text
from .measure import TreeCpu, machine_busy_seconds, median, percentile

# Process title prefix -> hop; the first that matches wins, anything else is "other".
HOPS = (
    ("ray::ProviderActor", "provider actor"),
    ("ray::ConversationActor", "conversation actor"),
    ("ray::ServeReplica", "ingress replica"),
    ("haproxy", "haproxy"),
    ("ray::ProxyActor", "serve proxy"),
)
HOP_NAMES = [name for _, name in HOPS] + ["other"]
# The bound on the gap between text deltas: gaps longer than this are counted by window.
LONG_GAP_S = 0.05
# When a gap ended, relative to a phase's streams (``gaps_by_window``).
WINDOWS = ("start", "steady", "end")


def hop_of(proc: psutil.Process) -> str:
    try:
        title = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "other"
    for prefix, name in HOPS:
        if title.startswith(prefix) or (prefix == "haproxy" and "haproxy" in proc.name()):
            return name
    return "other"


class HopCpu:
    """CPU seconds of a process tree between ``start`` and ``stop``, by hop. The processes that
    matter here are long-lived actors; one that exits mid-phase counts up to its last sample."""

    def __init__(self, tree) -> None:
        self._tree = tree
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}

    def _read(self) -> dict[int, tuple[str, float]]:
        now: dict[int, tuple[str, float]] = {}
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            now[proc.pid] = (hop_of(proc), times.user + times.system)
        return now

    def start(self) -> None:
        self._last = self._read()
        self._start = {pid: cpu for pid, (_, cpu) in self._last.items()}

    def stop(self) -> dict[str, float]:
        self._last.update(self._read())
        spent: Counter[str] = Counter({name: 0.0 for name in HOP_NAMES})
        for pid, (hop, cpu) in self._last.items():
            spent[hop] += cpu - self._start.get(pid, 0.0)
        return dict(spent)


@dataclass
class StreamResult:
    ok: bool = False
    error: str | None = None
    first_text: float | None = None  # seconds from sending to the first text delta
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive text deltas
    deltas: int = 0
    # perf_counter() when each text delta arrived: the first, then the end of each gap in ``gaps``
    arrivals: list[float] = field(default_factory=list)


async def stream_turn(
    client: httpx.AsyncClient, target: Target, conversation_id: str, text: str, expected: str
) -> StreamResult:
    """One streamed turn, timed at every text delta. Never raises: a failure is in the result."""
    path, body = target.request(conversation_id, text, True)
    result = StreamResult()
    pieces: list[str] = []
    began = time.perf_counter()
    last: float | None = None
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"http_{response.status_code}"
                return result
            parser = SseParser()
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                for name, data in parser.feed(chunk):
                    if data == "[DONE]":
                        continue
                    event = json.loads(data)
                    if target.event_failed(name, event):
                        result.error = "stream_error"
                        continue
                    piece = target.event_text(event) if isinstance(event, dict) else None
                    if not piece:
                        continue
                    pieces.append(piece)
                    result.deltas += 1
                    result.arrivals.append(now)
                    if last is None:
                        result.first_text = now - began
                    else:
                        result.gaps.append(now - last)
                    last = now
    except (httpx.HTTPError, ValueError) as exc:
        result.error = f"transport:{type(exc).__name__}"
        return result
    if result.error is None and "".join(pieces) != expected:
        result.error = "wrong_reply"
    result.ok = result.error is None
    return result


def _ms(values: list[float], q: float) -> float | None:
    return percentile(values, q) * 1e3 if values else None


def gaps_by_window(results: list[StreamResult]) -> dict[str, list[float]]:
    """The gaps of ``results`` by when they ended: ``start`` while streams were still starting
    (before the last first text), ``end`` once streams were ending (after the first last text), and
    ``steady`` in between, when every stream was mid-reply. All N streams start at once, so the
    start and end windows are where turn starts and ends queue for the CPU with the live streams;
    ``steady`` is what a stream meets between such bursts (empty when the windows overlap)."""
    done = [r for r in results if r.arrivals]
    windows: dict[str, list[float]] = {w: [] for w in WINDOWS}
    if not done:
        return windows
    all_started = max(r.arrivals[0] for r in done)
    first_ended = min(r.arrivals[-1] for r in done)
    for r in done:
        for gap, at in zip(r.gaps, r.arrivals[1:], strict=True):
            window = "start" if at <= all_started else "end" if at >= first_ended else "steady"
            windows[window].append(gap)
    return windows


def phase_record(results: list[StreamResult], cpu: dict[str, float] | None, wall: float) -> dict[str, Any]:
    """One phase's figures; ``cpu`` by hop, None when no server's CPU was measured."""
    ok = [r for r in results if r.ok]
    gaps = [g for r in ok for g in r.gaps]
    windows = gaps_by_window(ok)
    firsts = [r.first_text for r in ok if r.first_text is not None]
    n = max(len(ok), 1)
    return {
        "ok": len(ok),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "wall_s": wall,
        "first_text_ms": {"p50": _ms(firsts, 50), "p99": _ms(firsts, 99)},
        "gap_ms": {"p50": _ms(gaps, 50), "p99": _ms(gaps, 99), "max": _ms(gaps, 100)},
        "steady_gap_ms": {"p50": _ms(windows["steady"], 50), "p99": _ms(windows["steady"], 99)},
        "long_gaps": {name: sum(g > LONG_GAP_S for g in found) for name, found in windows.items()},
        "deltas_per_reply": median([float(r.deltas) for r in ok]),
        "cpu_ms_per_turn": sum(cpu.values()) * 1e3 / n if cpu is not None else None,
        "hop_cpu_ms_per_turn": {hop: spent * 1e3 / n for hop, spent in (cpu or {}).items()},
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of every number (errors summed)."""

    def med(get) -> float | None:
        values = [v for v in (get(r) for r in records) if v is not None]
        return median(values) if values else None

    errors: Counter[str] = Counter()
    for r in records:
        errors.update(r["errors"])
    return {
        "repeats": len(records),
        "ok": sum(r["ok"] for r in records),
        "errors": dict(errors),
        "first_text_ms": {q: med(lambda r, q=q: r["first_text_ms"][q]) for q in ("p50", "p99")},
        "gap_ms": {q: med(lambda r, q=q: r["gap_ms"][q]) for q in ("p50", "p99", "max")},
        "steady_gap_ms": {q: med(lambda r, q=q: r["steady_gap_ms"][q]) for q in ("p50", "p99")},
        "long_gaps": {w: med(lambda r, w=w: r["long_gaps"][w]) for w in WINDOWS},
        "deltas_per_reply": med(lambda r: r["deltas_per_reply"]),
        "cpu_ms_per_turn": med(lambda r: r["cpu_ms_per_turn"]),
        "other_s": med(lambda r: r.get("other_s")),
        "hop_cpu_ms_per_turn": {h: med(lambda r, h=h: r["hop_cpu_ms_per_turn"].get(h)) for h in HOP_NAMES},
        "runs": records,
    }


async def streaming(ctx) -> dict[str, Any]:
    """For each N of ``--streams`` and each surface: N conversations warmed by one unmeasured
    streamed turn, then ``--repeats`` phases in which all N stream one reply at once. Then the same
    through the baselines of ``--targets``: the bare proxy (one process forwarding every chunk, as
    a single-process server does; its CPU per turn is measured as Parley's) and the fake itself
    (what this machine and this client make of N streams with no server between)."""
    a = ctx.args
    surfaces: dict[str, tuple[Clients, Target]] = {}
    for surface in a.surfaces:
        target = ctx.targets["parley"] if surface == "letta" else OpenAITarget(a.model)
        surfaces[surface] = (ctx.clients["parley"], target)
    for baseline in ("proxy", "direct"):
        if baseline in ctx.targets:
            surfaces[baseline] = (ctx.clients[baseline], ctx.targets[baseline])
    points = []
    turn = 0
    for n in a.streams:
        for surface, (clients, target) in surfaces.items():
            if ctx.out_of_time():
                ctx.warn(f"time budget spent: skipped streams={n} {surface}")
                continue
            if surface == "openai":
                ids = await _openai_ids(ctx, clients, target, n)
            else:
                ids = await ctx.new_conversations("parley" if surface == "letta" else surface, n)
            # Parley's surfaces are charged Parley's tree; the baselines their own (the fake: none).
            tree = ctx.rig.tree_of("parley" if surface in ("letta", "openai") else surface)
            records = []
            for repeat in range(a.repeats + 1):  # the first one warms the conversations, unmeasured
                await ctx.settle(a.settle_between)
                turn += 1
                label = "warm-up" if repeat == 0 else f"#{repeat}"
                ctx.progress.phase(f"streaming streams={n} {surface} {label}")
                meter = HopCpu(tree or (lambda: []))
                fake = TreeCpu(ctx.rig.fake_tree)
                me = psutil.Process()
                meter.start()
                fake.start()
                me0, busy0 = sum(me.cpu_times()[:2]), machine_busy_seconds()
                began = time.perf_counter()

                async def one(
                    slot: int, cid: str, turn: int = turn, target: Target = target, clients: Clients = clients
                ) -> StreamResult:
                    text, expected = turn_text(turn, a.reply_words)
                    return await stream_turn(clients.get(slot), target, cid, text, expected)

                results = await asyncio.gather(*(one(slot, cid) for slot, cid in enumerate(ids)))
                wall = time.perf_counter() - began
                cpu = meter.stop()
                busy = machine_busy_seconds() - busy0
                # What the rest of the machine used meanwhile: large means a disturbed phase.
                other = busy - sum(cpu.values()) - fake.seconds() - (sum(me.cpu_times()[:2]) - me0)
                if repeat:
                    record = phase_record(list(results), cpu if tree else None, wall)
                    records.append({**record, "machine_busy_s": busy, "other_s": other})
            if surface in ("letta", "openai"):
                await ctx.delete_conversations(ids)
            points.append({"streams": n, "surface": surface, **summarize(records)})
    return {"points": [], "streaming": {"points": points, "token_delay_s": a.token_delay}}


async def _openai_ids(ctx, clients: Clients, target: Target, n: int) -> list[str]:
    gate = asyncio.Semaphore(8)

    async def one(slot: int) -> str:
        async with gate:
            return await target.new_conversation(clients.get(slot))

    ids = list(await asyncio.gather(*(one(slot) for slot in range(n))))
    ctx.created.extend(ids)
    return ids


def streaming_md(streaming: dict[str, Any]) -> list[str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"

    columns = ["streams", "surface", "first text p50 / p99 ms", "gap p50 / p99 / max ms", "deltas per reply"]
    columns += ["CPU ms per turn", *HOP_NAMES, "other CPU s", "ok", "errors"]
    lines = [
        f"## Streaming (provider token delay {streaming['token_delay_s']} s; medians over repeats)",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for p in streaming["points"]:
        hops = " | ".join(f(p["hop_cpu_ms_per_turn"].get(h)) for h in HOP_NAMES)
        lines.append(
            f"| {p['streams']} | {p['surface']} | {f(p['first_text_ms']['p50'])} / {f(p['first_text_ms']['p99'])} "
            f"| {f(p['gap_ms']['p50'])} / {f(p['gap_ms']['p99'])} / {f(p['gap_ms']['max'])} "
            f"| {f(p['deltas_per_reply'])} | {f(p['cpu_ms_per_turn'])} | {hops} | {f(p.get('other_s'))} | {p['ok']} | {p['errors'] or '-'} |"
        )
    long_ms = f"{LONG_GAP_S * 1e3:.0f}"
    lines += [
        "",
        f"Where the gaps over {long_ms} ms are. All streams start at once: *start* is until the last "
        "stream's first text, *end* from the first stream's last text, *steady* in between (every "
        "stream mid-reply).",
        "",
        f"| streams | surface | steady gap p50 / p99 ms | gaps over {long_ms} ms: start / steady / end |",
        "|---|---|---|---|",
    ]
    for p in streaming["points"]:
        steady, long = p.get("steady_gap_ms") or {}, p.get("long_gaps") or {}
        lines.append(
            f"| {p['streams']} | {p['surface']} | {f(steady.get('p50'))} / {f(steady.get('p99'))} "
            f"| {' / '.join(f(long.get(w)) for w in ('start', 'steady', 'end'))} |"
        )
    lines.append("")
    return lines
