"""The data directory's lock, an instance's processes, and the port check (``parley.instance``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from parley.instance import (
    INSTANCE_VARIABLE,
    LOCK_VARIABLE,
    DataDirInUse,
    InstanceLock,
    InstanceRecord,
    PortInUse,
    end_instance,
    free_port_of_leftovers,
    is_held,
    processes_of,
    read_record,
)


def _record(tmp_path: Path, port: int = 8283) -> InstanceRecord:
    return InstanceRecord.new("127.0.0.1", port, str(tmp_path))


def test_a_second_lock_on_one_data_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first, previous = InstanceLock.acquire(tmp_path, _record(tmp_path, 1111))
    assert previous is None
    with pytest.raises(DataDirInUse) as refused:
        InstanceLock.acquire(tmp_path, _record(tmp_path, 2222))
    assert refused.value.data_dir == str(tmp_path)
    assert refused.value.holder is not None and refused.value.holder.port == 1111
    assert is_held(str(first.path))
    first.release()
    assert not is_held(str(first.path))
    assert read_record(tmp_path) is None  # a clean stop leaves no record


def test_the_lock_of_a_dead_server_is_free_and_its_record_names_it(tmp_path: Path) -> None:
    record = _record(tmp_path)
    # A server that dies holding the lock: the kernel drops the lock, the record stays.
    code = (
        "import sys; from pathlib import Path; from parley.instance import InstanceLock, InstanceRecord;"
        f"InstanceLock.acquire(Path({str(tmp_path)!r}), InstanceRecord(**{record.__dict__!r}));"
        "import os; os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    lock, previous = InstanceLock.acquire(tmp_path, _record(tmp_path))
    try:
        assert previous == record
    finally:
        lock.release()


def test_end_instance_ends_every_process_carrying_its_id_and_no_other() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = [
        subprocess.Popen(sleeper, env={**os.environ, INSTANCE_VARIABLE: "test-instance-a"}) for _ in range(2)
    ]
    other = subprocess.Popen(sleeper, env={**os.environ, INSTANCE_VARIABLE: "test-instance-b"})
    try:
        assert {p.pid for p in processes_of("test-instance-a")} == {p.pid for p in ours}
        assert end_instance("test-instance-a") == 2
        for proc in ours:
            assert proc.wait(10) is not None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(10)


def _listen() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_a_port_held_by_another_program_is_refused_naming_it() -> None:
    sock, port = _listen()
    with sock, pytest.raises(PortInUse) as refused:
        free_port_of_leftovers("127.0.0.1", port)
    assert refused.value.port == port
    assert f"pid {os.getpid()}" in refused.value.holder


def test_a_port_held_by_a_dead_servers_leftover_is_freed(tmp_path: Path) -> None:
    lock_path = tmp_path / "parley.lock"
    lock_path.touch()  # no one holds it: its server is gone
    code = (
        "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1);"
        "print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    env = {**os.environ, INSTANCE_VARIABLE: "test-leftover", LOCK_VARIABLE: str(lock_path)}
    leftover = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert leftover.stdout is not None
        port = int(leftover.stdout.readline())
        assert free_port_of_leftovers("127.0.0.1", port) == 1
        assert leftover.wait(10) is not None
        assert free_port_of_leftovers("127.0.0.1", port) == 0
    finally:
        leftover.kill()
        leftover.wait(10)


def test_a_port_held_by_a_live_parley_is_refused(tmp_path: Path) -> None:
    lock, _ = InstanceLock.acquire(tmp_path, _record(tmp_path))
    code = (
        "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1);"
        "print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    env = {**os.environ, **lock.environment()}
    serving = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert serving.stdout is not None
        port = int(serving.stdout.readline())
        with pytest.raises(PortInUse) as refused:
            free_port_of_leftovers("127.0.0.1", port)
        assert "another parley serve" in refused.value.holder
        assert serving.poll() is None
    finally:
        serving.kill()
        serving.wait(10)
        lock.release()
