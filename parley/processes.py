"""Starting and stopping a fake LLM and a ``parley serve`` as child processes.

Shared by the test fixtures and the benchmarks, which both drive real processes over HTTP.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from .instance import INSTANCE_VARIABLE, read_record
from .ports import free_port


@dataclass
class FakeLLMProcess:
    url: str
    process: subprocess.Popen[str]

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        _terminate(self.process)


def _terminate(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def start_fake_llm(*args: str) -> FakeLLMProcess:
    """``parley fake-llm --port 0 ARGS``; returns once it accepts connections."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.fake_llm", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"fake LLM did not start: {line!r}")
    return FakeLLMProcess(match.group(1), proc)


# --- which conversations are live: the server's diagnostic route -----------------------------------
ACTIVATIONS_PATH = "/v1/_parley/activations"


def conversation_key(conversation_id: str) -> str:
    """The uuid inside a conversation id, as 32 lowercase hex digits, however a surface spells it
    (Letta's ``conv-<uuid>``, OpenAI's ``conv_<32 hex><16 zeros>``), so that ids from either
    surface can be matched against what the activations route lists. Anything else as it is."""
    prefix, rest = conversation_id[:5], conversation_id[5:]
    if prefix == "conv-":
        return rest.replace("-", "").lower()
    if prefix == "conv_" and len(rest) == 48:
        return rest[:32].lower()
    return conversation_id


@dataclass
class Activations:
    """What ``GET /v1/_parley/activations`` answers: the long-lived conversation host processes
    (``name``, ``node_id``, ``pid``, ``live``, ``capacity``) and every conversation bound to one of
    them now (``conversation_id``, ``host``, ``node_id``, ``busy``, ``idle_seconds``).

    One host serves many conversations, so counting ``ray::ConversationActor`` processes no longer
    says how many conversations are live: this does."""

    hosts: list[dict[str, Any]] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: Any) -> Activations:
        if not isinstance(body, dict):
            raise ValueError(f"not an activations object: {body!r:.200}")
        hosts, activations = body.get("hosts") or [], body.get("activations") or []
        if not isinstance(hosts, list) or not isinstance(activations, list):
            raise ValueError(f"not an activations object: {body!r:.200}")
        return cls(hosts=hosts, activations=activations)

    @property
    def live(self) -> int:
        return len(self.activations)

    def live_among(self, conversation_ids: Iterable[str]) -> int:
        """How many of ``conversation_ids`` (from either surface; one conversation counts once,
        however spelled) are live."""
        live = {conversation_key(str(a.get("conversation_id", ""))) for a in self.activations}
        return len({conversation_key(cid) for cid in conversation_ids} & live)

    def summary(self) -> dict[str, Any]:
        """The counts a benchmark records (the full lists can be thousands of entries long)."""
        return {
            "live": self.live,
            "busy": sum(1 for a in self.activations if a.get("busy")),
            "hosts": len(self.hosts),
            "capacity": sum(int(h.get("capacity") or 0) for h in self.hosts),
            "live_per_host": [int(h.get("live") or 0) for h in self.hosts],
        }


