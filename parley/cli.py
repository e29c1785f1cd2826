"""``parley``: the command line.

    parley serve [--host H] [--port P] [--data-dir D] [--store URL] [--address ADDR]
    parley recordings {list,show HASH} [--recordings DIR]
    parley fake-llm [--port P] [--latency S] [--token-delay S] ...
    parley bench {overhead,scale,churn,contention,memory,cluster} [...]

Every ``serve`` option also reads ``PARLEY_<NAME>`` from the environment; a flag wins over it.
"""

from __future__ import annotations

import argparse
import sys

from runtime.providers.recording.modes import INFERENCE_MODES, REPLAY_TIMINGS


def _serve(args: argparse.Namespace) -> int:
    import os

    from parley.supervisor import READY_FD_VARIABLE
    from runtime.settings import ProviderCredentials, Settings

    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        store_url=args.store,
        ray_address=args.address,
        conversation_idle_seconds=args.idle_seconds,
        provider_actors=args.provider_actors,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        api_key=args.api_key,
        drain_seconds=args.drain_seconds,
        inference_mode=args.inference_mode,
        recordings_dir=args.recordings,
        replay_timing=args.replay_timing,
    )
    ready_fd = os.environ.pop(READY_FD_VARIABLE, None)
    if ready_fd is None:  # the command as typed: supervise a driver running this same command
        from parley.supervisor import supervise

        return supervise(settings, args.argv)
    from parley.server import drive

    return drive(settings, ProviderCredentials.from_env(), int(ready_fd))


def _recordings(args: argparse.Namespace) -> int:
    from parley.recordings import main as recordings_main

    return recordings_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="parley", description="Parley: stateful LLM conversations on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server (Letta /v1 and OpenAI /openai/v1)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; PARLEY_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8283; PARLEY_PORT)")
    serve.add_argument("--data-dir", help="where the SQLite store lives (default ~/.parley; PARLEY_DATA_DIR)")
    serve.add_argument("--store", help="store URL, e.g. sqlite:///path/parley.db (PARLEY_STORE_URL)")
    serve.add_argument("--address", help="join an existing Ray cluster, e.g. 'auto' (PARLEY_RAY_ADDRESS)")
    serve.add_argument(
        "--idle-seconds", type=float, help="passivate a conversation after this idle time (default 60)"
    )
    serve.add_argument("--provider-actors", type=int, help="number of provider actors (default 1)")
    serve.add_argument(
        "--api-key", help="require 'Authorization: Bearer <key>' on every route but health (PARLEY_API_KEY)"
    )
    serve.add_argument(
        "--min-replicas", type=int, help="HTTP ingress replicas, at least (default 1; PARLEY_MIN_REPLICAS)"
    )
    serve.add_argument(
        "--max-replicas",
        type=int,
        help="at most; above --min-replicas, Serve autoscales between them (default 1; PARLEY_MAX_REPLICAS)",
    )
    serve.add_argument(
        "--target-ongoing-requests",
        type=float,
        help="autoscaling target of open requests per replica (default 200; PARLEY_TARGET_ONGOING_REQUESTS)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        help="on SIGTERM/SIGINT, let running turns end for this long, then cancel them "
        "(default 20; PARLEY_DRAIN_SECONDS); a second signal stops at once",
    )
    serve.add_argument(
        "--inference-mode",
        choices=INFERENCE_MODES,
        help="live calls the provider; record keeps every answer; replay answers only from recordings;"
        " record-if-missing records what replay lacks (default live; PARLEY_INFERENCE_MODE)",
    )
    serve.add_argument(
        "--recordings",
        metavar="DIR",
        help="the recordings directory (default <data-dir>/recordings; PARLEY_RECORDINGS_DIR)",
    )
    serve.add_argument(
        "--replay-timing",
        choices=REPLAY_TIMINGS,
        help="instant, or recorded: replay with the recorded delays (default instant; PARLEY_REPLAY_TIMING)",
    )
    serve.set_defaults(run=_serve)

    recordings = commands.add_parser("recordings", help="list or show recorded provider calls")
    actions = recordings.add_subparsers(dest="action", required=True)
    for action in (
        actions.add_parser("list", help="every recording, oldest first"),
        actions.add_parser("show", help="one recording's JSON file"),
    ):
        action.add_argument(
            "--recordings",
            metavar="DIR",
            help="the recordings directory (default PARLEY_RECORDINGS_DIR, else ~/.parley/recordings)",
        )
    actions.choices["show"].add_argument("hash", help="the request hash, or enough of its start")
    recordings.set_defaults(run=_recordings)

    commands.add_parser(
        "fake-llm", help="run the deterministic fake LLM provider (OpenAI + Anthropic wire)", add_help=False
    )

    commands.add_parser(
        "bench",
        help="benchmark a server: overhead, scale, churn, contention, memory, cluster",
        add_help=False,
    )

    if argv and argv[0] == "bench":
        from benchmarks.cli import main as bench_main

        return bench_main(argv[1:], prog="parley bench")
    if argv and argv[0] == "fake-llm":
        from parley.fake_llm.server import main as fake_main

        return fake_main(argv[1:]) or 0
    args = parser.parse_args(argv)
    args.argv = argv
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
