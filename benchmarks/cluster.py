"""A private multi-node Ray cluster on this machine, for ``parley bench cluster``.

Every node is one ``ray start --block`` child process in a session of its own (a head, then
workers joining it), all on ``--node-ip-address`` (127.0.0.2: Ray rewrites 127.0.0.1 to the
machine's address), each with its own ``--temp-dir`` and every port it would otherwise take from
a fixed default (GCS 6379, Ray client 10001, dashboard 8265, agent 52365) chosen free. Nothing of
another Ray on the machine is touched: there is no ``ray stop`` here (it stops every Ray node of the
user); a node is stopped by signalling its own ``ray start`` process (which shuts its node down),
then anything left in its session is killed.

A node's processes are its session's: ``ray start``, GCS and the Ray client server and monitor on
the head, and on every node the raylet, its agents, log monitor and workers (actors). Workers
stay in their raylet's session, so the session also finds a process whose parent died first.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from parley.processes import Activations, free_port

STARTED = "Ray runtime started."
NODE_AGENTS = ("DashboardAgent", "RuntimeEnvAgent")  # on every node, not actors of the app
# Asks the head's GCS how many nodes are alive, without joining the cluster as a driver.
COUNT_ALIVE_NODES = """
import sys
import ray._private.state as state
from ray._raylet import GcsClientOptions
options = GcsClientOptions.create(sys.argv[1], None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False)
table = state.GlobalState()
table._initialize_global_state(options)
print(sum(1 for node in table.node_table() if node.get("Alive")))
"""


def ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed")
    return found


def session_members(sids: set[int], live: bool = False) -> dict[int, list[psutil.Process]]:
    """The processes of the sessions ``sids``, by session, in one pass over the machine (a
    ``getsid`` call per process; only members are read from /proc). ``live``: without zombies."""
    found: dict[int, list[psutil.Process]] = {sid: [] for sid in sids}
    for pid in psutil.pids():
        try:
            sid = os.getsid(pid)
        except OSError:  # gone meanwhile
            continue
        if sid not in found:
            continue
        try:
            proc = psutil.Process(pid)
            if live and proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found[sid].append(proc)
    return found


@dataclass
class RayNode:
    index: int  # 0 is the head
    process: subprocess.Popen[bytes]  # ``ray start --block``, a session leader
    temp_dir: Path
    log_path: Path

    @property
    def name(self) -> str:
        return "head" if self.index == 0 else f"worker{self.index}"

    @property
    def sid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def started(self) -> bool:
        try:
            return STARTED in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def processes(self) -> list[psutil.Process]:
        return session_members({self.sid})[self.sid]


class RayCluster:
    """``nodes`` Ray nodes (head included) of ``cpus`` CPUs and ``object_store_mb`` each. Use as a
    context manager, or ``start()`` then ``stop()`` (which is safe after a failed start)."""

    def __init__(
        self,
        nodes: int,
        *,
        cpus: int = 1,
        object_store_mb: int = 100,
        node_ip: str = "127.0.0.2",
        env: dict[str, str] | None = None,
        start_timeout: float = 180.0,
        log: Callable[[str], None] = print,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.size = nodes
        self.cpus = cpus
        self.object_store_mb = object_store_mb
        self.node_ip = node_ip
        self.start_timeout = start_timeout
        self.log = log
        self.nodes: list[RayNode] = []
        self.gcs_port = 0
        self.root: Path | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        # No token file to share: the server that joins is started with the same setting. A node
        # stops at once on SIGTERM rather than first draining for 30 s (its actors die anyway).
        self.env.update(
            {
                "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            }
        )
        self.env.update(env or {})

    @property
    def address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"

    def __enter__(self) -> RayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start ------------------------------------------------------------------------------------
    def _command(self, index: int, temp_dir: Path) -> list[str]:
        args = [ray_executable(), "start", "--block", "--disable-usage-stats"]
        args += ["--node-ip-address", self.node_ip, "--num-cpus", str(self.cpus)]
        args += ["--object-store-memory", str(self.object_store_mb * 1024 * 1024)]
        args += ["--temp-dir", str(temp_dir), "--log-style", "record", "--log-color", "false"]
        for flag in (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        ):
            args += [flag, str(free_port())]
        if index == 0:
            args += ["--head", "--port", str(self.gcs_port), "--include-dashboard", "false"]
            args += ["--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", self.address]
        return args

    def _spawn(self, index: int) -> RayNode:
        assert self.root is not None
        temp_dir = self.root / f"n{index}"
        temp_dir.mkdir()
        log_path = self.root / f"n{index}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                self._command(index, temp_dir),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node = RayNode(index, process, temp_dir, log_path)
        self.nodes.append(node)
        return node

    def _wait_started(self, nodes: list[RayNode], deadline: float) -> None:
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                if node.process.poll() is not None:
                    raise RuntimeError(
                        f"ray node {node.name} exited with {node.process.returncode}:\n{node.log_tail()}"
                    )
                if node.started():
                    waiting.remove(node)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(n.name for n in waiting)
                raise RuntimeError(f"ray node(s) {names} did not start in {self.start_timeout:.0f} s")
            time.sleep(0.2)

    def start(self) -> None:
        # Short: Ray puts unix sockets under <temp-dir>/session_<date>_<pid>/sockets/.
        self.root = Path(tempfile.mkdtemp(prefix="pbc", dir="/tmp"))
        self.gcs_port = free_port()
        deadline = time.monotonic() + self.start_timeout
        self._wait_started([self._spawn(0)], deadline)
        self._wait_started([self._spawn(i) for i in range(1, self.size)], deadline)
        self.wait_for_nodes(self.size, deadline)

    def wait_for_nodes(self, count: int, deadline: float) -> None:
        """Until the GCS lists ``count`` alive nodes (a raylet registers a little after its
        ``ray start`` reports success)."""
        alive, why = -1, ""
        while True:
            try:
                done = subprocess.run(
                    [sys.executable, "-c", COUNT_ALIVE_NODES, self.address],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=max(5.0, deadline - time.monotonic()),
                )
                why = done.stderr.strip()[-1500:]
                if done.returncode != 0 and ("ImportError" in why or "AttributeError" in why):
                    raise RuntimeError(f"cannot ask the GCS for its nodes (another Ray version?):\n{why}")
                alive = int(done.stdout.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                alive = -1
            if alive >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster shows {alive} alive node(s) of {count}:\n{why}")
            time.sleep(0.5)

    # --- stop -------------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Workers first, then the head: SIGTERM to each ``ray start`` (it drains and stops its
        node), then SIGKILL for whatever is left in the node's session after ``timeout``."""
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in reversed(self.nodes):
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"ray node {node.name} did not stop in {timeout:.0f} s: killing it")
                node.process.kill()
                node.process.wait(10)
        for _ in range(10):
            members = session_members({n.sid for n in self.nodes}, live=True)
            left = [p for procs in members.values() for p in procs]
            if not left:
                break
            for proc in left:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(left, timeout=5)
        else:
            self.log(f"processes of the ray cluster survive: {sorted(p.pid for p in left)}")
        self.nodes = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # --- what runs where --------------------------------------------------------------------------
    def trees(self) -> dict[str, list[psutil.Process]]:
        """Every node's processes, by node name."""
        members = session_members({n.sid for n in self.nodes})
        return {n.name: members[n.sid] for n in self.nodes}

    def tree(self) -> list[psutil.Process]:
        return [p for procs in self.trees().values() for p in procs]

    def node_tree(self, name: str) -> Callable[[], list[psutil.Process]]:
        node = next(n for n in self.nodes if n.name == name)
        return node.processes

    def live_per_node(self, live: Activations) -> dict[str, int]:
        """Per node, how many conversations are live on its conversation actors (each actor's pid,
        from the server's activations route, found among the node's processes)."""
        pids = {name: {p.pid for p in procs} for name, procs in self.trees().items()}
        node_of_host = {
            h["name"]: next((name for name, known in pids.items() if h["pid"] in known), "?")
            for h in live.hosts
        }
        counts = Counter(node_of_host.get(a["host"], "?") for a in live.activations)
        return {name: counts.get(name, 0) for name in pids}

    def placement(self) -> dict[str, dict[str, int]]:
        """Per node, how many worker processes run each kind of actor (``ray::ConversationActor``
        counts as ``ConversationActor``; a busy worker's ``.method()`` suffix is dropped; idle
        workers are ``IDLE``; the node's own agents are left out)."""
        placed: dict[str, dict[str, int]] = {}
        for name, procs in self.trees().items():
            kinds: Counter[str] = Counter()
            for proc in procs:
                try:
                    title = (proc.cmdline() or [""])[0]
                except psutil.Error:
                    continue
                kind = re.split(r"[.\s]", title[5:], maxsplit=1)[0] if title.startswith("ray::") else ""
                if kind and kind not in NODE_AGENTS:
                    kinds[kind] += 1
            placed[name] = dict(sorted(kinds.items()))
        return placed

    def describe(self) -> dict[str, object]:
        return {
            "address": self.address,
            "nodes": [
                {"name": n.name, "pid": n.process.pid, "temp_dir": str(n.temp_dir)} for n in self.nodes
            ],
            "cpus_per_node": self.cpus,
            "object_store_mb": self.object_store_mb,
            "node_ip": self.node_ip,
        }
