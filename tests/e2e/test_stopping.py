"""Stopping ``parley serve`` the ways operators do, starting it again, and what clients see meanwhile.

Each test runs a server of its own: the signals end it. Stopped or killed however, no process of
its instance may outlive it by more than 10 s.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from letta_client import Letta

from parley.processes import FakeLLMProcess, ServerProcess, free_port, start_server

pytestmark = pytest.mark.slow

GONE_WITHIN_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 60.0


def _assert_nothing_left(members: list[psutil.Process], server: ServerProcess) -> None:
    """Within 10 s of the main process's end, no process of the server remains."""
    alive = server.left_after(members, GONE_WITHIN_SECONDS)  # killed: nothing stays for the next test
    described = []
    for proc in alive:
        try:
            described.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            described.append(str(proc.pid))
    assert not alive, f"left running: {described}\n{server.log_tail()}"


@pytest.fixture
def fresh_server(fake_llm: FakeLLMProcess, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(fake_llm, tmp_path / "data")
    yield server
    server.stop()


class _TurnInAThread:
    """A turn sent on a thread of its own, its chunks collected as they arrive."""

    def __init__(self, client: Letta, conversation_id: str, prompt: str) -> None:
        self.chunks: list[Any] = []
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._send, args=(client, conversation_id, prompt))
        self.thread.start()

    def _send(self, client: Letta, conversation_id: str, prompt: str) -> None:
        try:
            for chunk in client.conversations.messages.create(
                conversation_id, messages=[{"role": "user", "content": prompt}]
            ):
                self.chunks.append(chunk)
        except Exception as error:  # the server may be killed under it: each test says if that is wrong
            self.error = error

    def join(self, timeout: float) -> bool:
        """Whether the turn ended within ``timeout``."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def stop_reasons(self) -> list[str | None]:
        return [getattr(c, "stop_reason", None) for c in self.chunks if c.message_type == "stop_reason"]


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


@pytest.mark.parametrize("how", ["TERM-group", "TERM-pid", "INT-group", "INT-pid"])
def test_a_stop_signal_drains_and_exits_0_leaving_nothing(fresh_server: ServerProcess, how: str) -> None:
    members = fresh_server.members()
    assert len(members) > 5  # GCS, raylet, workers, HAProxy ...
    fresh_server.send_signal(how)
    assert fresh_server.process.wait(STOP_TIMEOUT_SECONDS) == 0, fresh_server.log_tail()
    _assert_nothing_left(members, fresh_server)
    assert "Parley drained" in fresh_server.log_tail(200)


@pytest.mark.parametrize("how", ["KILL-pid", "KILL-group"])
def test_a_killed_server_takes_its_tree_with_it(fresh_server: ServerProcess, how: str) -> None:
    members = fresh_server.members()
    fresh_server.send_signal(how)
    fresh_server.process.wait(10)
    _assert_nothing_left(members, fresh_server)


def test_term_then_kill_as_a_supervisor_would(fresh_server: ServerProcess) -> None:
    """A supervisor's stop timeout: SIGTERM to the group, SIGKILL 3 s later."""
    members = fresh_server.members()
    client = Letta(base_url=fresh_server.url)
    agent = client.agents.create(model="openai/gpt-4o-mini")
    conversation = client.conversations.create(agent_id=agent.id)
    running = _TurnInAThread(client, conversation.id, "[[latency=30]] hi")  # outlasts the 3 s
    time.sleep(1.0)
    fresh_server.send_signal("TERM-group")
    time.sleep(3.0)
    fresh_server.send_signal("KILL-group")
    fresh_server.process.wait(10)
    _assert_nothing_left(members, fresh_server)
    running.join(30)


def test_a_second_signal_stops_at_once(fresh_server: ServerProcess) -> None:
    members = fresh_server.members()
    client = Letta(base_url=fresh_server.url)
    agent = client.agents.create(model="openai/gpt-4o-mini")
    conversation = client.conversations.create(agent_id=agent.id)
    running = _TurnInAThread(client, conversation.id, "[[latency=60]] hi")
    time.sleep(1.0)
    fresh_server.send_signal("TERM-pid")  # drains: the turn has 20 s
    time.sleep(1.0)
    began = time.monotonic()
    fresh_server.send_signal("TERM-pid")
    fresh_server.process.wait(15)
    assert time.monotonic() - began < 15
    _assert_nothing_left(members, fresh_server)
    running.join(30)


