"""``parley bench <scenario>`` (also ``python -m benchmarks <scenario>``): size a deployment,
compare configurations.

Each scenario starts the fake provider at the given latency and token pacing and a
``parley serve`` pointed at it (or uses ``--url``), drives it over loopback, stops everything it
started, and writes ``results.json``, ``results.md`` and PNG plots to ``--out``. Every run is
bounded in requests (the scenario's counts) and in time (``--max-seconds`` per phase,
``--budget`` overall, ``--timeout`` per request). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .load import run_async
from .progress import Progress
from .report import write_json, write_markdown, write_plots
from .rig import Rig, git_commit, machine_info
from .scenarios import IDLE_QUIET_S, SCENARIOS, SURFACES, TARGETS, Context

SCHEMA = "parley-bench/1"
# No baseline can answer 409, passivate, reactivate, or speak the OpenAI surface; fresh and idle
# measure Parley alone.
PARLEY_ONLY = ("contention", "memory", "fresh", "reactivation", "idle")


def _ints(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("every value must be at least 1")
    return values


def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        wrong = [v for v in values if v not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}: {text!r}")
        return list(dict.fromkeys(values))

    return parse


def _surfaces(text: str) -> list[str]:
    if text == "both":
        return list(SURFACES)
    if text not in SURFACES:
        raise argparse.ArgumentTypeError(f"choose from {'|'.join((*SURFACES, 'both'))}: {text!r}")
    return [text]


def _surface_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--surface", dest="surfaces", type=_surfaces, default=list(SURFACES), help=help)


def _common(
    p: argparse.ArgumentParser,
    *,
    latency: float,
    token_delay: float,
    reply_words: int,
    settle: float = 30.0,
    settle_help: str = "at most this long for a started server to go quiet",
) -> None:
    g = p.add_argument_group("where and how")
    g.add_argument(
        "--url", help="an already running Parley server (its CPU and memory are then not measured)"
    )
    g.add_argument("--out", type=Path, help="output directory (default benchmarks/results/<timestamp>/)")
    g.add_argument("--repeats", type=int, default=3, help="repeats of every phase; medians are reported (3)")
    g.add_argument(
        "--latency",
        type=float,
        default=latency,
        help=f"fake provider: seconds before the first byte ({latency})",
    )
    g.add_argument(
        "--token-delay",
        type=float,
        default=token_delay,
        help=f"fake provider: seconds between streamed tokens ({token_delay})",
    )
    g.add_argument(
        "--replay",
        metavar="DIR",
        help="fake provider: answer with the recorded timing (first byte, gaps between chunks) of the\n"
        "calls in this recordings directory (made with parley serve --inference-mode record),\n"
        "in turn, instead of --latency and --token-delay",
    )
    g.add_argument(
        "--reply-words",
        type=int,
        default=reply_words,
        help=f"extra words in every echoed reply, so it streams that many more tokens ({reply_words})",
    )
    g.add_argument(
        "--targets",
        type=_choices(TARGETS),
        default=list(TARGETS),
        help="parley and the limits beside it: proxy (bare FastAPI proxy), direct (the fake itself)",
    )
    g.add_argument("--no-baselines", action="store_true", help="parley only (same as --targets parley)")
    g.add_argument("--model", default="openai/gpt-4o-mini", help="the benchmark agent's model handle")
    g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the server it starts")
    g.add_argument("--data-dir", help="the started server's data directory (default: a temporary one)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    g.add_argument("--max-seconds", type=float, default=120.0, help="no new turn of a phase after this (120)")
    g.add_argument("--budget", type=float, default=3600.0, help="no new phase after this many seconds (3600)")
    g.add_argument("--settle", type=float, default=settle, help=f"{settle_help} ({settle:g})")
    g.add_argument(
        "--settle-between", type=float, default=5.0, help="at most this long for quiet between phases (5)"
    )
    g.add_argument("--sample-interval", type=float, default=1.0, help="memory/CPU sampling period (1 s)")
    g.add_argument(
        "--history",
        type=int,
        default=100,
        help="replace a conversation before a phase would take it past this many turns (100):\n"
        "the whole history is the model's context, so the cost of a turn grows with it",
    )
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--no-progress", action="store_true")


def build_parser(prog: str = "parley bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    p = sub.add_parser("overhead", help="zero-latency provider: Parley's own cost per turn, JSON and SSE")
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument(
        "--concurrency", type=_ints, default=[1, 8, 32], help="levels; N distinct conversations (1,8,32)"
    )
    p.add_argument(
        "--turns", type=int, default=300, help="turns per phase, split over the conversations (300)"
    )
    p.add_argument("--modes", type=_choices(("json", "stream")), default=["json", "stream"])

    p = sub.add_parser(
        "scale", help="slow provider: N conversations sending sequential turns, against N/latency"
    )
    _common(p, latency=1.0, token_delay=0.01, reply_words=30)
    p.add_argument("--conversations", type=_ints, default=[8, 32, 64, 128], help="levels N (8,32,64,128)")
    p.add_argument(
        "--turns-per-conversation", type=int, default=5, help="sequential turns each, per phase (5)"
    )
    p.add_argument("--modes", type=_choices(("json", "stream")), default=["json", "stream"])

    p = sub.add_parser("churn", help="new conversations with one or two turns each: activation cost")
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument("--conversations", type=int, default=40, help="new conversations per phase (40)")
    p.add_argument("--turns-each", type=int, choices=(1, 2), default=1, help="turns per new conversation (1)")
    p.add_argument("--concurrency", type=_ints, default=[4], help="conversations started at once (4)")
    p.add_argument("--mode", choices=("json", "stream"), default="json")
    p.add_argument(
        "--recall-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the first turn tells each conversation a word; after the phase (unmeasured, before the\n"
        "conversations are deleted) every Parley conversation is asked for it back (on)",
    )

    p = sub.add_parser("contention", help="pairs of overlapping sends to one conversation: one 200, one 409")
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument("--pairs", type=int, default=50, help="pairs per phase (50)")
    p.add_argument(
        "--concurrency", type=int, default=4, help="pairs in flight, each on its own conversation (4)"
    )
    p.add_argument(
        "--hold", type=float, default=0.5, help="provider latency of the sends, so they overlap (0.5)"
    )
    p.add_argument("--modes", type=_choices(("json", "stream")), default=["json", "stream"])

    p = sub.add_parser(
        "memory", help="server tree memory at 0, N/2, N live conversations and after passivation"
    )
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument("--conversations", type=int, default=32, help="N live conversations (32)")
    p.add_argument("--concurrency", type=int, default=4, help="activations at once (4)")
    p.add_argument(
        "--idle-seconds",
        type=float,
        help="the server's PARLEY_CONVERSATION_IDLE_SECONDS (default 30 + N: long enough to activate all)",
    )
    p.add_argument("--passivation-timeout", type=float, default=60.0, help="extra wait for passivation (60)")
    p.add_argument("--mode", choices=("json", "stream"), default="json")

    p = sub.add_parser(
        "fresh", help="N new conversations at once, each sending sequential turns: creation included"
    )
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument("--conversations", type=_ints, default=[1, 8, 32], help="levels N (1,8,32)")
    p.add_argument("--turns-each", type=int, default=10, help="sequential turns per new conversation (10)")
    _surface_option(p, "letta (/v1/conversations), openai (/openai/v1/responses) or both (both)")
    p.set_defaults(mode="json")

    p = sub.add_parser(
        "reactivation", help="the first turn after passivation against the next one; memory kept"
    )
    _common(p, latency=0.0, token_delay=0.0, reply_words=0)
    p.add_argument("--conversations", type=int, default=32, help="M conversations (32)")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=3.0,
        help="the server's PARLEY_CONVERSATION_IDLE_SECONDS: how soon they passivate (3)",
    )
    p.add_argument(
        "--concurrency", type=_ints, default=[1, 8], help="levels; 1 is one conversation at a time (1,8)"
    )
    p.add_argument("--passivation-timeout", type=float, default=60.0, help="extra wait for passivation (60)")
    p.set_defaults(mode="json")

    p = sub.add_parser(
        "streaming", help="N warm conversations stream a reply at once: time to first text, gaps, CPU per hop"
    )
    _common(p, latency=0.0, token_delay=0.025, reply_words=100, settle=30.0)
    p.add_argument("--streams", type=_ints, default=[32], help="levels; N concurrent streams (32)")
    _surface_option(p, "letta, openai or both (both)")
    p.set_defaults(mode="stream", modes=[])  # no probe of the fake: its pace is --token-delay

    p = sub.add_parser("idle", help="the server's CPU with nobody sending: never used, then N conversations")
    _common(
        p,
        latency=0.0,
        token_delay=0.0,
        reply_words=0,
        settle=5.0,
        settle_help="seconds the server is left alone before each measured window (a new server first\n"
        f"gets up to {IDLE_QUIET_S:g} s to go quiet)",
    )
    p.add_argument("--conversations", type=int, default=500, help="conversations, one turn each (500)")
    p.add_argument("--concurrency", type=int, default=16, help="conversations created at once (16)")
    p.add_argument("--window", type=float, default=20.0, help="seconds of idle CPU measured (20)")
    p.set_defaults(mode="json")

    p = sub.add_parser(
        "cluster",
        help="the scale load on a Ray cluster of 1, 2, 3 ... nodes, all on this machine (Redis store)",
    )
    _common(p, latency=0.5, token_delay=0.01, reply_words=30)
    p.add_argument("--nodes", type=_ints, default=[1, 2, 3], help="node counts, head included (1,2,3)")
    p.add_argument("--conversations", type=int, default=32, help="N concurrent conversations (32)")
    p.add_argument(
        "--turns-per-conversation", type=int, default=10, help="sequential turns each, per phase (10)"
    )
    p.add_argument(
        "--zero-latency",
        action="store_true",
        help="also measure at provider latency 0 (every turn carries [[latency=0]])",
    )
    p.add_argument("--mode", choices=("json", "stream"), default="json")
    p.add_argument("--cpus-per-node", type=int, default=1, help="each Ray node's --num-cpus (1)")
    p.add_argument("--object-store-mb", type=int, default=100, help="each node's object store (100 MB)")
    p.add_argument(
        "--node-ip", default="127.0.0.2", help="every node's --node-ip-address (127.0.0.2; not 127.0.0.1)"
    )
    p.add_argument(
        "--node-start-timeout",
        type=float,
        default=180.0,
        help="at most this long for a cluster's nodes to come up (180 s)",
    )
    return parser


def _normalise(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.no_baselines:
        args.targets = ["parley"]
    if "parley" not in args.targets:
        args.targets = ["parley", *args.targets]
    if args.scenario in PARLEY_ONLY:
        args.targets = ["parley"]
    if not hasattr(args, "modes"):
        args.modes = [args.mode]
    if args.scenario == "cluster" and (args.url or args.data_dir):
        parser.error("cluster starts a cluster and a server per node count: no --url or --data-dir")
    if args.scenario in ("memory", "idle") and args.url:
        parser.error(
            f"{args.scenario} measures the server's process tree: it needs a server it starts (no --url)"
        )
    if args.scenario == "memory":
        if args.idle_seconds is None:
            args.idle_seconds = 30.0 + args.conversations
        args.repeats = 1
    if args.scenario == "idle":
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")


def _env(items: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            parser.error(f"--env wants KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        env[key] = value
    return env


def main(argv: list[str] | None = None, prog: str = "parley bench") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _normalise(args, parser)
    env = _env(args.env, parser)
    if args.scenario in ("memory", "reactivation"):
        env.setdefault("PARLEY_CONVERSATION_IDLE_SECONDS", str(args.idle_seconds))
    started = dt.datetime.now().astimezone()
    out: Path = args.out or Path(__file__).resolve().parent / "results" / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    progress = Progress(0, enabled=not args.no_progress)
    log = progress.note
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "scenario": args.scenario,
        "command": f"{prog} {shlex.join(argv)}",
        "started_at": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "config": {k: v for k, v in vars(args).items() if k not in ("env",)} | {"env": env},
    }
    status = 0
    rig = Rig(
        url=args.url,
        latency=args.latency,
        token_delay=args.token_delay,
        proxy="proxy" in args.targets,
        env=env,
        data_dir=args.data_dir,
        log=log,
        server=args.scenario != "cluster",  # it starts one per node count
        replay=args.replay,
    )
    try:
        with rig:
            settled = rig.settle(args.settle)
            ctx = Context(rig, args, progress, deadline=began + args.budget)
            result["setup"] = {
                "server_url": rig.url if rig.has_server else None,
                "managed": rig.managed,
                "server_start_s": rig.server_start_s,
                "settle_s": settled,
                "server_env": env,
                "fake": {
                    "url": rig.fake.url if rig.fake else None,
                    "latency_s": args.latency,
                    "token_delay_s": args.token_delay,
                },
                "proxy_url": rig.proxy.url if rig.proxy else None,
                "targets": args.targets,
                "modes": args.modes,
            }

            async def scenario() -> dict[str, Any]:
                await ctx.open(args.targets)
                try:
                    await ctx.probe_provider()
                    return await SCENARIOS[args.scenario](ctx)
                finally:
                    await ctx.close()

            result.update(run_async(scenario()))
            result["setup"]["provider_turn_ms"] = ctx.provider_turn_ms
            result["warnings"] = ctx.warnings
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        result.setdefault("warnings", []).append("interrupted")
        status = 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        result.setdefault("warnings", []).append(f"failed: {type(exc).__name__}: {exc}")
        result["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        progress.close()
    result["duration_s"] = time.monotonic() - began
    result["load_average_end"] = machine_info()["load_average"]
    result.setdefault("setup", {})
    result.setdefault("points", [])
    result.setdefault("warnings", [])
    written = [write_json(result, out)]
    if "error" not in result:
        written.append(write_markdown(result, out))
        if not args.no_plots:
            plots, why_not = write_plots(result, out)
            written += plots
            if why_not:
                print(why_not, file=sys.stderr)
    for path in written:
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks"))
