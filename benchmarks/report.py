"""Writing a run's results: ``results.json``, ``results.md`` and PNG plots (matplotlib, optional)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .streaming import streaming_md

Get = Callable[[dict[str, Any]], Any]


def write_json(result: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


# --- Markdown -------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _path(obj: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _errors(summary: dict[str, Any] | None) -> str:
    errors = (summary or {}).get("errors") or {}
    if not errors:
        return "0"
    return ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items()))


def _level_key(point: dict[str, Any]) -> str:
    for key in ("nodes", "concurrency", "conversations", "live_conversations"):
        if key in point:
            return key
    return "level"


def _columns(scenario: str, mode: str, targets: list[str]) -> list[tuple[str, Get]]:
    def p(target: str, *keys: str) -> Get:
        return lambda point: _path(point, "targets", target, *keys)

    if scenario == "reactivation":
        return _reactivation_columns(p)
    cols: list[tuple[str, Get]] = []
    if scenario in ("churn", "idle"):
        cols.append(("conversations/s", p("parley", "conversations_per_s")))
        cols.append(("first turn p50 / p99 ms", lambda pt: _pair(pt, "first_turn_ms")))
        cols.append(("create p50 ms", p("parley", "create_ms", "p50")))
    cols += [
        ("turns/s", p("parley", "turns_per_s")),
        ("p50 ms", p("parley", "latency_ms", "p50")),
        ("p99 ms", p("parley", "latency_ms", "p99")),
        ("max ms", p("parley", "latency_ms", "max")),
    ]
    if scenario == "fresh":
        cols += [
            ("first turn p50 / p99 ms", lambda pt: _pair(pt, "first_turn_ms")),
            ("later turns p50 / p99 ms", lambda pt: _pair(pt, "later_turn_ms")),
            ("create p50 / p99 ms", lambda pt: _pair(pt, "create_ms")),
        ]
    if scenario == "churn":
        cols.append(("recall forgot / failed / checked", lambda pt: _recall(pt)))
    if mode == "stream":
        cols.append(("TTFB p50 / p99 ms", lambda pt: _pair(pt, "ttfb_ms")))
    if scenario in ("scale", "cluster"):
        cols += [
            ("ideal turns/s", lambda pt: pt.get("ideal_turns_per_s")),
            ("x ideal", lambda pt: _ratio(_path(pt, "ratio", "vs_ideal"))),
        ]
    if scenario == "cluster":
        cols.append(("x fewest nodes", lambda pt: _ratio(_path(pt, "ratio", "vs_base_nodes"))))
    if scenario in ("scale", "cluster"):
        cols.append(("added p99 ms", p("parley", "added_latency_ms", "p99")))
    if scenario == "contention":
        cols.append(("pairs ok / violations", lambda pt: _pairs(pt)))
        cols.append(("409 p50 ms", p("parley", "conflict_ms", "p50")))
    cols.append(("errors", lambda pt: _errors(_path(pt, "targets", "parley"))))
    rate = "conversations_per_s" if scenario == "churn" else "turns_per_s"
    prefix = "conversations_" if scenario == "churn" else ""
    for base in ("direct", "proxy"):
        if base in targets:
            cols.append((f"{base} {'conv' if scenario == 'churn' else 'turns'}/s", p(base, rate)))
            cols.append((f"x {base}", lambda pt, b=base: _ratio(_path(pt, "ratio", f"{prefix}vs_{b}"))))
    if scenario == "churn":
        cols.append(("CPU ms/conversation", p("parley", "cpu", "target_ms_per_conversation")))
    cols.append(("CPU ms/turn", p("parley", "cpu", "target_ms_per_turn")))
    if scenario == "cluster":
        cols += [
            ("CPU x fewest nodes", lambda pt: _ratio(_path(pt, "ratio", "cpu_vs_base_nodes"))),
            ("conversations live per node", _live_per_node),
            ("conversation actors per node", _actors_per_node),
        ]
    cols += [
        ("peak RSS / PSS MiB", lambda pt: _mem(pt)),
        ("loadgen cores", p("parley", "cpu", "loadgen_cores")),
        ("other CPU s", p("parley", "cpu", "other_s")),
    ]
    return cols


def _reactivation_columns(p: Callable[..., Get]) -> list[tuple[str, Get]]:
    """The first turn after passivation (cold) beside the turn right after it (warm)."""
    return [
        ("first turn after passivation p50 / p99 ms", lambda pt: _pair(pt, "cold_turn_ms")),
        ("max ms", p("parley", "cold_turn_ms", "max")),
        ("next turn p50 / p99 ms", lambda pt: _pair(pt, "warm_turn_ms")),
        ("added by reactivation p50 ms", p("parley", "added_p50_ms")),
        ("recall forgot / failed / checked", lambda pt: _recall(pt)),
        ("passivation wait s", lambda pt: _passivation_wait(pt)),
        ("errors", lambda pt: _errors(_path(pt, "targets", "parley"))),
        ("CPU ms/turn", p("parley", "cpu", "target_ms_per_turn")),
        ("peak RSS / PSS MiB", lambda pt: _mem(pt)),
        ("other CPU s", p("parley", "cpu", "other_s")),
    ]


def _recall(point: dict[str, Any]) -> str:
    recall = _path(point, "targets", "parley", "recall")
    if not recall:
        return "-"
    return f"{recall.get('forgot', 0)} / {recall.get('failed', 0)} / {recall.get('checked', 0)}"


def _passivation_wait(point: dict[str, Any]) -> str:
    """Each repeat's wait for passivation, and whether it ended with none of them live."""
    waits = [run.get("passivation") or {} for run in _path(point, "runs", "parley") or []]
    marks = {True: "", False: " (not all)", None: " (unknown)"}
    return ", ".join(f"{_fmt(w.get('waited_s'))}{marks[w.get('passivated')]}" for w in waits) or "-"


