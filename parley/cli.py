"""``parley``: the command line.

    parley serve [--host H] [--port P] [--data-dir D] [--store URL] [--address ADDR]
    parley fake-llm [--port P] [--latency S] [--token-delay S] ...

Every ``serve`` option also reads ``PARLEY_<NAME>`` from the environment; a flag wins over it.
"""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from runtime.settings import ProviderCredentials, Settings
    from serve_app.deploy import serve_forever

    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        store_url=args.store,
        ray_address=args.address,
        conversation_idle_seconds=args.idle_seconds,
        provider_actors=args.provider_actors,
    )
    return serve_forever(settings, ProviderCredentials.from_env())


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
        "--idle-seconds", type=float, help="passivate a conversation actor after this idle time (default 300)"
    )
    serve.add_argument("--provider-actors", type=int, help="number of provider actors (default 1)")
    serve.set_defaults(run=_serve)

    commands.add_parser(
        "fake-llm", help="run the deterministic fake LLM provider (OpenAI + Anthropic wire)", add_help=False
    )

    if argv and argv[0] == "fake-llm":
        from parley.fake_llm.server import main as fake_main

        return fake_main(argv[1:]) or 0
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
