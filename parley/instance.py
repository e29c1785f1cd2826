"""One server per data directory, and no process of an earlier one left serving.

A running ``parley serve`` holds an exclusive ``flock`` on ``<data dir>/parley.lock`` for its
whole life; the kernel drops it when the process dies, however it dies. Beside it,
``parley.instance.json`` records the instance: its id, pid, host and port.

Every process the server starts (Ray's GCS, raylet, workers, Serve's HAProxy) inherits two
variables: the instance id and the lock file's path. So a process can be told to be ours, and
whether the server it belongs to is still alive (its lock is held), without trusting pids that
the system may have reused:

- a second server on a held data directory is refused (``DataDirInUse``);
- a server starting on a data directory whose last instance died finds that instance's
  processes by its id and ends them;
- a port held by a process of a dead instance is freed the same way; a port held by a live
  Parley, or by anything else, is refused (``PortInUse``), so two servers never share a port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

INSTANCE_VARIABLE = "PARLEY_INSTANCE_ID"
LOCK_VARIABLE = "PARLEY_INSTANCE_LOCK"
LOCK_FILE = "parley.lock"
RECORD_FILE = "parley.instance.json"
END_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    pid: int  # the ``parley serve`` process
    host: str
    port: int
    data_dir: str
    started_at: float
    driver_pid: int | None = None  # the server process, a session leader (``parley.supervisor``)

    @classmethod
    def new(cls, host: str, port: int, data_dir: str) -> InstanceRecord:
        return cls(uuid.uuid4().hex, os.getpid(), host, port, data_dir, time.time())

    @property
    def session(self) -> Session | None:
        return None if self.driver_pid is None else Session(self.driver_pid, self.started_at)


@dataclass(frozen=True)
class Session:
    """The driver's session. Ray's raylet starts its dashboard and runtime-env agents with an
    environment of their own, without the instance id, but they stay in the driver's session.
    Only processes started after the instance count (a session id is a pid, and pids are reused)."""

    leader: int
    since: float

    def holds(self, proc: psutil.Process) -> bool:
        try:
            return os.getsid(proc.pid) == self.leader and proc.create_time() >= self.since - 1
        except (OSError, psutil.Error):
            return False


class DataDirInUse(Exception):
    def __init__(self, data_dir: str, holder: InstanceRecord | None) -> None:
        self.data_dir = data_dir
        self.holder = holder
        who = f" (pid {holder.pid}, port {holder.port})" if holder else ""
        super().__init__(f"another parley serve{who} is running on data directory {data_dir}")


class PortInUse(Exception):
    def __init__(self, host: str, port: int, holder: str) -> None:
        self.host = host
        self.port = port
        self.holder = holder
        super().__init__(f"port {port} on {host} is taken by {holder}")


def read_record(data_dir: Path) -> InstanceRecord | None:
    try:
        return InstanceRecord(**json.loads((data_dir / RECORD_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class InstanceLock:
    """This server's hold on its data directory; see the module docstring."""

    def __init__(self, data_dir: Path, fd: int, record: InstanceRecord) -> None:
        self.data_dir = data_dir
        self._fd = fd
        self.record = record

    @property
    def path(self) -> Path:
        return self.data_dir / LOCK_FILE

    @classmethod
    def acquire(cls, data_dir: Path, record: InstanceRecord) -> tuple[InstanceLock, InstanceRecord | None]:
        """Take the lock and record this instance; returns the lock and the record of the
        instance before it (None on a new data directory). Raises ``DataDirInUse``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(str(data_dir), read_record(data_dir)) from None
        previous = read_record(data_dir)
        (data_dir / RECORD_FILE).write_text(json.dumps(asdict(record)))
        return cls(data_dir, fd, record), previous

    def record_driver(self, driver_pid: int) -> None:
        self.record = replace(self.record, driver_pid=driver_pid)
        (self.data_dir / RECORD_FILE).write_text(json.dumps(asdict(self.record)))

    def environment(self) -> dict[str, str]:
        """What every process of this server carries."""
        return {INSTANCE_VARIABLE: self.record.instance_id, LOCK_VARIABLE: str(self.path)}

    def release(self) -> None:
        with contextlib.suppress(OSError):
            (self.data_dir / RECORD_FILE).unlink()
        os.close(self._fd)


def is_held(lock_path: str) -> bool:
    """Whether a live server holds the lock at ``lock_path`` (False when the file is gone)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


def processes_of(instance_id: str, session: Session | None = None) -> list[psutil.Process]:
    """Every live process carrying ``instance_id`` or in ``session``, but this one."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        if _environ(proc).get(INSTANCE_VARIABLE) == instance_id or (session and session.holds(proc)):
            found.append(proc)
    return found


def end_processes(procs: list[psutil.Process], timeout: float = END_TIMEOUT_SECONDS) -> int:
    """SIGKILL ``procs``, each frozen first so none reacts to another's end; returns how many."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
    psutil.wait_procs(procs, timeout=timeout)
    return len(procs)


def end_instance(
    instance_id: str, session: Session | None = None, timeout: float = END_TIMEOUT_SECONDS
) -> int:
    """End every process of ``instance_id`` (and of the driver's ``session``), including any
    started meanwhile; returns how many."""
    ended = 0
    deadline = time.monotonic() + timeout
    while (procs := processes_of(instance_id, session)) and time.monotonic() < deadline:
        ended += end_processes(procs, max(deadline - time.monotonic(), 0.1))
    return ended


def listeners(port: int) -> list[psutil.Process]:
    """The processes listening on TCP ``port``, on any address."""
    pids = set()
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                pids.add(conn.pid)
    found = []
    for pid in sorted(pids):
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def free_port_of_leftovers(host: str, port: int) -> int:
    """End the processes of dead Parley instances that still listen on ``port``; returns how many
    processes were ended. Raises ``PortInUse`` when a live Parley, or anything else, holds it."""
    ended = 0
    for proc in listeners(port):
        env = _environ(proc)
        instance_id, lock_path = env.get(INSTANCE_VARIABLE), env.get(LOCK_VARIABLE)
        if instance_id and lock_path and not is_held(lock_path):
            ended += end_instance(instance_id)
            continue
        if instance_id and lock_path:
            holder = f"another parley serve (data directory {Path(lock_path).parent})"
        else:
            holder = f"{_name(proc)} (pid {proc.pid})"
        raise PortInUse(host, port, holder)
    if not _bindable(host, port):
        raise PortInUse(host, port, "a process this user cannot see")
    return ended


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "a process"


def _bindable(host: str, port: int) -> bool:
    """Whether nothing holds ``host:port`` (a bind without SO_REUSEPORT fails on any holder)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True