def _live_per_node(point: dict[str, Any]) -> str:
    live = point.get("live_per_node") or {}
    return " / ".join(str(n) for n in live.values()) or "-"


def _actors_per_node(point: dict[str, Any]) -> str:
    placement = point.get("placement") or {}
    return " / ".join(str(kinds.get("ConversationActor", 0)) for kinds in placement.values()) or "-"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pair(point: dict[str, Any], key: str) -> str:
    dist = _path(point, "targets", "parley", key)
    if not dist:
        return "-"
    return f"{_fmt(dist.get('p50'))} / {_fmt(dist.get('p99'))}"


def _mem(point: dict[str, Any]) -> str:
    memory = _path(point, "targets", "parley", "memory_peak_mib")
    if not memory:
        return "-"
    return f"{_fmt(memory.get('rss'), 0)} / {_fmt(memory.get('pss'), 0)}"


def _pairs(point: dict[str, Any]) -> str:
    pairs = _path(point, "targets", "parley", "pairs") or {}
    return f"{pairs.get('one_ok_one_409', 0)} / {pairs.get('violations', 0)}"


def markdown(result: dict[str, Any]) -> str:
    scenario = result["scenario"]
    setup = result["setup"]
    commit = result.get("commit") or {}
    machine = result["machine"]
    lines = [
        f"# parley bench {scenario}",
        "",
        f"- command: `{result['command']}`",
        f"- commit: `{commit.get('commit', '?')}`{' (with local changes)' if commit.get('dirty') else ''}",
        f"- machine: {machine['hostname']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, "
        f"{machine['platform']}, Python {machine['python']}; load average at start "
        f"{machine['load_average']}, at end {result.get('load_average_end')}",
        f"- started {result['started_at']}, took {result['duration_s']:.0f} s",
        _server_line(result),
        f"- fake provider: latency {setup['fake']['latency_s']} s, token delay {setup['fake']['token_delay_s']} s;"
        " one turn called directly: "
        + ", ".join(f"{m} {_fmt(v)} ms" for m, v in (setup.get("provider_turn_ms") or {}).items()),
        f"- repeats: {result['config'].get('repeats')} (medians below; errors are summed)",
        "",
    ]
    targets = setup["targets"]
    points = result.get("points") or []
    for mode, latency, surface in dict.fromkeys(
        (p["mode"], p.get("latency_s"), p.get("surface")) for p in points
    ):
        mode_points = [
            p
            for p in points
            if p["mode"] == mode and p.get("latency_s") == latency and p.get("surface") == surface
        ]
        key = _level_key(mode_points[0])
        cols = _columns(scenario, mode, targets)
        kind = "SSE" if mode == "stream" else "streaming: false"
        heading = HEADINGS.get(scenario, "{mode}").format(mode=mode) + f" ({kind})"
        if latency is not None:
            heading += (
                f", provider latency {latency:g} s, {mode_points[0].get('conversations')} conversations"
            )
        if surface is not None:
            heading += f", {SURFACE_NAMES.get(surface, surface)}"
        lines.append(f"## {heading}")
        lines.append("")
        lines.append("| " + " | ".join([key.replace("_", " "), *(c for c, _ in cols)]) + " |")
        lines.append("|" + "---|" * (len(cols) + 1))
        for point in mode_points:
            cells = [_fmt(point.get(key))] + [_fmt(get(point)) for _, get in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if scenario == "contention" and result.get("pairs"):
        pairs = result["pairs"]
        lines += [
            f"Pairs: {pairs['total']}; exactly one 200 and one 409: {pairs['one_ok_one_409']}; "
            f"both 200: {pairs['both_ok']}; both 409: {pairs['both_409']}; other: {pairs['other']}; "
            f"**violations: {pairs['violations']}** (first send held {result.get('hold_s')} s by the provider).",
            "",
        ]
    if scenario == "streaming" and result.get("streaming"):
        lines += streaming_md(result["streaming"])
    if scenario == "memory" and result.get("memory"):
        lines += _memory_md(result["memory"])
    if scenario == "reactivation" and result.get("reactivation"):
        lines += _reactivation_md(result["reactivation"], result["config"])
    if scenario == "idle" and result.get("idle"):
        lines += _idle_md(result["idle"])
    if scenario == "cluster" and result.get("cluster"):
        lines += _cluster_md(result["cluster"], points)
    lines += [
        "Columns: CPU ms/turn is the whole server process tree's user+system CPU over the run divided by",
        "the OK turns; peak RSS / PSS is of that tree, sampled during the run; loadgen cores is this",
        "tool's own CPU; other CPU s is what the rest of the machine used meanwhile (machine busy minus",
        "server tree, fake provider, proxy and load generator): a large value marks a disturbed run.",
        "",
    ]
    if scenario == "cluster":
        lines += [
            "On a cluster the server tree is every Ray node's processes (GCS, raylets, agents, workers and",
            "actors), the `parley serve` driver and the redis-server of the store. x fewest nodes compares",
            "with the smallest node count measured (same latency). All nodes share this machine's CPUs:",
            "the curve shows what distribution costs, not added capacity.",
            "",
        ]
    if result.get("warnings"):
        lines += ["## Warnings", "", *(f"- {w}" for w in result["warnings"]), ""]
    return "\n".join(lines)


HEADINGS = {
    "memory": "first turns of new conversations",
    "fresh": "new conversations, creation included, then sequential turns",
    "reactivation": "the first turn after passivation, then the next one",
    "idle": "creating the conversations, one turn each",
}
SURFACE_NAMES = {
    "letta": "Letta surface (/v1/conversations)",
    "openai": "OpenAI surface (/openai/v1/responses)",
}


def _memory_md(memory: dict[str, Any]) -> list[str]:
    lines = [
        f"## Memory of the server's process tree (idle passivation after {memory['idle_seconds']:.0f} s)",
        "",
        "| point | conversations sent to | live activations | ray::ConversationActor processes "
        "| tree processes | RSS MiB | PSS MiB | USS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in memory["samples"]:
        tree = s["tree_mib"]
        lines.append(
            f"| {s['label']} | {s['live_conversations']} | {_fmt(s.get('live_activations'))} | "
            f"{s['actor_processes']} | {s['tree_processes']} | "
            f"{_fmt(tree['rss_mib'], 0)} | {_fmt(tree['pss_mib'], 0)} | {_fmt(tree['uss_mib'], 0)} |"
        )
    per = memory.get("per_conversation_mib") or {}
    if per:
        lines += [
            "",
            f"Per live conversation (full - empty, / {memory['conversations']}): "
            f"RSS {_fmt(per.get('rss_mib'))} MiB, PSS {_fmt(per.get('pss_mib'))} MiB, "
            f"USS {_fmt(per.get('uss_mib'))} MiB.",
        ]
        actor = per.get("actor_process")
        if actor:
            lines.append(
                f"One ray::ConversationActor process (a conversation's own actor, or a host of many): "
                f"RSS {_fmt(actor['rss_mib'])}, PSS {_fmt(actor['pss_mib'])}, "
                f"USS {_fmt(actor['uss_mib'])} MiB."
            )
    back = memory.get("returned_after_passivation_mib")
    if back:
        lines.append(
            f"Returned by passivation (after {memory['passivation_wait_s']:.0f} s): "
            f"PSS {_fmt(back['pss_mib'])} MiB, RSS {_fmt(back['rss_mib'])} MiB."
        )
    lines.append("")
    return lines


def _reactivation_md(reactivation: dict[str, Any], config: dict[str, Any]) -> list[str]:
    added = ", ".join(
        f"{_fmt(ms)} ms at concurrency {c}" for c, ms in (reactivation.get("added_p50_ms") or {}).items()
    )
    return [
        f"{reactivation['told']} of {reactivation['conversations']} conversations were told a word; "
        f"idle window {reactivation['idle_seconds']:g} s. **p50 added by reactivation** (first turn "
        f"after passivation minus the turn right after it): {added or '-'}. The first turn asks for "
        "the word: forgot counts replies without it, failed turns with no reply.",
        "",
    ]


def _idle_md(idle: dict[str, Any]) -> list[str]:
    lines = [
        f"## The server left alone: {idle['window_s']:g} s measured after {idle['settle_s']:g} s of nothing",
        "",
        "| server | idle cores | CPU s | live activations | ray::ConversationActor processes "
        "| tree processes | PSS MiB | RSS MiB | other CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"empty": "never had a conversation", "loaded": f"after {idle['created']} conversations"}
    for s in idle["samples"]:
        live, tree = s["live_end"], s["tree_mib"]
        lines.append(
            f"| {names.get(s['label'], s['label'])} | {s['cores']:.3f} | {_fmt(s['cpu_s'], 2)} | "
            f"{_fmt(live.get('activations'))} | {_fmt(live.get('host_processes'))} | {s['tree_processes']} | "
            f"{_fmt(tree['pss_mib'], 0)} | {_fmt(tree['rss_mib'], 0)} | {_fmt(s['other_s'])} |"
        )
    added = idle.get("added") or {}
    lines += [
        "",
        f"Added by the conversations: {added.get('cores', 0):.3f} cores, PSS {_fmt(added.get('pss_mib'))} MiB, "
        f"{added.get('tree_processes')} processes. Live activations are counted just after the window "
        "(- : the server has no activations route). A new server first got "
        f"{_fmt(idle.get('quiet_wait_s'))} s to go quiet.",
        "",
    ]
    return lines


def _server_line(result: dict[str, Any]) -> str:
    setup = result["setup"]
    if result["scenario"] == "cluster":
        config = result["config"]
        return (
            f"- server: per node count, a Ray cluster started by the tool (`ray start`, "
            f"{config.get('cpus_per_node')} CPU(s) and a {config.get('object_store_mb')} MB object store "
            f"per node, all on {config.get('node_ip')}), a redis-server (the store) and `parley serve` "
            "joining them (`PARLEY_RAY_ADDRESS`)"
        )
    line = (
        f"- server: {setup['server_url']} ({'started by the tool' if setup['managed'] else 'given by --url'})"
    )
    if setup.get("server_start_s"):
        line += f", up after {setup['server_start_s']:.1f} s"
    return line


def _cluster_md(cluster: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    lines = ["## Where the server tree's CPU went (ms per OK turn)", ""]
    parts = list(
        dict.fromkeys(
            k for p in points for k in (_path(p, "targets", "parley", "cpu", "parts_ms_per_turn") or {})
        )
    )
    if parts:
        lines += [
            "| nodes | latency s | " + " | ".join(parts) + " | total |",
            "|" + "---|" * (len(parts) + 3),
        ]
        for p in points:
            got = _path(p, "targets", "parley", "cpu", "parts_ms_per_turn") or {}
            cells = [_fmt(got.get(k)) for k in parts]
            total = _fmt(_path(p, "targets", "parley", "cpu", "target_ms_per_turn"))
            lines.append(f"| {p['nodes']} | {p['latency_s']:g} | " + " | ".join(cells) + f" | {total} |")
        lines.append("")
    lines += [
        "## Setup per node count",
        "",
        "| nodes | cluster up s | server up s | settle s | stop s: server, cluster, redis "
        "| worker processes per node, after the warm-up |",
        "|---|---|---|---|---|---|",
    ]
    for setup in cluster.get("setups") or []:
        if setup.get("error") and "cluster_start_s" not in setup:
            lines.append(f"| {setup['nodes']} | failed: {setup['error']} | | | | |")
            continue
        placement = "; ".join(
            f"{node}: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
            for node, kinds in (setup.get("placement") or {}).items()
        )
        if setup.get("error"):
            placement += f" (failed: {setup['error']})"
        lines.append(
            f"| {setup['nodes']} | {_fmt(setup.get('cluster_start_s'))} | {_fmt(setup.get('server_start_s'))} | "
            f"{_fmt(setup.get('settle_s'))} | {_stops(setup.get('stop_s'))} | {placement or '-'} |"
        )
    lines += [
        "",
        "Worker processes are counted by process title (`ray::<actor class>`); `ConversationActor`",
        "are the conversation hosts (on a server from before hosts: one per live conversation, plus",
        "the warm pool's unclaimed spares), `IDLE` are pre-started workers without an actor.",
        "",
    ]
    return lines


def _stops(took: dict[str, float] | float | None) -> str:
    if not isinstance(took, dict):
        return _fmt(took)
    return " / ".join(_fmt(took.get(k)) for k in ("server", "cluster", "redis"))


def write_markdown(result: dict[str, Any], out: Path) -> Path:
    path = out / "results.md"
    path.write_text(markdown(result))
    return path


# --- plots ----------------------------------------------------------------------------------------
STYLE = {"parley": "tab:blue", "proxy": "tab:orange", "direct": "tab:green"}


def write_plots(result: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    """PNG files written, and why none were (matplotlib missing), if so."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'parley[bench]'): no plots"
    written: list[Path] = []
    scenario = result["scenario"]
    points = result.get("points") or []
    title = f"parley bench {scenario}"
    if points and scenario in ("overhead", "scale", "churn"):
        key = _level_key(points[0])
        levels = sorted({p[key] for p in points})
        modes = list(dict.fromkeys(p["mode"] for p in points))
        rate = "conversations_per_s" if scenario == "churn" else "turns_per_s"
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode, line in (("json", "-"), ("stream", "--")):
            mode_points = [p for p in points if p["mode"] == mode]
            if not mode_points:
                continue
            xs = [p[key] for p in mode_points]
            for target, color in STYLE.items():
                ys = [_path(p, "targets", target, rate) for p in mode_points]
                if any(y is not None for y in ys):
                    ax.plot(xs, ys, line, marker="o", color=color, label=f"{target} {mode}")
            if scenario == "scale":
                ax.plot(
                    xs, [p.get("ideal_turns_per_s") for p in mode_points], ":", color="grey", label="ideal"
                )
        _axes(ax, key, rate.replace("_per_s", "/s"), levels)
        ax.set_title(f"{title}: throughput")
        written.append(_save(fig, plt, out / "throughput.png"))

        fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            mode_points = [p for p in points if p["mode"] == mode]
            xs = [p[key] for p in mode_points]
            for target, color in STYLE.items():
                for q, line in (("p50", "-"), ("p99", "--")):
                    ys = [_path(p, "targets", target, "latency_ms", q) for p in mode_points]
                    if any(y is not None for y in ys):
                        ax.plot(xs, ys, line, marker="o", color=color, label=f"{target} {q}")
            _axes(ax, key, "turn latency (ms)", levels, ys_log=True)
            ax.set_title(f"{mode}: latency p50 (solid), p99 (dashed)", fontsize=10)
        fig.suptitle(f"{title}: latency percentiles")
        written.append(_save(fig, plt, out / "latency.png"))
    if points and scenario == "cluster":
        written += _cluster_plots(plt, points, out, title)
    memory = result.get("memory")
    if memory:
        samples = memory["samples"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        live = [s for s in samples if s["label"] != "passivated"]
        for kind, color in (("rss_mib", "tab:red"), ("pss_mib", "tab:blue"), ("uss_mib", "tab:green")):
            ax.plot(
                [s["live_conversations"] for s in live],
                [s["tree_mib"][kind] for s in live],
                "-o",
                color=color,
                label=kind.split("_")[0].upper(),
            )
            for s in samples:
                if s["label"] == "passivated":
                    ax.plot([0], [s["tree_mib"][kind]], "x", color=color, markersize=10)
        ax.plot([], [], "x", color="black", label="after passivation")
        _axes(
            ax,
            "live conversations",
            "server process tree (MiB)",
            sorted({s["live_conversations"] for s in live}),
        )
        ax.set_title(f"{title}: memory vs live conversations")
        written.append(_save(fig, plt, out / "memory.png"))
    return written, None


def _cluster_plots(plt: Any, points: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """throughput.png (turns/s vs nodes, beside the ideal and the limits; one line style per
    provider latency) and cpu.png (CPU ms per turn vs nodes, stacked by part of the cluster)."""
    written = []
    nodes = sorted({p["nodes"] for p in points})
    latencies = list(dict.fromkeys(p["latency_s"] for p in points))
    fig, axes = plt.subplots(1, len(latencies), figsize=(7 * len(latencies), 4.5), squeeze=False)
    for ax, latency in zip(axes[0], latencies, strict=True):
        series = [p for p in points if p["latency_s"] == latency]
        xs = [p["nodes"] for p in series]
        drawn: list[float] = []
        for target, color in STYLE.items():
            ys = [_path(p, "targets", target, "turns_per_s") for p in series]
            if any(y is not None for y in ys):
                ax.plot(xs, ys, "-", marker="o", color=color, label=target)
                drawn += [y for y in ys if y]
        ideal = [p.get("ideal_turns_per_s") for p in series]
        if any(y is not None for y in ideal):
            ax.plot(xs, ideal, ":", color="grey", label="ideal")
            drawn += [y for y in ideal if y]
        # The limits can be 10x Parley's: a log axis keeps Parley's curve readable then.
        wide = bool(drawn) and max(drawn) / min(drawn) > 20
        _axes(ax, "Ray nodes (all on this machine)", "turns/s", nodes, ys_log=wide)
        if not wide:
            ax.set_ylim(bottom=0)
        conversations = series[0].get("conversations")
        ax.set_title(f"provider latency {latency:g} s, {conversations} conversations", fontsize=10)
    fig.suptitle(f"{title}: throughput vs nodes")
    written.append(_save(fig, plt, out / "throughput.png"))

    parts = list(
        dict.fromkeys(
            k for p in points for k in (_path(p, "targets", "parley", "cpu", "parts_ms_per_turn") or {})
        )
    )
    if parts:
        fig, axes = plt.subplots(1, len(latencies), figsize=(6 * len(latencies), 4.5), squeeze=False)
        for ax, latency in zip(axes[0], latencies, strict=True):
            series = [p for p in points if p["latency_s"] == latency]
            xs = [str(p["nodes"]) for p in series]
            bottom = [0.0] * len(series)
            for part in parts:
                ys = [
                    (_path(p, "targets", "parley", "cpu", "parts_ms_per_turn") or {}).get(part) or 0.0
                    for p in series
                ]
                ax.bar(xs, ys, bottom=bottom, label=part)
                bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
            ax.set_ylim(0, max(bottom, default=0.0) * 1.35 or 1.0)  # room for the legend
            ax.set_xlabel("Ray nodes")
            ax.set_ylabel("server tree CPU ms per turn")
            ax.set_title(f"provider latency {latency:g} s", fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=7, ncol=3, loc="upper left")
        fig.suptitle(f"{title}: where the CPU per turn goes")
        written.append(_save(fig, plt, out / "cpu.png"))
    return written


def _axes(ax: Any, xlabel: str, ylabel: str, levels: list[Any], ys_log: bool = False) -> None:
    ax.set_xlabel(xlabel.replace("_", " "))
    ax.set_ylabel(ylabel)
    if len(levels) > 2 and levels[0] > 0 and levels[-1] / levels[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(x) for x in levels])
    ax.minorticks_off()
    if ys_log:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