def fetch_activations(url: str, api_key: str | None = None, timeout: float = 10.0) -> Activations | None:
    """The server's live conversations, or None when it has no activations route (404: a server
    from before the route; callers then fall back to counting ``ray::ConversationActor``
    processes). Other failures raise (httpx.HTTPError, ValueError)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{url.rstrip('/')}{ACTIVATIONS_PATH}", headers=headers, timeout=timeout)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return Activations.from_json(response.json())


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    api_key: str | None = None  # PARLEY_API_KEY it was started with, for its diagnostic route
    instance_id: str | None = None  # what every process of the server carries (parley.instance)
    driver_pid: int | None = None  # its server process, leader of a session of its own

    def tree(self) -> list[psutil.Process]:
        """The server and every process under it: Ray's GCS, raylet, workers, Serve actors."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def processes_named(self, prefix: str) -> list[psutil.Process]:
        found = []
        for proc in self.tree():
            try:
                cmdline = proc.cmdline()
            except psutil.Error:
                continue
            if cmdline and cmdline[0].startswith(prefix):
                found.append(proc)
        return found

    def conversation_actor_processes(self) -> list[psutil.Process]:
        """Processes titled ``ray::ConversationActor``: one per live conversation before conversation
        hosts, a few long-lived hosts of many conversations since. ``activations()`` counts the
        conversations."""
        return self.processes_named("ray::ConversationActor")

    def activations(self, timeout: float = 10.0) -> Activations | None:
        """The live conversations (``fetch_activations``): None when the server has no such route."""
        return fetch_activations(self.url, self.api_key, timeout)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until ``/v1/health`` answers 200 (RuntimeError if the server exits first, or times out)."""
        _wait_ready(self, timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def session(self) -> list[psutil.Process]:
        """Every live process of the server: those of its session (it is a session leader), and
        every process carrying its instance id (the driver runs in a session of its own), also
        those whose parent died first and that were handed to init."""
        found = []
        sessions = self._sessions()
        for proc in psutil.process_iter(["status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(proc.pid) in sessions or self._carries_instance(proc):
                    found.append(proc)
            except (OSError, psutil.Error):  # gone meanwhile, or not ours to ask about
                continue
        return found

    def _sessions(self) -> set[int]:
        """The server's own session, and its driver's (recorded as it starts)."""
        record = read_record(self.data_dir)
        if record is not None and record.driver_pid:
            self.driver_pid = record.driver_pid
        return {self.process.pid, *([self.driver_pid] if self.driver_pid else [])}

    def _carries_instance(self, proc: psutil.Process) -> bool:
        if self.instance_id is None:
            record = read_record(self.data_dir)  # written as it starts, removed as it ends
            self.instance_id = record.instance_id if record else None
        if self.instance_id is None:
            return False
        try:
            return proc.environ().get(INSTANCE_VARIABLE) == self.instance_id
        except (OSError, psutil.Error):
            return False

    def members(self) -> list[psutil.Process]:
        """Every process of the server now, each once: its tree and its session."""
        return list({proc.pid: proc for proc in [*self.tree(), *self.session()]}.values())

    def send_signal(self, how: str) -> None:
        """``SIGNAL-pid`` or ``SIGNAL-group`` (``TERM-group``, ``KILL-pid`` ...): the signal to the
        server's process alone, or to its process group (what a supervisor or a shell's Ctrl-C
        reaches)."""
        signal_name, _, target = how.partition("-")
        sig = signal.Signals["SIG" + signal_name]
        if target == "group":
            os.killpg(self.process.pid, sig)
        elif target == "pid":
            os.kill(self.process.pid, sig)
        else:
            raise ValueError(f"not SIGNAL-pid or SIGNAL-group: {how!r}")

    def left_after(self, members: Iterable[psutil.Process], seconds: float) -> list[psutil.Process]:
        """What still runs of ``members`` and of the server's session once they all ended, or after
        ``seconds`` at most; killed before it is returned, so a caller that reports it (or fails on
        it) leaves nothing behind."""
        members = list(members)
        deadline = time.monotonic() + seconds
        while (left := _running([*members, *self.session()])) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        return left

    def kill(self, timeout: float = 20.0) -> int:
        """Crash the server: SIGKILL it and every process it started (GCS, raylet, workers,
        HAProxy) with no warning, so no shutdown code runs. Returns how many processes it killed.

        The whole session is frozen (SIGSTOP) before anything dies, so no process sees another one
        go and reacts (a replica noticing its client left, say): all of them stop at one instant."""
        members = {proc.pid: proc for proc in self.members()}
        haproxy_dir = _environ_value(members.values(), HAPROXY_DIR_VARIABLE)
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while members:
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for proc in members.values():
                    try:
                        proc.send_signal(sig)
                    except psutil.Error:
                        pass
            killed.update(members)
            _gone, alive = psutil.wait_procs(list(members.values()), timeout=5)
            alive = [p for p in alive if _status(p) not in (None, psutil.STATUS_ZOMBIE)]
            # Anything started while we were at it (a worker being forked) is caught on this pass.
            members = {proc.pid: proc for proc in [*alive, *self.session()]}
            if members and time.monotonic() > deadline:
                raise RuntimeError(f"processes of the killed server survive: {sorted(members)}")
        self.process.wait(10)
        _remove_haproxy_dir(haproxy_dir)  # what a clean stop removes and a crash leaves behind
        return len(killed)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT (what Ctrl-C sends), then make sure nothing of the tree is left behind."""
        descendants = [p for p in {*self.tree()[1:], *self.session()} if p.pid != self.process.pid]
        haproxy_dir = _environ_value(descendants, HAPROXY_DIR_VARIABLE)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        _gone, alive = psutil.wait_procs(descendants, timeout=15)
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.Error:
                pass
        _remove_haproxy_dir(haproxy_dir)  # a server that failed to start leaves it behind


