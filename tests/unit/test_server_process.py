"""Signalling a server and making sure nothing of it is left (``parley.processes.ServerProcess``),
on a stand-in: a shell leading a session of its own, with a child, as ``parley serve`` does."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from parley.processes import ServerProcess


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[ServerProcess]:
    process = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    server = ServerProcess("http://127.0.0.1:1", process, tmp_path, tmp_path / "server.log")
    deadline = time.monotonic() + 10
    while len(server.members()) < 2 and time.monotonic() < deadline:  # until the child is there
        time.sleep(0.01)
    yield server
    for proc in server.members():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    process.wait(10)


def test_a_signal_to_the_pid_spares_the_rest_of_the_group(stand_in: ServerProcess) -> None:
    members = stand_in.members()
    stand_in.send_signal("TERM-pid")
    assert stand_in.process.wait(10) == -15
    assert len(stand_in.left_after(members, 0.0)) == 1  # the child: killed now, and reported


def test_left_after_waits_for_the_group_to_end(stand_in: ServerProcess) -> None:
    members = stand_in.members()
    stand_in.send_signal("TERM-group")
    assert stand_in.left_after(members, 10.0) == []
    assert stand_in.process.wait(10) == -15


def test_a_malformed_signal_is_refused(stand_in: ServerProcess) -> None:
    with pytest.raises(ValueError):
        stand_in.send_signal("TERM")
    assert stand_in.process.poll() is None