def test_draining_finishes_running_turns_and_refuses_new_work(
    fake_llm: FakeLLMProcess, tmp_path: Path
) -> None:
    server = start_server(fake_llm, tmp_path / "data")
    try:
        client = Letta(base_url=server.url, max_retries=0)
        agent = client.agents.create(model="openai/gpt-4o-mini")
        busy, other = (client.conversations.create(agent_id=agent.id) for _ in range(2))
        turn = _TurnInAThread(client, busy.id, "[[latency=4]] say hi")
        time.sleep(1.0)
        members = server.members()
        server.send_signal("TERM-pid")

        # Draining: health says so, a new send is refused with Retry-After, reads still answer.
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{server.url}/v1/health/")).status_code == 200:
            assert time.monotonic() < deadline, "health never said draining"
            time.sleep(0.05)
        assert health.status_code == 503
        assert health.json()["state"] == "draining"
        refused = httpx.post(
            f"{server.url}/v1/conversations/{other.id}/messages",
            json={"messages": [{"role": "user", "content": "hello"}]},
        )
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert httpx.get(f"{server.url}/v1/conversations/{other.id}").status_code == 200
        openai_refused = httpx.post(
            f"{server.url}/openai/v1/responses", json={"model": "gpt-4o-mini", "input": "hi"}
        )
        assert openai_refused.status_code == 503
        assert openai_refused.json()["error"]["code"] == "server_draining"

        turn.join(30)
        assert turn.stop_reasons == ["end_turn"], turn.error  # the running turn finished, not cut
        assert server.process.wait(STOP_TIMEOUT_SECONDS) == 0
        _assert_nothing_left(members, server)
    finally:
        server.stop()


def test_turns_past_the_drain_time_end_cancelled(fake_llm: FakeLLMProcess, tmp_path: Path) -> None:
    server = start_server(fake_llm, tmp_path / "data", env={"PARLEY_DRAIN_SECONDS": "1"})
    try:
        client = Letta(base_url=server.url, max_retries=0)
        agent = client.agents.create(model="openai/gpt-4o-mini")
        conversation = client.conversations.create(agent_id=agent.id)
        turn = _TurnInAThread(client, conversation.id, "[[latency=60]] say hi")
        time.sleep(1.0)
        server.send_signal("INT-pid")
        assert turn.join(30)
        assert turn.stop_reasons == ["cancelled"], turn.error
        assert server.process.wait(STOP_TIMEOUT_SECONDS) == 0
        assert "1 cancelled" in server.log_tail(200)
    finally:
        server.stop()


def test_restart_on_the_same_port_after_a_kill_answers_only_as_the_new_server(
    fake_llm: FakeLLMProcess, tmp_path: Path
) -> None:
    port = free_port()
    first = start_server(fake_llm, tmp_path / "first", port=port)
    members = first.members()
    first.send_signal("KILL-pid")
    first.process.wait(10)
    # At once, before the old tree may be gone: on another data directory, with a key this time.
    second = start_server(fake_llm, tmp_path / "second", port=port, env={"PARLEY_API_KEY": "new-key"})
    try:
        statuses = Counter(httpx.get(f"{second.url}/v1/agents/").status_code for _ in range(100))
        assert statuses == Counter({401: 100})  # the old server had no key: it would answer 200
        _assert_nothing_left(members, first)
    finally:
        second.stop()


