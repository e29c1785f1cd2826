"""What a scenario runs against: the fake provider, a Parley server, the bare proxy; and the
meters around a phase (CPU of each process tree, the load generator's own CPU, the machine's,
peak memory of the target's tree).

For ``cluster`` the server is started per node count instead (``Rig.start_cluster``): a private
multi-node Ray cluster on this machine, a private redis-server for the store, and a
``parley serve`` joining the cluster; the server's tree is then all of them.

Everything listens on loopback and is started and stopped here; ``Rig.stop`` leaves nothing
behind, whatever happened before it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from parley.processes import (
    Activations,
    FakeLLMProcess,
    RedisProcess,
    ServerProcess,
    fetch_activations,
    start_fake_llm,
    start_redis,
    start_server,
)

from .cluster import RayCluster
from .measure import TreeCpu, machine_busy_seconds, memory_of

Tree = Callable[[], list[psutil.Process]]
MAX_CONTEXT_TOKENS = 100_000_000
# What ``parley serve`` gets when it joins a cluster whose nodes share this machine, as
# tests/e2e/test_cluster.py runs it (``--env`` overrides them): one HTTP proxy, on the head (a
# proxy on every node would want the same port), and Serve's Python proxy rather than HAProxy.
# So the 1-node point of ``cluster`` is not ``scale``'s single-node server: compare node counts.
CLUSTER_SERVER_ENV = {"PARLEY_PROXY_LOCATION": "HeadOnly", "PARLEY_SERVE_HAPROXY": "0"}


def process_tree(root: subprocess.Popen | psutil.Process | None) -> Tree:
    def tree() -> list[psutil.Process]:
        if root is None:
            return []
        try:
            proc = root if isinstance(root, psutil.Process) else psutil.Process(root.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return tree


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_proxy(upstream: str, timeout: float = 30.0) -> ProxyProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.proxy", "--upstream", upstream, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"the bare proxy did not start: {line!r}")
    proxy = ProxyProcess(match.group(1), proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{proxy.url}/health", timeout=2).status_code == 200:
                return proxy
        except httpx.HTTPError:
            time.sleep(0.1)
    proxy.stop()
    raise RuntimeError("the bare proxy did not answer")


class Rig:
    """The processes of one benchmark run. Use as a context manager."""

    def __init__(
        self,
        *,
        url: str | None,
        latency: float,
        token_delay: float,
        proxy: bool,
        env: dict[str, str] | None = None,
        data_dir: str | None = None,
        log: Callable[[str], None] = print,
        server: bool = True,
        replay: str | None = None,
    ) -> None:
        self.given_url = url
        self.replay = replay  # a recordings directory whose call timing the fake provider takes
        self.want_server = server  # False: the scenario starts servers itself (start_cluster)
        self.latency = latency
        self.token_delay = token_delay
        self.want_proxy = proxy
        self.env = env or {}
        self.data_dir = data_dir
        self.log = log
        self.fake: FakeLLMProcess | None = None
        self.server: ServerProcess | None = None
        self.proxy: ProxyProcess | None = None
        self.server_start_s: float | None = None
        self.cluster: RayCluster | None = None
        self.redis: RedisProcess | None = None
        self._tmp: str | None = None
        self._cluster_tmp: str | None = None

    # --- start and stop ---------------------------------------------------------------------------
    def __enter__(self) -> Rig:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake_args = ["--latency", str(self.latency), "--token-delay", str(self.token_delay)]
        # A conversation's history grows with every turn; the provider's context check is not
        # what is measured here.
        fake_args += ["--max-context-tokens", str(MAX_CONTEXT_TOKENS)]
        if self.replay:
            fake_args += ["--timing-from", self.replay]
        self.fake = start_fake_llm(*fake_args)
        pacing = (
            f"timing of the calls recorded in {self.replay}"
            if self.replay
            else f"latency {self.latency} s, token delay {self.token_delay} s"
        )
        self.log(f"fake provider at {self.fake.url} ({pacing})")
        if self.want_proxy:
            self.proxy = start_proxy(self.fake.url)
            self.log(f"bare proxy at {self.proxy.url}")
        if self.given_url is None and self.want_server:
            if self.data_dir is None:
                self._tmp = tempfile.mkdtemp(prefix="parley-bench-")
            data = Path(self.data_dir or self._tmp or ".")
            self.log("starting parley serve ...")
            began = time.perf_counter()
            self.server = start_server(self.fake, data, env=self.env)
            self.server_start_s = time.perf_counter() - began
            self.log(f"parley serve at {self.server.url} after {self.server_start_s:.1f} s")

    def start_cluster(
        self,
        nodes: int,
        *,
        cpus: int = 1,
        object_store_mb: int = 100,
        node_ip: str = "127.0.0.2",
        start_timeout: float = 180.0,
    ) -> dict[str, Any]:
        """A Ray cluster of ``nodes`` nodes, a redis-server and a ``parley serve`` joining them with
        the Redis store; returns how long each took. On failure everything started is stopped."""
        self.stop_cluster()
        assert self.fake is not None
        setup: dict[str, Any] = {"nodes": nodes}
        try:
            self.log(f"starting a Ray cluster of {nodes} node(s) ...")
            began = time.perf_counter()
            options: dict[str, Any] = {"cpus": cpus, "object_store_mb": object_store_mb, "node_ip": node_ip}
            self.cluster = RayCluster(nodes, **options, start_timeout=start_timeout, log=self.log)
            try:
                self.cluster.start()
            except RuntimeError as exc:  # a free port taken meanwhile, say: one more try
                self.log(f"the cluster did not start ({exc}); trying again")
                self._stop_cluster()
                self.cluster = RayCluster(nodes, **options, start_timeout=start_timeout, log=self.log)
                self.cluster.start()
            setup["cluster_start_s"] = time.perf_counter() - began
            setup["cluster"] = self.cluster.describe()
            self._cluster_tmp = tempfile.mkdtemp(prefix="parley-bench-cluster-")
            self.redis = start_redis(self._cluster_tmp)
            env = {
                **CLUSTER_SERVER_ENV,
                **self.env,
                "PARLEY_RAY_ADDRESS": self.cluster.address,
                "RAY_AUTH_MODE": "disabled",
                "PARLEY_STORE_URL": self.redis.url,
            }
            setup["server_env"] = env
            self.log(f"cluster at {self.cluster.address} after {setup['cluster_start_s']:.1f} s")
            self.log("starting parley serve (joining the cluster) ...")
            began = time.perf_counter()
            self.server = start_server(self.fake, Path(self._cluster_tmp) / "data", env=env)
            self.server_start_s = setup["server_start_s"] = time.perf_counter() - began
            setup["server_url"] = self.server.url
            self.log(f"parley serve at {self.server.url} after {self.server_start_s:.1f} s")
        except BaseException:
            self.stop_cluster()
            raise
        return setup

    def stop_cluster(self) -> dict[str, float]:
        """Stop what ``start_cluster`` started: the server (while its cluster still runs), the
        cluster, Redis. Returns the seconds each took."""
        took: dict[str, float] = {}
        if self.cluster is None and self.redis is None and self._cluster_tmp is None:
            return took
        for name, stop in (
            ("server", self._stop_server),
            ("cluster", self._stop_cluster),
            ("redis", self._stop_redis),
        ):
            began = time.perf_counter()
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                self.log(f"while stopping: {type(exc).__name__}: {exc}")
            took[name] = time.perf_counter() - began
        if self._cluster_tmp:
            shutil.rmtree(self._cluster_tmp, ignore_errors=True)
            self._cluster_tmp = None
        return took

    def _stop_cluster(self) -> None:
        if self.cluster:
            cluster, self.cluster = self.cluster, None
            cluster.stop()

    def _stop_redis(self) -> None:
        if self.redis:
            redis, self.redis = self.redis, None
            redis.stop()

    def stop(self) -> None:
        self.stop_cluster()
        for stop in (self._stop_server, self._stop_proxy, self._stop_fake):
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                self.log(f"while stopping: {type(exc).__name__}: {exc}")
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _stop_server(self) -> None:
        if self.server:
            server, self.server = self.server, None
            server.stop()

    def _stop_proxy(self) -> None:
        if self.proxy:
            proxy, self.proxy = self.proxy, None
            proxy.stop()

    def _stop_fake(self) -> None:
        if self.fake:
            fake, self.fake = self.fake, None
            fake.stop()

    # --- addresses and trees ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.given_url:
            return self.given_url.rstrip("/")
        assert self.server is not None
        return self.server.url

    @property
    def managed(self) -> bool:
        return self.server is not None

    @property
    def has_server(self) -> bool:
        return self.given_url is not None or self.server is not None

    def server_tree(self) -> list[psutil.Process]:
        """The server's process tree; on a cluster also every node's processes and Redis."""
        procs = self.server.tree() if self.server else []
        if self.cluster:
            procs += self.cluster.tree()
        if self.redis:
            procs += process_tree(self.redis.process)()
        return list({p.pid: p for p in procs}.values())

    def server_parts(self) -> dict[str, Tree]:
        """On a cluster, the parts of ``server_tree`` to measure apart: the ``parley serve`` driver,
        Redis, each Ray node. Empty otherwise."""
        if not self.cluster:
            return {}
        parts: dict[str, Tree] = {}
        if self.server:
            parts["parley serve"] = self.server.tree
        if self.redis:
            parts["redis"] = process_tree(self.redis.process)
        for node in self.cluster.nodes:
            parts[node.name] = node.processes
        return parts

    def activations(self) -> Activations | None:
        """The server's live conversations from its diagnostic route (``--url`` servers too); None
        when it has none (404, a server from before the route) or there is no server."""
        if not self.has_server:
            return None
        return fetch_activations(self.url, self.env.get("PARLEY_API_KEY") or None)

    def conversation_host_processes(self) -> int | None:
        """``ray::ConversationActor`` processes of a started server (None for ``--url``): one per
        live conversation before conversation hosts, the few hosts themselves since."""
        return len(self.server.conversation_actor_processes()) if self.server else None

    def fake_tree(self) -> list[psutil.Process]:
        return process_tree(self.fake.process if self.fake else None)()

    def proxy_tree(self) -> list[psutil.Process]:
        return process_tree(self.proxy.process if self.proxy else None)()

    def tree_of(self, target: str) -> Tree | None:
        """The processes that serve ``target`` (None: not measured)."""
        if target == "parley":
            return self.server_tree if self.managed else None
        if target == "proxy":
            return self.proxy_tree
        return None  # direct: the fake provider is measured on its own for every target

    def settle(self, max_seconds: float, quiet_cores: float = 0.3, window: float = 1.0) -> float:
        """Wait until the server's tree uses less than ``quiet_cores`` over ``window`` seconds (Serve
        keeps reconciling for a while after it first answers), at most ``max_seconds``."""
        if not self.managed or max_seconds <= 0:
            return 0.0
        began = time.monotonic()
        while time.monotonic() - began < max_seconds:
            cpu = TreeCpu(self.server_tree)
            cpu.start()
            time.sleep(window)
            if cpu.seconds() / window < quiet_cores:
                break
        return time.monotonic() - began


class Meter:
    """CPU and peak memory around one phase; a thread samples every ``interval`` seconds, so a
    process that exits mid-phase still counts up to its last reading."""

    def __init__(self, rig: Rig, target: str, interval: float = 1.0) -> None:
        self.rig = rig
        self.target_tree = rig.tree_of(target)
        self.interval = interval
        self._server = TreeCpu(rig.server_tree) if rig.managed else None
        self._target = TreeCpu(self.target_tree) if self.target_tree and target != "parley" else None
        self._fake = TreeCpu(rig.fake_tree)
        self._parts = {name: TreeCpu(tree) for name, tree in rig.server_parts().items()}
        self._me = psutil.Process()
        self._peak = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _meters(self) -> list[TreeCpu]:
        return [m for m in (self._server, self._target, self._fake, *self._parts.values()) if m]

    def _sample_memory(self) -> None:
        if not self.target_tree:
            return
        memory = memory_of(self.target_tree())
        for key in self._peak:
            self._peak[key] = max(self._peak[key], getattr(memory, f"{key}_mib"))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for meter in self._meters():
                meter.sample()
            self._sample_memory()

    def __enter__(self) -> Meter:
        self._sample_memory()
        for meter in self._meters():
            meter.start()
        times = self._me.cpu_times()
        self._me_cpu0 = times.user + times.system
        self._busy0 = machine_busy_seconds()
        self._wall0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="bench-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.busy = machine_busy_seconds() - self._busy0
        times = self._me.cpu_times()
        self.me_cpu = times.user + times.system - self._me_cpu0
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.server_cpu = self._server.seconds() if self._server else None
        self.target_cpu = self._target.seconds() if self._target else None
        self.fake_cpu = self._fake.seconds()
        self.parts_cpu = {name: meter.seconds() for name, meter in self._parts.items()}
        self._sample_memory()

    def report(self, ok_turns: int, target: str) -> dict[str, Any]:
        """The ``cpu`` and ``memory_peak_mib`` parts of a run's record."""
        target_cpu = self.server_cpu if target == "parley" else self.target_cpu
        known = self.me_cpu + self.fake_cpu + (self.server_cpu or 0.0) + (self.target_cpu or 0.0)
        cpu: dict[str, Any] = {
            "target_s": target_cpu,
            "target_ms_per_turn": (target_cpu / ok_turns * 1e3)
            if target_cpu is not None and ok_turns
            else None,
            "server_tree_s": self.server_cpu,
            "fake_s": self.fake_cpu,
            "fake_ms_per_turn": self.fake_cpu / ok_turns * 1e3 if ok_turns else None,
            "loadgen_s": self.me_cpu,
            "loadgen_cores": self.me_cpu / self.wall if self.wall else None,
            "machine_busy_s": self.busy,
            "other_s": self.busy - known,
        }
        if self.parts_cpu:  # a cluster: where the server tree's CPU went
            cpu["parts_s"] = self.parts_cpu
        memory = dict(self._peak) if self.target_tree else None
        return {"cpu": cpu, "memory_peak_mib": memory}


def machine_info() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "cpus": psutil.cpu_count(),
        "memory_gib": round(memory.total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}
