"""The scenarios: what each one sends, in which order, and how its records are put together.

A *run* is one bounded phase against one target (``parley``, ``proxy`` or ``direct``) in one
mode (``json`` or ``stream``); a *point* is one load level (a concurrency, a number of
conversations) with every target's runs and their medians over ``--repeats``. Within a repeat the
targets take turns, so a disturbance of the machine spreads over all of them rather than one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from parley.processes import ACTIVATIONS_PATH, Activations

from .load import (
    Clients,
    DirectTarget,
    LettaTarget,
    OpenAITarget,
    PhaseOutcome,
    Target,
    TurnResult,
    delete_path,
    make_client,
    new_word,
    recall_text,
    remember_text,
    send_turn,
    sequential_turns,
    turn_text,
)
from .measure import median, memory_of, percentile
from .progress import Progress
from .rig import Meter, Rig
from .streaming import streaming

TARGETS = ("parley", "proxy", "direct")


# --- numbers --------------------------------------------------------------------------------------
def distribution(seconds: Iterable[float | None]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean in milliseconds, or None for no values."""
    values = [v for v in seconds if v is not None]
    if not values:
        return None
    return {
        "p50": median(values) * 1e3,
        "p90": percentile(values, 90) * 1e3,
        "p99": percentile(values, 99) * 1e3,
        "max": max(values) * 1e3,
        "mean": statistics.fmean(values) * 1e3,
        "n": len(values),
    }


SUMMED = ("errors", "errors_total", "turns_ok", "turns_requested")