def _serve(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``parley serve`` run to its end (a refused one ends at once), its output kept."""
    command = [sys.executable, "-m", "parley", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_second_server_on_one_data_directory_is_refused(fresh_server: ServerProcess) -> None:
    refused = _serve(free_port(), fresh_server.data_dir)
    assert refused.returncode == 2
    assert "another parley serve" in refused.stderr
    assert str(fresh_server.data_dir) in refused.stderr
    assert httpx.get(f"{fresh_server.url}/v1/health/").status_code == 200  # untouched


def test_a_port_taken_by_something_else_is_refused(fake_llm: FakeLLMProcess, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        listening: list[int] = []
        while not listening and time.monotonic() < deadline:
            listening = [
                c.laddr.port
                for c in psutil.Process(holder.pid).net_connections()
                if c.status == psutil.CONN_LISTEN
            ]
            time.sleep(0.1)
        refused = _serve(listening[0], tmp_path)
        assert refused.returncode == 2
        assert f"port {listening[0]}" in refused.stderr and f"pid {holder.pid}" in refused.stderr
    finally:
        holder.kill()
        holder.wait(10)


def test_while_starting_only_connection_refused_or_503(fake_llm: FakeLLMProcess, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(fake_llm, tmp_path / "data", port=port, wait=False)
    try:
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 180
        with httpx.Client(timeout=5) as http:

            def ask(path: str) -> str:
                try:
                    response = http.get(f"{server.url}{path}")
                except httpx.ConnectError:
                    return "refused"
                if response.status_code == 503:
                    assert int(response.headers["retry-after"]) > 0
                return str(response.status_code)

            while ask("/v1/health/") != "200":
                for path in ("/v1/agents/", "/openai/v1/conversations/conv_x"):
                    answer = ask(path)
                    # Anything but refused or 503 only once the server says it is ready.
                    assert answer in ("refused", "503") or ask("/v1/health/") == "200", (answer, seen)
                    seen[answer] += 1
                assert server.process.poll() is None, server.log_tail()
                assert time.monotonic() < deadline, seen
                time.sleep(0.02)
        assert seen["503"] > 0, seen  # the port answers while the server starts
        assert httpx.get(f"{server.url}/v1/health/").json()["state"] == "ready"
        assert httpx.get(f"{server.url}/v1/health/live").status_code == 200
    finally:
        server.stop()


def test_a_background_run_cut_by_the_drain_is_readable_after_a_restart(
    fake_llm: FakeLLMProcess, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_server(fake_llm, data, env={"PARLEY_DRAIN_SECONDS": "1"})
    try:
        client = Letta(base_url=server.url, max_retries=0)
        agent = client.agents.create(model="openai/gpt-4o-mini")
        conversation = client.conversations.create(agent_id=agent.id)
        stream = client.conversations.messages.create(
            conversation.id, messages=[{"role": "user", "content": "[[latency=60]] hi"}], background=True
        )
        run_id = next(c.run_id for c in stream if getattr(c, "run_id", None))
        stream.close()
        server.send_signal("TERM-group")
        assert server.process.wait(STOP_TIMEOUT_SECONDS) == 0, server.log_tail()
    finally:
        server.stop()
    again = start_server(fake_llm, data)
    try:
        client = Letta(base_url=again.url)
        run = client.runs.retrieve(run_id)
        assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
        replayed = list(client.runs.messages.stream(run_id, starting_after=0))
        assert [c.stop_reason for c in replayed if c.message_type == "stop_reason"] == ["cancelled"]
        # The conversation is free: the next turn is answered.
        chunks = list(
            client.conversations.messages.create(
                conversation.id, messages=[{"role": "user", "content": "say hi"}]
            )
        )
        assert any(c.message_type == "assistant_message" for c in chunks)
    finally:
        again.stop()


def test_a_signal_while_starting_ends_everything(fake_llm: FakeLLMProcess, tmp_path: Path) -> None:
    server = start_server(fake_llm, tmp_path / "data", wait=False)
    try:
        deadline = time.monotonic() + 120
        members: list[psutil.Process] = []
        while time.monotonic() < deadline:  # until Ray is up under it, not yet serving
            members = server.members()
            if any(_name(p).startswith("raylet") for p in members):
                break
            time.sleep(0.2)
        assert httpx.get(f"{server.url}/v1/health/").status_code == 503
        server.send_signal("TERM-group")
        server.process.wait(STOP_TIMEOUT_SECONDS)
        _assert_nothing_left(server.members() + members, server)
    finally:
        server.stop()
