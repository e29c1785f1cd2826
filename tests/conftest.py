"""Shared fixtures: a real fake-LLM process and a real ``parley serve`` process on free ports.

End-to-end tests drive the server only through the official SDKs over HTTP. The server runs with
a short passivation time so that idle conversation actors come and go during the session.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

IDLE_SECONDS = 3.0
SERVER_START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakeLLM:
    url: str
    process: subprocess.Popen[str]

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def conversation_actor_processes(self) -> list[psutil.Process]:
        found = []
        for proc in self.tree():
            try:
                cmdline = proc.cmdline()
            except psutil.Error:
                continue
            if cmdline and cmdline[0].startswith("ray::ConversationActor"):
                found.append(proc)
        return found

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _start_fake_llm() -> FakeLLM:
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.fake_llm", "--port", "0"],
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
    return FakeLLM(match.group(1), proc)


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    fake = _start_fake_llm()
    yield fake
    fake.process.terminate()
    try:
        fake.process.wait(10)
    except subprocess.TimeoutExpired:
        fake.process.kill()


def _stop_tree(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGINT (what Ctrl-C sends), then make sure nothing of the tree is left behind."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    _gone, alive = psutil.wait_procs(descendants, timeout=15)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="session")
def server(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("parley-data")
    log_path = data_dir / "server.log"
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake_llm.openai_base_url,
        "OPENAI_API_KEY": "test-openai-key",
        "ANTHROPIC_BASE_URL": fake_llm.url,
        "ANTHROPIC_API_KEY": "test-anthropic-key",
        "PARLEY_CONVERSATION_IDLE_SECONDS": str(IDLE_SECONDS),
        "PARLEY_KEEPALIVE_SECONDS": "20",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, proc, data_dir, log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"parley serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{url}/v1/health/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"parley serve did not answer in {SERVER_START_TIMEOUT}s:\n{server.log_tail()}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop_tree(proc)


@pytest.fixture
def client(server: Server):
    from letta_client import Letta

    with Letta(base_url=server.url) as letta:
        yield letta


@pytest.fixture
def agent(client):
    created = client.agents.create(
        name="test-agent",
        model="openai/gpt-4o-mini",
        embedding="openai/text-embedding-3-small",
        memory_blocks=[
            {"label": "persona", "value": "I am Parley's test assistant."},
            {"label": "human", "value": "The user is called Ada."},
        ],
        tags=["test"],
    )
    yield created
    try:
        client.agents.delete(created.id)
    except Exception:
        pass


@pytest.fixture
def conversation(client, agent):
    return client.conversations.create(agent_id=agent.id)