# A server's own directory for HAProxy's files in /tmp (``parley.server``), set in its environment
# once it runs, so only the processes it starts show it.
HAPROXY_DIR_VARIABLE = "RAY_SERVE_HAPROXY_SERVER_STATE_BASE"


def _remove_haproxy_dir(path: str | None) -> None:
    if path and os.path.basename(path).startswith("parley"):
        shutil.rmtree(path, ignore_errors=True)


def _status(proc: psutil.Process) -> str | None:
    try:
        return proc.status()
    except psutil.Error:
        return None


def _running(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running, each once (a zombie has ended: only its parent's wait is
    missing)."""
    running = []
    for proc in {proc.pid: proc for proc in procs}.values():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
        except psutil.Error:
            continue
    return running


def _environ_value(procs: Iterable[psutil.Process], name: str) -> str | None:
    """``name`` in the environment of the first of ``procs`` that has it (the server sets some of
    its variables after it started, so its children show them and it does not)."""
    for proc in procs:
        try:
            value = proc.environ().get(name)
        except psutil.Error:
            continue
        if value:
            return value
    return None


def start_server(
    fake: FakeLLMProcess,
    data_dir: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    start_timeout: float = 180.0,
    port: int | None = None,
    wait: bool = True,
) -> ServerProcess:
    """``parley serve`` on ``port`` (default: a free one), pointed at ``fake``; returns once
    ``/v1/health`` answers 200, or at once with ``wait=False``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    port = port or free_port()
    full_env = {
        **os.environ,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "fake-openai-key",
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "fake-anthropic-key",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parley",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(
        f"http://127.0.0.1:{port}", proc, data_dir, log_path, api_key=full_env.get("PARLEY_API_KEY") or None
    )
    if wait:
        server.wait_ready(start_timeout)
    return server


def _wait_ready(server: ServerProcess, start_timeout: float) -> None:
    proc, data_dir = server.process, server.data_dir
    deadline = time.monotonic() + start_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"parley serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/v1/health/", timeout=2).status_code == 200:
                record = read_record(data_dir)
                server.instance_id = record.instance_id if record else None
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"parley serve did not answer in {start_timeout}s:\n{server.log_tail()}")
        time.sleep(0.5)


# --- redis-server, for the Redis store's tests and benchmarks ---------------------------------------
REDIS_START_SECONDS = 10.0


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        _terminate(self.process)


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def start_redis(workdir: str | Path) -> RedisProcess:
    """A private redis-server on a free loopback port, without persistence (a port taken in the
    meantime gets a retry). Raises RuntimeError when there is no redis-server or it won't start."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH: apt-get install -y redis-server")
    log = Path(workdir) / "redis.log"
    for _ in range(3):
        port = free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(workdir), "--daemonize", "no", "--logfile", str(log)]
        server = RedisProcess(subprocess.Popen([binary, *args]), f"redis://127.0.0.1:{port}/0", log)
        deadline = time.monotonic() + REDIS_START_SECONDS
        while time.monotonic() < deadline and server.process.poll() is None:
            if _redis_answers(server.url):
                return server
            time.sleep(0.05)
        server.stop()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"redis-server did not start:\n{tail}")