def _merge(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = dict.fromkeys(k for v in present for k in v)
        return {k: _merge([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return statistics.median(present)
    return present[0]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats of every number in the runs; counts (turns, errors) are summed."""
    summary = _merge([{k: v for k, v in run.items() if k not in SUMMED} for run in runs]) or {}
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.get("errors") or {})
    summary.pop("repeat", None)
    summary["repeats"] = len(runs)
    summary["turns_ok"] = sum(run.get("turns_ok", 0) for run in runs)
    summary["turns_requested"] = sum(run.get("turns_requested", 0) for run in runs)
    summary["errors"] = dict(errors)
    summary["errors_total"] = sum(errors.values())
    summary["stopped_by"] = "time" if any(run.get("stopped_by") == "time" for run in runs) else "count"
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


# --- the shared machinery -------------------------------------------------------------------------
@dataclass
class Context:
    """Everything a scenario needs: the processes, its options, the progress bar and the log."""

    rig: Rig
    args: Any
    progress: Progress
    warnings: list[str] = field(default_factory=list)
    deadline: float = 0.0  # time.monotonic() after which no new phase starts
    agent_id: str | None = None
    provider_turn_ms: dict[str, float | None] = field(default_factory=dict)  # by mode
    clients: dict[str, Clients] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # parley conversations, deleted at the end
    activations_route: bool | None = None  # the server has GET /v1/_parley/activations (None: not asked)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.progress.note(f"warning: {text}")

    def warn_once(self, text: str) -> None:
        """``warn``, unless the same text was warned already (for checks made in a loop)."""
        if text not in self.warnings:
            self.warn(text)

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def base_url(self, target: str) -> str:
        if target == "parley":
            return self.rig.url
        if target == "proxy":
            assert self.rig.proxy is not None
            return self.rig.proxy.url
        assert self.rig.fake is not None
        return self.rig.fake.url

    async def open(self, targets: list[str]) -> None:
        """Clients for ``targets``; Parley's only when a server is up (``cluster`` starts one per
        node count and calls ``open_parley`` itself)."""
        for name in targets:
            if name == "parley":
                if self.rig.has_server:
                    await self.open_parley()
                continue
            self.clients[name] = Clients(self.base_url(name), self.args.timeout)
            self.targets[name] = LettaTarget("proxy") if name == "proxy" else DirectTarget()

    async def open_parley(self) -> None:
        """Clients for the server now running, and the benchmark agent on it."""
        self.clients["parley"] = Clients(self.base_url("parley"), self.args.timeout)
        response = await self.clients["parley"].get().post("/v1/agents/", json={"model": self.args.model})
        response.raise_for_status()
        self.agent_id = response.json()["id"]
        self.targets["parley"] = LettaTarget("parley", self.agent_id)

    async def close_parley(self, cleanup: bool = True) -> None:
        """Delete what was created on the server (unless it is about to go away with its store),
        and close its clients."""
        clients = self.clients.pop("parley", None)
        self.targets.pop("parley", None)
        if clients is None:
            return
        if cleanup:
            try:
                await self._delete_conversations(clients, self.created)
                if self.agent_id:
                    await clients.get().delete(f"/v1/agents/{self.agent_id}")
            except httpx.HTTPError as exc:
                self.warn(f"cleanup on the server failed: {type(exc).__name__}: {exc}")
        self.created = []
        self.agent_id = None
        await clients.aclose()

    async def close(self) -> None:
        await self.close_parley()
        for clients in self.clients.values():
            await clients.aclose()

    async def delete_conversations(self, ids: list[str]) -> None:
        clients = self.clients.get("parley")
        if clients is not None:
            await self._delete_conversations(clients, ids)

    async def _delete_conversations(self, clients: Clients, ids: list[str]) -> None:
        if not ids:
            return
        gate = asyncio.Semaphore(8)

        async def delete(slot: int, cid: str) -> None:
            async with gate:
                try:
                    await clients.get(slot).delete(delete_path(cid))
                except httpx.HTTPError:
                    pass

        await asyncio.gather(*(delete(slot, cid) for slot, cid in enumerate(ids)))
        gone = set(ids)
        self.created = [c for c in self.created if c not in gone]

    async def new_conversations(self, target: str, n: int) -> list[str]:
        clients, tgt = self.clients[target], self.targets[target]
        gate = asyncio.Semaphore(8)

        async def one(slot: int) -> str:
            async with gate:
                for attempt in range(3):
                    try:
                        return await tgt.new_conversation(clients.get(slot))
                    except httpx.HTTPError as exc:
                        if attempt == 2:
                            raise
                        self.warn(f"{target}: creating a conversation failed ({exc}); retrying")
                        await asyncio.sleep(0.5)
                raise AssertionError("unreachable")

        ids = list(await asyncio.gather(*(one(slot) for slot in range(n))))
        if target == "parley":
            self.created.extend(ids)
        return ids

    async def warm(self, target: str, ids: list[str], parallel: int = 8) -> None:
        """One unmeasured turn per conversation: activates Parley's actors, opens connections."""
        if not ids:
            return
        self.progress.phase(f"{target}: activating {len(ids)} conversation(s)")
        self.progress.add(len(ids))
        clients, tgt = self.clients[target], self.targets[target]
        gate = asyncio.Semaphore(parallel)
        failures: Counter[str] = Counter()

        async def one(slot: int, cid: str) -> None:
            async with gate:
                text, expected = turn_text(0, self.args.reply_words)
                result = await send_turn(clients.get(slot), tgt, cid, text, expected, stream=False)
                self.progress.advance()
                if result.error:
                    failures[result.error] += 1

        await asyncio.gather(*(one(slot, cid) for slot, cid in enumerate(ids)))
        if failures:
            self.warn(f"{target}: warm-up turns failed: {dict(failures)}")

    async def settle(self, max_seconds: float) -> float:
        return await asyncio.to_thread(self.rig.settle, max_seconds)

    async def activations(self) -> Activations | None:
        """The server's live conversations (``GET /v1/_parley/activations``), or None when it has no
        such route (a server from before it: 404, asked once) or the request failed (warned)."""
        if self.activations_route is False:
            return None
        try:
            found = await asyncio.to_thread(self.rig.activations)
        except (httpx.HTTPError, ValueError) as exc:
            self.warn_once(f"GET {ACTIVATIONS_PATH} failed ({type(exc).__name__}): live counts unknown there")
            return None
        if found is None:
            self.progress.note(
                f"the server has no {ACTIVATIONS_PATH} (404): counting ray::ConversationActor processes instead"
            )
        self.activations_route = found is not None
        return found

    async def live(self, ids: Iterable[str] = ()) -> dict[str, Any]:
        """How many conversations are live now. ``activations`` (all of the server's), ``of_ours``
        (among ``ids``) and ``hosts`` come from the activations route (None without it: then
        only ``host_processes`` says anything); ``host_processes`` counts ``ray::ConversationActor``
        processes (None for ``--url``): one per live conversation before conversation hosts, the
        few long-lived hosts since."""
        found = await self.activations()
        wanted = list(ids)
        return {
            "source": "endpoint" if found is not None else "processes",
            "activations": found.live if found is not None else None,
            "of_ours": found.live_among(wanted) if found is not None and wanted else None,
            "hosts": found.summary() if found is not None else None,
            "host_processes": self.rig.conversation_host_processes(),
        }

    async def wait_passivated(
        self, ids: list[str], baseline_processes: int | None, idle_seconds: float, extra: float
    ) -> dict[str, Any]:
        """Wait until none of ``ids`` is live, at most ``idle_seconds + extra``. Live means listed by
        the activations route; without it, ``ray::ConversationActor`` processes above
        ``baseline_processes`` (their count with no conversation live: a warm pool's spares stay);
        with neither (``--url`` to a server from before the route), the idle window plus 2 s is
        waited and ``passivated`` is None (unknown)."""
        began = time.monotonic()
        limit = idle_seconds + extra
        while True:
            live = await self.live(ids)
            waited = time.monotonic() - began
            if live["source"] == "endpoint":
                passivated: bool | None = live["of_ours"] in (0, None)
            elif live["host_processes"] is not None and baseline_processes is not None:
                passivated = live["host_processes"] <= baseline_processes
            else:
                passivated = None
                if waited >= idle_seconds + 2:
                    break
            if passivated or waited >= limit:
                break
            await asyncio.sleep(0.5)
        return {"waited_s": time.monotonic() - began, "limit_s": limit, "passivated": passivated, **live}

    async def probe_provider(self) -> None:
        """The fake provider's own time for one turn of this shape in each mode (sequential,
        median of 5): what an ideal server would add nothing to."""
        for mode in self.args.modes:
            self.provider_turn_ms[mode] = await self.provider_turn(mode == "stream")

    async def provider_turn(self, stream: bool, prefix: str = "") -> float | None:
        """The fake's own time in ms for one turn (``prefix``: directives such as a latency),
        median of 5 sequential ones."""
        fake = make_client(self.base_url("direct"), 2, self.args.timeout)
        times = []
        try:
            for i in range(5):
                text, expected = turn_text(i, self.args.reply_words, prefix=prefix)
                result = await send_turn(fake, DirectTarget(), "probe", text, expected, stream)
                if result.ok:
                    times.append(result.latency)
        finally:
            await fake.aclose()
        return median(times) * 1e3 if times else None

    async def measured(
        self,
        target: str,
        mode: str,
        level: dict[str, Any],
        repeat: int,
        requested: int,
        body: Callable[[Callable[[TurnResult], None]], Any],
        finish: Callable[[dict[str, Any], PhaseOutcome], None] | None = None,
        provider_ms: float | None = None,
    ) -> dict[str, Any] | None:
        """Run ``body`` (a coroutine factory returning a PhaseOutcome) under the meters; ``finish``
        adds a scenario's own fields to the record. ``provider_ms``: the fake's own time for one
        of these turns, when not the mode's usual one (added latency is measured from it)."""
        if self.out_of_time():
            self.warn(f"time budget spent: skipped {target} {mode} {level} repeat {repeat + 1}")
            return None
        label = " ".join(f"{k}={v}" for k, v in level.items())
        self.progress.phase(f"{target} {mode} {label} #{repeat + 1}")

        def on_turn(_: TurnResult) -> None:
            self.progress.advance()

        with Meter(self.rig, target, self.args.sample_interval) as meter:
            outcome: PhaseOutcome = await body(on_turn)
        record = run_record(target, mode, level, repeat, requested, outcome, meter)
        if finish:
            finish(record, outcome)
        provider = self.provider_turn_ms.get(mode) if provider_ms is None else provider_ms
        if provider is not None and record["latency_ms"]:
            record["added_latency_ms"] = {
                q: record["latency_ms"][q] - provider for q in ("p50", "p99", "max")
            }
        loadgen = record["cpu"]["loadgen_cores"]
        if loadgen is not None and loadgen > 0.85 and record["wall_s"] >= 2.0:
            self.warn(
                f"{target} {mode} {label}: the load generator used {loadgen:.2f} cores; "
                "it may be the bottleneck of this run"
            )
        return record


def run_record(
    target: str,
    mode: str,
    level: dict[str, Any],
    repeat: int,
    requested: int,
    outcome: PhaseOutcome,
    meter: Meter,
) -> dict[str, Any]:
    ok = outcome.ok
    wall = outcome.wall or meter.wall
    record: dict[str, Any] = {
        "target": target,
        "mode": mode,
        **level,
        "repeat": repeat,
        "turns_requested": requested,
        "turns_ok": len(ok),
        "errors": outcome.errors(),
        "errors_total": sum(outcome.errors().values()),
        "stopped_by": outcome.stopped_by,
        "wall_s": wall,
        "turns_per_s": len(ok) / wall if wall else None,
        "latency_ms": distribution(r.latency for r in ok),
        "ttfb_ms": distribution(r.ttfb for r in ok) if mode == "stream" else None,
        "first_token_ms": distribution(r.first_token for r in ok) if mode == "stream" else None,
    }
    record.update(meter.report(len(ok), target))
    return record


def make_point(level: dict[str, Any], mode: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    targets = {name: summarize(rs) for name, rs in runs.items() if rs}
    parley = (targets.get("parley") or {}).get("turns_per_s")
    point: dict[str, Any] = {
        **level,
        "mode": mode,
        "targets": targets,
        "ratio": {
            "vs_direct": ratio(parley, (targets.get("direct") or {}).get("turns_per_s")),
            "vs_proxy": ratio(parley, (targets.get("proxy") or {}).get("turns_per_s")),
        },
        "runs": runs,
    }
    return point


def split_evenly(total: int, parts: int) -> int:
    return max(1, -(-total // parts))


# --- 1. overhead / 2. scale: concurrent conversations sending sequential turns ------------------
async def concurrency_sweep(
    ctx: Context, levels: list[int], level_key: str, turns_each: Callable[[int], int]
) -> list[dict[str, Any]]:
    """For each level N (ascending): N conversations per target, each sending ``turns_each(N)``
    sequential turns, every mode, every repeat. Conversations are reused from level to level,
    but a Parley conversation that a phase would take past ``--history`` turns is first replaced
    by a fresh one (activated outside the measured window): a conversation's whole history is
    the model's context, so Parley's cost per turn grows with it."""
    a = ctx.args
    targets = a.targets
    conversations: dict[str, list[str]] = {t: [] for t in targets}
    used: list[int] = []  # turns each Parley conversation has had
    points = []
    ctx.progress.add(sum(turns_each(n) * n for n in levels) * len(targets) * len(a.modes) * a.repeats)
    for n in levels:
        if ctx.out_of_time():
            ctx.warn(f"time budget spent: skipped {level_key}={n}")
            continue
        for t in targets:
            fresh = await ctx.new_conversations(t, n - len(conversations[t]))
            await ctx.warm(t, fresh)
            conversations[t].extend(fresh)
        used.extend([1] * (n - len(used)))
        await ctx.settle(a.settle_between)
        per = turns_each(n)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(m, t): [] for m in a.modes for t in targets}
        for repeat in range(a.repeats):
            for mode in a.modes:
                for t in targets:
                    if t == "parley":
                        await _refresh(ctx, conversations[t], used, n, per)
                    ids = conversations[t][:n]
                    clients, tgt = ctx.clients[t], ctx.targets[t]

                    def body(on_turn, clients=clients, tgt=tgt, ids=ids, mode=mode, per=per):
                        return sequential_turns(
                            clients,
                            tgt,
                            ids,
                            per,
                            stream=mode == "stream",
                            max_seconds=a.max_seconds,
                            reply_words=a.reply_words,
                            on_turn=on_turn,
                        )

                    record = await ctx.measured(t, mode, {level_key: n}, repeat, per * n, body)
                    if record:
                        runs[(mode, t)].append(record)
                    if t == "parley":
                        for i in range(n):
                            used[i] += per
        for mode in a.modes:
            point = make_point({level_key: n}, mode, {t: runs[(mode, t)] for t in targets})
            provider = ctx.provider_turn_ms.get(mode)
            if provider:
                ideal = n / (provider / 1e3)
                point["ideal_turns_per_s"] = ideal
                point["ratio"]["vs_ideal"] = ratio(
                    (point["targets"].get("parley") or {}).get("turns_per_s"), ideal
                )
            points.append(point)
    return points


async def _refresh(ctx: Context, conversations: list[str], used: list[int], n: int, per: int) -> None:
    """Replace the first ``n`` conversations that ``per`` more turns would take past the history
    cap (unless they are fresh already): delete them, then activate new ones, unmeasured."""
    stale = [i for i in range(n) if used[i] > 1 and used[i] + per > ctx.args.history]
    if not stale:
        return
    ctx.progress.phase(f"parley: replacing {len(stale)} conversation(s) past {ctx.args.history} turns")
    await ctx.delete_conversations([conversations[i] for i in stale])
    fresh = await ctx.new_conversations("parley", len(stale))
    await ctx.warm("parley", fresh)
    for i, cid in zip(stale, fresh, strict=True):
        conversations[i] = cid
        used[i] = 1
    await ctx.settle(ctx.args.settle_between)


async def overhead(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    points = await concurrency_sweep(ctx, a.concurrency, "concurrency", lambda c: split_evenly(a.turns, c))
    for point in points:  # at zero latency an "ideal" throughput means nothing
        point.pop("ideal_turns_per_s", None)
        point["ratio"].pop("vs_ideal", None)
    return {"points": points}


async def scale(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    points = await concurrency_sweep(
        ctx, a.conversations, "conversations", lambda n: a.turns_per_conversation
    )
    return {"points": points}


# --- 3. churn: new conversations, one or two turns each ------------------------------------------
async def churn(ctx: Context) -> dict[str, Any]:
    """Workers creating conversations and sending each one or two turns. With ``--recall-check``
    (the default) the first turn tells each conversation a word, and after the phase, outside the
    measured window and before the phase's conversations are deleted, every Parley conversation
    that was told one is asked for it back (the baselines keep no history: they only send the same
    first turn)."""
    a = ctx.args
    targets = a.targets
    per_level = a.conversations * (a.turns_each + 1)
    recall = a.conversations if a.recall_check else 0
    ctx.progress.add((per_level * len(targets) + recall) * len(a.concurrency) * a.repeats)
    points = []
    for c in a.concurrency:
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        for repeat in range(a.repeats):
            for t in targets:
                created: list[str] = []
                clients, tgt = ctx.clients[t], ctx.targets[t]

                def body(on_turn, clients=clients, tgt=tgt, c=c, created=created):
                    return new_conversation_phase(
                        ctx,
                        tgt,
                        clients,
                        conversations=a.conversations,
                        concurrency=c,
                        turns_each=a.turns_each,
                        stream=a.mode == "stream",
                        on_turn=on_turn,
                        created=created,
                        remember=a.recall_check,
                    )

                outcomes: list[PhaseOutcome] = []

                def finish(record: dict[str, Any], outcome: PhaseOutcome, outcomes=outcomes) -> None:
                    _churn_fields(record, outcome)
                    outcomes.append(outcome)

                record = await ctx.measured(
                    t, a.mode, {"concurrency": c}, repeat, a.conversations * a.turns_each, body, finish
                )
                if record is None:
                    continue
                runs[t].append(record)
                if t == "parley":  # untimed: stop this repeat's actors before the next phase
                    outcome = outcomes[0]
                    assert isinstance(outcome, ChurnOutcome)
                    if a.recall_check:
                        record["recall"] = await recall_check(ctx, tgt, clients, outcome.told, c)
                    ctx.progress.phase(f"parley: deleting {len(created)} conversation(s)")
                    await ctx.delete_conversations(created)
                    await ctx.settle(a.settle_between)
        point = make_point({"concurrency": c}, a.mode, runs)
        for name, summary in point["targets"].items():
            summary["conversations_per_s"] = median([r["conversations_per_s"] for r in runs[name]])
            if any("recall" in r for r in runs[name]):
                summary["recall"] = summed_counts([r["recall"] for r in runs[name] if "recall" in r])
        parley = (point["targets"].get("parley") or {}).get("conversations_per_s")
        point["ratio"]["conversations_vs_direct"] = ratio(
            parley, (point["targets"].get("direct") or {}).get("conversations_per_s")
        )
        point["ratio"]["conversations_vs_proxy"] = ratio(
            parley, (point["targets"].get("proxy") or {}).get("conversations_per_s")
        )
        points.append(point)
    return {"points": points}


@dataclass
class ChurnOutcome(PhaseOutcome):
    created_ok: int = 0
    create_times: list[float] = field(default_factory=list)
    first_turns: list[TurnResult] = field(default_factory=list)
    later_turns: list[TurnResult] = field(default_factory=list)
    conversations_done: int = 0  # created and every turn answered
    told: list[tuple[str, str]] = field(default_factory=list)  # (conversation, word) whose telling was OK


async def new_conversation_phase(
    ctx: Context,
    tgt: Target,
    clients: Clients,
    *,
    conversations: int,
    concurrency: int,
    turns_each: int,
    stream: bool,
    on_turn: Callable[[TurnResult], None],
    created: list[str] | None = None,
    remember: bool = False,
) -> ChurnOutcome:
    """``concurrency`` workers, each looping until ``conversations`` were started: create one (inside
    the measured window: a user's first turn waits for it too), then send its ``turns_each``
    sequential turns. With ``remember`` the first turn tells it a new word (``outcome.told``), so
    that ``recall_check`` can ask for it later. A failed creation is a ``create_*`` error.
    ``created`` (and ``ctx.created``, deleted at the end) collect Parley's new ids."""
    a = ctx.args
    outcome = ChurnOutcome()
    deadline = time.monotonic() + a.max_seconds
    next_index = iter(range(conversations))

    async def worker(slot: int) -> None:
        client = clients.get(slot)
        for _ in next_index:
            if time.monotonic() > deadline:
                outcome.stopped_by = "time"
                return
            began = time.perf_counter()
            try:
                cid = await tgt.new_conversation(client)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                kind = (
                    f"create_http_{exc.response.status_code}"
                    if isinstance(exc, httpx.HTTPStatusError)
                    else f"create_{type(exc).__name__}"
                )
                outcome.results.append(TurnResult(False, time.perf_counter() - began, kind))
                on_turn(outcome.results[-1])
                continue
            outcome.create_times.append(time.perf_counter() - began)
            outcome.created_ok += 1
            if created is not None:
                created.append(cid)
                ctx.created.append(cid)
            on_turn(TurnResult(True, 0.0))
            all_ok = True
            for i in range(1, turns_each + 1):
                word = new_word() if remember and i == 1 else None
                text, expected = remember_text(word) if word else turn_text(i, a.reply_words)
                result = await send_turn(client, tgt, cid, text, expected, stream)
                outcome.results.append(result)
                (outcome.first_turns if i == 1 else outcome.later_turns).append(result)
                on_turn(result)
                if word and result.ok:
                    outcome.told.append((cid, word))
                if not result.ok:
                    all_ok = False
                    break
            if all_ok:
                outcome.conversations_done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    outcome.wall = time.perf_counter() - began
    return outcome


async def recall_check(
    ctx: Context, tgt: Target, clients: Clients, told: list[tuple[str, str]], parallel: int
) -> dict[str, Any]:
    """Ask every conversation in ``told`` for its word, ``parallel`` at a time, unmeasured: a
    conversation that passivated meanwhile is reactivated from the store, and must still know it.
    ``forgot``: answered without the word; ``failed``: no answer (the kinds in ``errors``)."""
    ctx.progress.phase(f"parley: asking {len(told)} conversation(s) for their word")
    gate = asyncio.Semaphore(max(1, parallel))
    results: list[TurnResult] = []

    async def one(slot: int, cid: str, word: str) -> None:
        async with gate:
            text, expected = recall_text(word)
            results.append(await send_turn(clients.get(slot), tgt, cid, text, expected, stream=False))
            ctx.progress.advance()

    began = time.perf_counter()
    await asyncio.gather(*(one(slot, cid, word) for slot, (cid, word) in enumerate(told)))
    check = recall_counts(results)
    check["wall_s"] = time.perf_counter() - began
    check["recall_ms"] = distribution(r.latency for r in results if r.ok)
    if check["forgot"] or check["failed"]:
        ctx.warn(
            f"recall: {check['forgot']} of {check['checked']} conversation(s) forgot their word, "
            f"{check['failed']} did not answer ({check['errors']})"
        )
    return check


def recall_counts(results: list[TurnResult]) -> dict[str, Any]:
    """Recall turns by outcome: ``remembered`` (the word came back), ``forgot`` (a reply without it),
    ``failed`` (no reply: ``errors`` by kind)."""
    errors = Counter(r.error for r in results if r.error and r.error != "wrong_reply")
    return {
        "checked": len(results),
        "remembered": sum(1 for r in results if r.ok),
        "forgot": sum(1 for r in results if r.error == "wrong_reply"),
        "failed": sum(errors.values()),
        "errors": dict(errors),
    }


COUNTS = ("checked", "remembered", "forgot", "failed")


def summed_counts(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall checks over repeats: counts summed (``summarize`` would take their medians), the
    rest (latency) as medians."""
    merged = _merge(checks) or {}
    errors: Counter[str] = Counter()
    for check in checks:
        errors.update(check.get("errors") or {})
    return {**merged, **{k: sum(c.get(k, 0) for c in checks) for k in COUNTS}, "errors": dict(errors)}


def _churn_fields(record: dict[str, Any], outcome: PhaseOutcome) -> None:
    assert isinstance(outcome, ChurnOutcome)
    wall = outcome.wall
    record["conversations_ok"] = outcome.conversations_done
    record["conversations_per_s"] = outcome.conversations_done / wall if wall else None
    record["create_ms"] = distribution(outcome.create_times)
    record["first_turn_ms"] = distribution(r.latency for r in outcome.first_turns if r.ok)
    record["later_turn_ms"] = distribution(r.latency for r in outcome.later_turns if r.ok)
    target_s = record["cpu"]["target_s"]
    done = outcome.conversations_done
    record["cpu"]["target_ms_per_conversation"] = (
        target_s / done * 1e3 if target_s is not None and done else None
    )


# --- 4. contention: pairs of overlapping sends to one conversation ------------------------------
async def contention(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    ids = await ctx.new_conversations("parley", a.concurrency)
    await ctx.warm("parley", ids)
    await ctx.settle(a.settle_between)
    ctx.progress.add(2 * a.pairs * len(a.modes) * a.repeats)
    points = []
    totals: Counter[str] = Counter()
    for mode in a.modes:
        runs: list[dict[str, Any]] = []
        for repeat in range(a.repeats):
            pairs: Counter[str] = Counter()
            conflict: list[float] = []

            def body(on_turn, mode=mode, pairs=pairs, conflict=conflict):
                return _pairs(ctx, ids, mode == "stream", pairs, conflict, on_turn)

            record = await ctx.measured(
                "parley", mode, {"concurrency": a.concurrency}, repeat, 2 * a.pairs, body
            )
            if record is None:
                continue
            record["pairs"] = {"total": sum(pairs.values()), **_pair_counts(pairs)}
            record["conflict_ms"] = distribution(conflict)
            totals.update(pairs)
            runs.append(record)
        point = make_point({"concurrency": a.concurrency}, mode, {"parley": runs})
        summary = point["targets"].get("parley")
        if summary is not None:
            counted: Counter[str] = Counter()
            for run in runs:
                counted.update({k: v for k, v in run["pairs"].items() if k != "total"})
            summary["pairs"] = {"total": sum(counted.values()), **_pair_counts(counted)}
        points.append(point)
    pairs_total = {"total": sum(totals.values()), **_pair_counts(totals)}
    if pairs_total["violations"]:
        ctx.warn(f"contention: {pairs_total['violations']} pair(s) did not give exactly one 200 and one 409")
    return {"points": points, "pairs": pairs_total, "hold_s": a.hold}


def _pair_counts(pairs: Counter[str]) -> dict[str, int]:
    counts = {k: pairs.get(k, 0) for k in ("one_ok_one_409", "both_ok", "both_409", "other")}
    counts["violations"] = counts["both_ok"] + counts["both_409"] + counts["other"]
    return counts


async def _pairs(
    ctx: Context,
    ids: list[str],
    stream: bool,
    pairs: Counter[str],
    conflict: list[float],
    on_turn: Callable[[TurnResult], None],
) -> PhaseOutcome:
    """``--pairs`` pairs, ``len(ids)`` at a time, each pair on its own conversation; the expected
    409 of a correct pair is not counted as an error."""
    a = ctx.args
    clients, tgt = ctx.clients["parley"], ctx.targets["parley"]
    outcome = PhaseOutcome()
    deadline = time.monotonic() + a.max_seconds
    next_pair = iter(range(a.pairs))

    async def worker(slot: int, cid: str) -> None:
        client = clients.get(slot)
        for p in next_pair:
            if time.monotonic() > deadline:
                outcome.stopped_by = "time"
                return
            text, expected = turn_text(p, a.reply_words, prefix=f"[[latency={a.hold}]] ")
            both = await asyncio.gather(
                send_turn(client, tgt, cid, text, expected, stream),
                send_turn(client, tgt, cid, text, expected, stream),
            )
            for result in both:
                on_turn(result)
            kinds = sorted("ok" if r.ok else (r.error or "?") for r in both)
            if kinds == ["http_409", "ok"]:
                pairs["one_ok_one_409"] += 1
                loser = next(r for r in both if not r.ok)
                conflict.append(loser.latency)
                outcome.results.append(next(r for r in both if r.ok))
                continue
            pairs[
                "both_ok" if kinds == ["ok", "ok"] else "both_409" if kinds == ["http_409"] * 2 else "other"
            ] += 1
            outcome.results.extend(both)

    began = time.perf_counter()
    await asyncio.gather(*(worker(slot, cid) for slot, cid in enumerate(ids)))
    outcome.wall = time.perf_counter() - began
    return outcome


# --- 5. memory: the server's tree per live conversation, then after passivation -----------------
async def memory(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    rig = ctx.rig
    n = a.conversations
    half = n // 2
    samples: list[dict[str, Any]] = []

    async def sample(label: str, live: int) -> dict[str, Any]:
        counted = await ctx.live(ids)
        actors = rig.server.conversation_actor_processes() if rig.server else []
        tree = memory_of(rig.server_tree())
        entry = {
            "label": label,
            "live_conversations": live,
            "live_activations": counted["activations"],  # None: the server has no activations route
            "hosts": counted["hosts"],
            "actor_processes": len(actors),
            "tree_processes": len(rig.server_tree()),
            "tree_mib": vars(tree),
            "actors_mib": vars(memory_of(actors)) if actors else None,
        }
        samples.append(entry)
        shown = "?" if counted["activations"] is None else counted["activations"]
        ctx.progress.note(
            f"memory {label}: {live} conversation(s) sent to, {shown} live activation(s), "
            f"{len(actors)} ray::ConversationActor process(es), "
            f"tree PSS {tree.pss_mib:.0f} MiB, RSS {tree.rss_mib:.0f} MiB"
        )
        return entry

    ctx.progress.add(n)
    ids = await ctx.new_conversations("parley", n)
    await ctx.settle(a.settle_between)
    await sample("empty", 0)
    points = []
    for label, batch in (("half", ids[:half]), ("full", ids[half:])):
        if not batch:
            continue
        clients, tgt = ctx.clients["parley"], ctx.targets["parley"]

        def body(on_turn, batch=batch, clients=clients, tgt=tgt):
            return _activate(clients, tgt, batch, a.concurrency, a.reply_words, on_turn)

        live = len(ids[:half]) + (len(batch) if label == "full" else 0)
        record = await ctx.measured("parley", a.mode, {"live_conversations": live}, 0, len(batch), body)
        if record is not None:
            points.append(make_point({"live_conversations": live}, a.mode, {"parley": [record]}))
        await ctx.settle(a.settle_between)
        await sample(label, live)

    # Passivation: every conversation idles out after PARLEY_CONVERSATION_IDLE_SECONDS. Without
    # the activations route, ray::ConversationActor processes are counted down to their number
    # with no conversation live (a warm pool's spares stay).
    ctx.progress.phase(f"waiting for passivation (idle {a.idle_seconds:.0f} s)")
    wait = await ctx.wait_passivated(
        ids, samples[0]["actor_processes"], a.idle_seconds, a.passivation_timeout
    )
    waited = wait["waited_s"]
    await ctx.settle(a.settle_between)
    after = await sample("passivated", 0)
    if wait["passivated"] is False:
        ctx.warn(
            f"memory: after {waited:.0f} s, {wait['of_ours'] if wait['of_ours'] is not None else '?'} "
            f"conversation(s) still live, {after['actor_processes']} ray::ConversationActor process(es) "
            f"(with no live conversation: {samples[0]['actor_processes']})"
        )

    by_label = {s["label"]: s for s in samples}
    per_conversation = {}
    if "full" in by_label and n:
        full, empty = by_label["full"], by_label["empty"]
        per_conversation = {
            k: (full["tree_mib"][k] - empty["tree_mib"][k]) / n for k in ("rss_mib", "pss_mib", "uss_mib")
        }
        if full["actors_mib"] and full["actor_processes"]:
            per_conversation["actor_process"] = {
                k: v / full["actor_processes"] for k, v in full["actors_mib"].items()
            }
    return {
        "points": points,
        "memory": {
            "conversations": n,
            "idle_seconds": a.idle_seconds,
            "samples": samples,
            "per_conversation_mib": per_conversation,
            "passivation_wait_s": waited,
            "passivation": wait,
            "returned_after_passivation_mib": {
                k: by_label["full"]["tree_mib"][k] - after["tree_mib"][k]
                for k in ("rss_mib", "pss_mib", "uss_mib")
            }
            if "full" in by_label
            else None,
        },
    }


async def _activate(
    clients: Clients,
    target: Target,
    ids: list[str],
    parallel: int,
    reply_words: int,
    on_turn: Callable[[TurnResult], None],
) -> PhaseOutcome:
    """The first turn of each conversation, ``parallel`` at a time."""
    outcome = PhaseOutcome()
    gate = asyncio.Semaphore(parallel)

    async def one(slot: int, cid: str) -> None:
        async with gate:
            text, expected = turn_text(1, reply_words)
            result = await send_turn(clients.get(slot), target, cid, text, expected, stream=False)
            outcome.results.append(result)
            on_turn(result)

    began = time.perf_counter()
    await asyncio.gather(*(one(slot, cid) for slot, cid in enumerate(ids)))
    outcome.wall = time.perf_counter() - began
    return outcome


# --- 6. cluster: the scale load on a Ray cluster of 1, 2, 3 ... nodes on this machine ----------
async def cluster(ctx: Context) -> dict[str, Any]:
    """For each node count (ascending): a fresh Ray cluster of that many nodes on this machine, a
    fresh redis-server and a ``parley serve`` joining them; N conversations per target sending
    sequential turns at the provider's latency (and at zero, with ``--zero-latency``); then all
    of it is stopped. The server's CPU is the whole cluster's: every node's processes, the
    ``parley serve`` driver and Redis (``cpu.parts_s`` splits it)."""
    a = ctx.args
    latencies = [a.latency] + ([0.0] if a.zero_latency and a.latency != 0 else [])
    prefixes = {lat: "" if lat == a.latency else f"[[latency={lat:g}]] " for lat in latencies}
    stream = a.mode == "stream"
    provider_ms = {lat: ctx.provider_turn_ms.get(a.mode) for lat in latencies if not prefixes[lat]}
    for lat in latencies:
        if lat not in provider_ms:
            provider_ms[lat] = await ctx.provider_turn(stream, prefixes[lat])
    n, per = a.conversations, a.turns_per_conversation
    ctx.progress.add(per * n * len(latencies) * len(a.targets) * a.repeats * len(a.nodes))
    points: list[dict[str, Any]] = []
    setups: list[dict[str, Any]] = []
    for nodes in a.nodes:
        if ctx.out_of_time():
            ctx.warn(f"time budget spent: skipped nodes={nodes}")
            continue
        ctx.progress.phase(f"starting {nodes} node(s), redis and parley serve")
        try:
            setup = await asyncio.to_thread(
                ctx.rig.start_cluster,
                nodes,
                cpus=a.cpus_per_node,
                object_store_mb=a.object_store_mb,
                node_ip=a.node_ip,
                start_timeout=a.node_start_timeout,
            )
        except Exception as exc:
            ctx.warn(f"nodes={nodes}: did not start: {type(exc).__name__}: {exc}")
            setups.append({"nodes": nodes, "error": f"{type(exc).__name__}: {exc}"})
            continue
        setups.append(setup)
        try:
            runs = await _cluster_level(ctx, nodes, latencies, prefixes, provider_ms, setup)
        except Exception as exc:  # this node count is lost; the next one starts from scratch
            ctx.warn(f"nodes={nodes}: failed: {type(exc).__name__}: {exc}")
            setup["error"] = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            ctx.progress.phase(f"stopping parley serve, {nodes} node(s) and redis")
            await ctx.close_parley(cleanup=False)  # the store goes away with its redis-server
            setup["stop_s"] = await asyncio.to_thread(ctx.rig.stop_cluster)  # by part
        for lat in latencies:
            point = make_point(
                {"nodes": nodes, "latency_s": lat}, a.mode, {t: runs[(lat, t)] for t in a.targets}
            )
            if provider_ms[lat] and lat > 0:  # at zero latency an "ideal" means nothing
                ideal = n / (provider_ms[lat] / 1e3)
                point["ideal_turns_per_s"] = ideal
                point["ratio"]["vs_ideal"] = ratio(_turns_per_s(point), ideal)
            point["conversations"] = n
            point["placement"] = setup.get("placement")
            point["live_per_node"] = setup.get("live_per_node")
            points.append(point)
    base_nodes = min((p["nodes"] for p in points), default=None)
    for point in points:
        base = next(
            (p for p in points if p["nodes"] == base_nodes and p["latency_s"] == point["latency_s"]), None
        )
        point["ratio"]["vs_base_nodes"] = ratio(_turns_per_s(point), _turns_per_s(base))
        point["ratio"]["cpu_vs_base_nodes"] = ratio(_cpu_per_turn(point), _cpu_per_turn(base))
    return {
        "points": points,
        "cluster": {
            "node_counts": a.nodes,
            "base_nodes": base_nodes,
            "conversations": n,
            "turns_per_conversation": per,
            "latencies_s": latencies,
            "provider_turn_ms": {str(lat): ms for lat, ms in provider_ms.items()},
            "setups": setups,
        },
    }


def _turns_per_s(point: dict[str, Any] | None) -> float | None:
    return ((point or {}).get("targets", {}).get("parley") or {}).get("turns_per_s")


def _cpu_per_turn(point: dict[str, Any] | None) -> float | None:
    parley = (point or {}).get("targets", {}).get("parley") or {}
    return (parley.get("cpu") or {}).get("target_ms_per_turn")


async def _cluster_level(
    ctx: Context,
    nodes: int,
    latencies: list[float],
    prefixes: dict[float, str],
    provider_ms: dict[float, float | None],
    setup: dict[str, Any],
) -> dict[tuple[float, str], list[dict[str, Any]]]:
    """One node count's runs, with the cluster up: activate the conversations, then every
    repeat, latency and target in turn. Records where the actors run in ``setup``."""
    a = ctx.args
    rig = ctx.rig
    setup["settle_s"] = await ctx.settle(a.settle)
    await ctx.open_parley()
    n, per = a.conversations, a.turns_per_conversation
    conversations: dict[str, list[str]] = {}
    for t in a.targets:
        conversations[t] = await ctx.new_conversations(t, n)
        await ctx.warm(t, conversations[t])
    used = [1] * n  # turns each Parley conversation has had
    if rig.cluster:
        setup["placement"] = rig.cluster.placement()
        live = rig.activations()
        if live is not None:
            setup["live_per_node"] = rig.cluster.live_per_node(live)
        ctx.progress.note(f"nodes={nodes}: {_placement_line(setup['placement'])}")
    await ctx.settle(a.settle_between)
    runs: dict[tuple[float, str], list[dict[str, Any]]] = {
        (lat, t): [] for lat in latencies for t in a.targets
    }
    for repeat in range(a.repeats):
        for lat in latencies:
            for t in a.targets:
                if t == "parley":
                    await _refresh(ctx, conversations[t], used, n, per)
                clients, tgt, ids = ctx.clients[t], ctx.targets[t], conversations[t]

                def body(on_turn, clients=clients, tgt=tgt, ids=ids, lat=lat):
                    return sequential_turns(
                        clients,
                        tgt,
                        ids,
                        per,
                        stream=a.mode == "stream",
                        max_seconds=a.max_seconds,
                        reply_words=a.reply_words,
                        on_turn=on_turn,
                        prefix=prefixes[lat],
                    )

                level = {"nodes": nodes, "latency_s": lat}
                record = await ctx.measured(
                    t, a.mode, level, repeat, per * n, body, _per_part, provider_ms=provider_ms[lat]
                )
                if record:
                    runs[(lat, t)].append(record)
                if t == "parley":
                    for i in range(n):
                        used[i] += per
    if rig.cluster:  # again after the load: conversations activated later (a refresh) show too
        setup["placement_after"] = rig.cluster.placement()
    return runs


def _per_part(record: dict[str, Any], outcome: PhaseOutcome) -> None:
    """CPU ms per OK turn of each part of the cluster (driver, redis, every node)."""
    parts = record["cpu"].get("parts_s")
    ok = record["turns_ok"]
    if parts and record["target"] == "parley":
        record["cpu"]["parts_ms_per_turn"] = {k: v / ok * 1e3 if ok else None for k, v in parts.items()}


def _placement_line(placement: dict[str, dict[str, int]]) -> str:
    counts = ", ".join(f"{node} {kinds.get('ConversationActor', 0)}" for node, kinds in placement.items())
    return f"conversation actor processes per node: {counts}"


# --- 7. fresh: N new conversations at once, each sending sequential turns -----------------------
SURFACES = ("letta", "openai")


async def fresh(ctx: Context) -> dict[str, Any]:
    """For each N: N workers at once, each creating a new conversation (inside the measured window)
    and sending it ``--turns-each`` sequential JSON turns, on each surface in turn: what a user
    meets on a conversation's first turns, when nothing of it is live yet. The phase's
    conversations are deleted afterwards, unmeasured."""
    a = ctx.args
    ctx.progress.add(sum(n * (a.turns_each + 1) for n in a.conversations) * len(a.surfaces) * a.repeats)
    clients = ctx.clients["parley"]
    targets: dict[str, Target] = {"letta": ctx.targets["parley"], "openai": OpenAITarget(a.model)}
    await _first_use(ctx, [targets[surface] for surface in a.surfaces], clients)
    points = []
    for n in a.conversations:
        if ctx.out_of_time():
            ctx.warn(f"time budget spent: skipped conversations={n}")
            continue
        runs: dict[str, list[dict[str, Any]]] = {surface: [] for surface in a.surfaces}
        for repeat in range(a.repeats):
            for surface in a.surfaces:  # the surfaces take turns within a repeat
                created: list[str] = []

                def body(on_turn, tgt=targets[surface], n=n, created=created):
                    return new_conversation_phase(
                        ctx,
                        tgt,
                        clients,
                        conversations=n,
                        concurrency=n,
                        turns_each=a.turns_each,
                        stream=False,
                        on_turn=on_turn,
                        created=created,
                    )

                level = {"conversations": n, "surface": surface}
                record = await ctx.measured(
                    "parley", "json", level, repeat, n * a.turns_each, body, _churn_fields
                )
                if record is not None:
                    runs[surface].append(record)
                ctx.progress.phase(f"parley: deleting {len(created)} conversation(s)")
                await ctx.delete_conversations(created)
                await ctx.settle(a.settle_between)
        for surface in a.surfaces:
            points.append(
                make_point({"conversations": n, "surface": surface}, "json", {"parley": runs[surface]})
            )
    return {"points": points}


async def _first_use(ctx: Context, targets: list[Target], clients: Clients) -> None:
    """One throwaway conversation per surface, unmeasured: a new server's very first request on a
    path costs far more than any later one (imports, connections, caches), which would otherwise
    land on the first measured phase alone."""
    ctx.progress.phase("parley: one unmeasured conversation per surface")
    created: list[str] = []
    for tgt in targets:
        outcome = await new_conversation_phase(
            ctx,
            tgt,
            clients,
            conversations=1,
            concurrency=1,
            turns_each=1,
            stream=False,
            on_turn=lambda _: None,
            created=created,
        )
        if outcome.errors():
            ctx.warn(f"the unmeasured first conversation failed: {outcome.errors()}")
    await ctx.delete_conversations(created)
    await ctx.settle(ctx.args.settle_between)


# --- 8. reactivation: the first turn after passivation against the next one --------------------
@dataclass
class ReactivationOutcome(PhaseOutcome):
    cold: list[TurnResult] = field(default_factory=list)  # the first turn after passivation
    warm: list[TurnResult] = field(default_factory=list)  # the turn right after it


async def reactivation(ctx: Context) -> dict[str, Any]:
    """M conversations are told a word each (one turn), then for every ``--concurrency`` level and
    repeat: wait until none of them is live (the server's idle window is short), then each gets
    the recall question (its reactivation: the history must come back from the store, or the
    fake cannot answer with the word) and right after an echo turn, now live. The difference of
    the two turns' latencies is what reactivation adds."""
    a = ctx.args
    n = a.conversations
    clients, tgt = ctx.clients["parley"], ctx.targets["parley"]
    baseline = (await ctx.live())["host_processes"]  # with no conversation live (spares of a warm pool)
    ctx.progress.add(n + 2 * n * len(a.concurrency) * a.repeats)
    ids = await ctx.new_conversations("parley", n)
    told = await _tell(ctx, tgt, clients, ids, max(a.concurrency))
    points = []
    for c in a.concurrency:
        runs: list[dict[str, Any]] = []
        for repeat in range(a.repeats):
            if ctx.out_of_time():
                ctx.warn(f"time budget spent: skipped concurrency={c} repeat {repeat + 1}")
                continue
            ctx.progress.phase(
                f"waiting for {len(told)} conversation(s) to passivate (idle {a.idle_seconds:g} s)"
            )
            wait = await ctx.wait_passivated(
                [cid for cid, _ in told], baseline, a.idle_seconds, a.passivation_timeout
            )
            if wait["passivated"] is False:
                ctx.warn(
                    f"reactivation concurrency={c} #{repeat + 1}: not all passivated after {wait['waited_s']:.0f} s "
                    f"({wait['of_ours']} live; {wait['host_processes']} ray::ConversationActor processes): "
                    "some first turns are not reactivations"
                )

            def body(on_turn, c=c):
                return _cold_then_warm(clients, tgt, told, c, a.max_seconds, on_turn)

            record = await ctx.measured(
                "parley", "json", {"concurrency": c}, repeat, 2 * len(told), body, _reactivation_fields
            )
            if record is not None:
                record["passivation"] = wait
                runs.append(record)
        point = make_point({"concurrency": c}, "json", {"parley": runs})
        summary = point["targets"].get("parley")
        if summary is not None:
            summary["recall"] = summed_counts([r["recall"] for r in runs])
            summary["added_p50_ms"] = _added_p50(summary)
        points.append(point)
    return {
        "points": points,
        "reactivation": {
            "conversations": n,
            "told": len(told),
            "idle_seconds": a.idle_seconds,
            "baseline_host_processes": baseline,
            "added_p50_ms": {str(p["concurrency"]): _parley_field(p, "added_p50_ms") for p in points},
        },
    }


def _parley_field(point: dict[str, Any], key: str) -> Any:
    return (point["targets"].get("parley") or {}).get(key)


async def _tell(
    ctx: Context, tgt: Target, clients: Clients, ids: list[str], parallel: int
) -> list[tuple[str, str]]:
    """One turn per conversation telling it a new word, unmeasured; the (conversation, word) pairs
    that were answered (the rest are warned about and left out)."""
    ctx.progress.phase(f"parley: telling {len(ids)} conversation(s) a word each")
    gate = asyncio.Semaphore(max(1, parallel))
    told: list[tuple[str, str]] = []
    failures: Counter[str] = Counter()

    async def one(slot: int, cid: str) -> None:
        async with gate:
            word = new_word()
            text, expected = remember_text(word)
            result = await send_turn(clients.get(slot), tgt, cid, text, expected, stream=False)
            ctx.progress.advance()
            if result.ok:
                told.append((cid, word))
            else:
                failures[result.error or "?"] += 1

    await asyncio.gather(*(one(slot, cid) for slot, cid in enumerate(ids)))
    if failures:
        ctx.warn(f"telling the words failed: {dict(failures)}; those conversations are left out")
    return told


async def _cold_then_warm(
    clients: Clients,
    target: Target,
    told: list[tuple[str, str]],
    parallel: int,
    max_seconds: float,
    on_turn: Callable[[TurnResult], None],
) -> ReactivationOutcome:
    """``parallel`` workers take the conversations in turn: the recall question to a passivated
    one (checked: the reply must carry its word), then at once an echo turn to it. A cold turn
    with no reply at all gets no warm turn (the conversation may not be live)."""
    outcome = ReactivationOutcome()
    deadline = time.monotonic() + max_seconds
    queue = iter(told)

    async def worker(slot: int) -> None:
        client = clients.get(slot)
        for cid, word in queue:
            if time.monotonic() > deadline:
                outcome.stopped_by = "time"
                return
            text, expected = recall_text(word)
            cold = await send_turn(client, target, cid, text, expected, stream=False)
            outcome.cold.append(cold)
            outcome.results.append(cold)
            on_turn(cold)
            if not (cold.ok or cold.error == "wrong_reply"):
                continue
            text, expected = turn_text(1)
            warm = await send_turn(client, target, cid, text, expected, stream=False)
            outcome.warm.append(warm)
            outcome.results.append(warm)
            on_turn(warm)

    began = time.perf_counter()
    await asyncio.gather(*(worker(slot) for slot in range(parallel)))
    outcome.wall = time.perf_counter() - began
    return outcome


def _reactivation_fields(record: dict[str, Any], outcome: PhaseOutcome) -> None:
    assert isinstance(outcome, ReactivationOutcome)
    record["cold_turn_ms"] = distribution(r.latency for r in outcome.cold if r.ok)
    record["warm_turn_ms"] = distribution(r.latency for r in outcome.warm if r.ok)
    record["added_p50_ms"] = _added_p50(record)
    record["recall"] = recall_counts(outcome.cold)


def _added_p50(record: dict[str, Any]) -> float | None:
    """p50 of the first turn after passivation minus p50 of the turn right after it."""
    cold, warm = record.get("cold_turn_ms"), record.get("warm_turn_ms")
    if not cold or not warm:
        return None
    return cold["p50"] - warm["p50"]


# --- 9. idle: the server's own CPU when nobody sends, empty and with many conversations ----------
IDLE_QUIET_S = 30.0  # at most this long for a new server to finish starting up (Serve reconciles)


async def idle(ctx: Context) -> dict[str, Any]:
    """The server tree's CPU while nobody sends, first with no conversation ever (after the server
    went quiet), then after ``--conversations`` were created with one turn each (``--concurrency``
    at once, measured as a point): each window of ``--window`` seconds starts ``--settle``
    seconds after the last request. Between the two lies what live (and passivating)
    conversations cost when idle."""
    a = ctx.args
    n = a.conversations
    ctx.progress.add(2 * n)
    ctx.progress.phase("waiting for the new server to go quiet")
    quiet = await ctx.settle(IDLE_QUIET_S)
    empty = await _idle_window(ctx, "empty", [])
    clients, tgt = ctx.clients["parley"], ctx.targets["parley"]
    created: list[str] = []

    def body(on_turn):
        return new_conversation_phase(
            ctx,
            tgt,
            clients,
            conversations=n,
            concurrency=a.concurrency,
            turns_each=1,
            stream=False,
            on_turn=on_turn,
            created=created,
        )

    level = {"conversations": n}
    record = await ctx.measured("parley", "json", level, 0, n, body, _churn_fields)
    points = [make_point(level, "json", {"parley": [record]})] if record else []
    loaded = await _idle_window(ctx, "loaded", created)
    return {
        "points": points,
        "idle": {
            "conversations": n,
            "created": len(created),
            "concurrency": a.concurrency,
            "window_s": a.window,
            "settle_s": a.settle,
            "quiet_wait_s": quiet,
            "samples": [empty, loaded],
            "added": {
                "cores": loaded["cores"] - empty["cores"],
                "pss_mib": loaded["tree_mib"]["pss_mib"] - empty["tree_mib"]["pss_mib"],
                "tree_processes": loaded["tree_processes"] - empty["tree_processes"],
            },
        },
    }


async def _idle_window(ctx: Context, label: str, ids: list[str]) -> dict[str, Any]:
    """``--settle`` seconds of nothing, then the server tree's CPU over ``--window`` seconds of
    nothing; live counts just before and just after the window (asking is a request too)."""
    a = ctx.args
    ctx.progress.phase(f"idle {label}: {a.settle:g} s alone, then {a.window:g} s measured")
    await asyncio.sleep(a.settle)
    before = await ctx.live(ids)
    with Meter(ctx.rig, "parley", a.sample_interval) as meter:
        await asyncio.sleep(a.window)
    after = await ctx.live(ids)
    cpu = meter.report(0, "parley")["cpu"]
    tree = ctx.rig.server_tree()
    memory = memory_of(tree)
    entry = {
        "label": label,
        "window_s": meter.wall,
        "cpu_s": cpu["target_s"],
        "cores": (cpu["target_s"] or 0.0) / meter.wall,
        "live_start": before,
        "live_end": after,
        "tree_processes": len(tree),
        "tree_mib": vars(memory),
        "memory_peak_mib": meter.report(0, "parley")["memory_peak_mib"],
        "machine_busy_s": cpu["machine_busy_s"],
        "other_s": cpu["other_s"],
    }
    live = "?" if after["activations"] is None else after["activations"]
    ctx.progress.note(
        f"idle {label}: {entry['cores']:.3f} cores, {live} live activation(s), "
        f"{after['host_processes']} ray::ConversationActor process(es), {len(tree)} processes, "
        f"PSS {memory.pss_mib:.0f} MiB"
    )
    return entry


SCENARIOS = {
    "overhead": overhead,
    "scale": scale,
    "churn": churn,
    "contention": contention,
    "memory": memory,
    "cluster": cluster,
    "fresh": fresh,
    "reactivation": reactivation,
    "idle": idle,
    "streaming": streaming,
}
