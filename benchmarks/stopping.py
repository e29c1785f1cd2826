"""``python -m benchmarks.stopping``: how long each way of stopping ``parley serve`` takes, and
whether anything of it is left.

For each way (SIGINT or SIGTERM to the process or its group, SIGKILL to either, and a
supervisor's SIGTERM followed by SIGKILL 3 s later) it starts a server on a fresh data directory
against the fake provider, idle, and prints a Markdown table: the server's processes, the main
process's exit code, seconds to its exit, seconds until no process of the server is left (at most
30), how many were left then, and the ``parley serve`` process's own RSS.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil

from parley.processes import FakeLLMProcess, ServerProcess, start_fake_llm, start_server

# SIGNAL-target[@delay], steps joined by "+"
WAYS = (
    "INT-group",
    "INT-pid",
    "TERM-group",
    "TERM-pid",
    "KILL-pid",
    "KILL-group",
    "TERM-group+KILL-group@3s",
)
LEFT_WAIT_SECONDS = 30.0


def _send(server: ServerProcess, way: str) -> None:
    for step in way.split("+"):
        how, _, delay = step.partition("@")
        if delay:
            time.sleep(float(delay.rstrip("s")))
        server.send_signal(how)


def measure(way: str, data_dir: Path, fake: FakeLLMProcess) -> tuple[object, ...]:
    server = start_server(fake, data_dir)
    rss_mib = psutil.Process(server.process.pid).memory_info().rss / 2**20
    members = server.members()
    began = time.monotonic()
    _send(server, way)
    code = server.process.wait(60)
    exited = time.monotonic() - began
    left = server.left_after(members, LEFT_WAIT_SECONDS - exited)  # killed: nothing stays behind
    gone = time.monotonic() - began
    return (way, len(members), code, f"{exited:.1f}", f"{gone:.1f}", len(left), f"{rss_mib:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stopping", description=__doc__)
    parser.add_argument(
        "ways", nargs="*", default=list(WAYS), help="SIGNAL-pid|group[@delay], steps joined by +"
    )
    args = parser.parse_args()
    ways = args.ways
    fake = start_fake_llm()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="parley-stopping-") as tmp:
            for index, way in enumerate(ways):
                rows.append(measure(way, Path(tmp) / str(index), fake))
    finally:
        fake.stop()
    print(
        "| how | processes | exit code | main exited after s | nothing left after s | left | `parley serve` RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
