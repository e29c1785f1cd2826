"""Nothing lost: kill the whole server (SIGKILL, no goodbye) at random points of a stream of sends.

The test drives three conversations of one agent (two named ones and the agent's default one) with
a mix of send modes (step, token streaming, background, background the client leaves), and kills
``parley serve`` with every Ray process it started (GCS, raylet, workers, HAProxy) while a reply is
awaited, while tokens stream, while a background run works with nobody reading, or between sends.
Then it starts a new server on the same data directory (the embedded SQLite store) and checks:

- every acknowledged send (its full response arrived: stop reason ``end_turn`` and the whole reply)
  is still there, its user message and its reply, in order, once each;
- the store is consistent: every listed reply is whole (never a part of a stream) and follows its
  user message; a completed run shows both; no run is left ``running``; an interrupted run is
  ``failed`` with stop reason ``error`` and an error saying it was interrupted, its background
  stream replays to that end, and its turn is out of the model's context, where every complete
  turn is, in order;
- the conversations are free (nothing active, a new send succeeds at once with no 409) and work.

``PARLEY_CRASH_KILL_POINTS`` sets the number of kills (default 20), ``PARLEY_CRASH_SEED`` the seed
of the random choices and delays (printed: it repeats the choices; the timing is the machine's).
A server restart takes 10-25 s on the 2-core machine, so the 20 kills take 5-9 minutes.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from letta_client import Letta

from parley.processes import FakeLLMProcess, ServerProcess, start_server

pytestmark = pytest.mark.crash

KILL_POINTS = int(os.environ.get("PARLEY_CRASH_KILL_POINTS", "20"))
SEED = int(os.environ.get("PARLEY_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
# Where the kill lands; each is planned as often as the others, in a seeded random order.
PHASES = ("request", "stream", "background", "between")
MODES = ("step", "stream_tokens", "background", "detached")  # detached: background, client leaves
SERVER_ENV: dict[str, str] = {}
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()
REQUEST_TIMEOUT = 60.0
# Generous: the machine is shared, and a restart there took from 10 to 30 s.
TEST_TIMEOUT = 120 + 60 * KILL_POINTS


@dataclass
class Turn:
    """One send and what became of it."""

    conversation_id: str
    mode: str
    prompt: str
    reply: str  # what the fake provider answers to ``prompt``
    round: int
    stream_tokens: bool
    run_id: str | None = None
    state: str = "new"  # new -> sent -> receiving -> acked | detached, or ended by an error
    chunks: int = 0  # assistant chunks received
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def acked(self) -> bool:
        return self.state == "acked"

    @property
    def background(self) -> bool:
        return self.mode in ("background", "detached")


@dataclass
class Tally:
    kills: int = 0
    processes_killed: int = 0
    restarts: list[float] = field(default_factory=list)
    landed: Counter[str] = field(default_factory=Counter)  # where each in-flight send was at a kill
    checked_messages: int = 0  # acknowledged messages found again, summed over the checks
    interrupted_runs: int = 0
    replays: int = 0
    unacked_complete: int = 0  # runs that completed although their response was lost in the kill
    failed_starts: int = 0


class CrashRig:
    """One server at a time on one data directory, the sends made to it and what they acked."""

    def __init__(self, fake: FakeLLMProcess, data_dir: Path, rng: random.Random) -> None:
        self.fake = fake
        self.data_dir = data_dir
        self.rng = rng
        self.server: ServerProcess | None = None
        self.sessions: list[int] = []  # every server's pid: the session id of all it started
        self.letta: Letta | None = None
        self.http: httpx.Client | None = None
        self.agent_id = ""
        self.conversations: list[str] = []
        self.turns: list[Turn] = []
        self.by_prompt: dict[str, Turn] = {}
        self.round = 0
        self.tally = Tally()

    # --- the server ---------------------------------------------------------------------------------
    def start(self) -> None:
        log = self.data_dir / "server.log"
        if log.exists():  # keep each incarnation's log
            log.rename(self.data_dir / f"server-{len(self.sessions)}.log")
        began = time.monotonic()
        try:
            self.server = start_server(self.fake, self.data_dir, env=SERVER_ENV)
        except RuntimeError as exc:
            # Starting a server can fail on its own on a busy shared machine (a port picked as
            # free is taken before HAProxy binds it): once is allowed, a store it cannot open
            # would fail again.
            print(f"a server start failed, trying once more: {str(exc)[-300:]}")
            self.tally.failed_starts += 1
            self.server = start_server(self.fake, self.data_dir, env=SERVER_ENV)
        if self.sessions:
            self.tally.restarts.append(time.monotonic() - began)
        self.sessions.append(self.server.process.pid)
        self.letta = Letta(base_url=self.server.url, timeout=REQUEST_TIMEOUT, max_retries=0)
        self.http = httpx.Client(base_url=self.server.url, timeout=REQUEST_TIMEOUT)

    def crash(self) -> None:
        assert self.server is not None and self.letta is not None and self.http is not None
        self.tally.processes_killed += self.server.kill()
        self.tally.kills += 1
        self.letta.close()
        self.http.close()
        self.server = None

    def shut_down(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.http is not None:
            self.http.close()
        if self.letta is not None:
            self.letta.close()

    def survivors(self) -> list[str]:
        """Processes of any server this test started that are still alive."""
        found = []
        for proc in psutil.process_iter(["pid", "name", "status", "cmdline"]):
            try:
                ours = os.getsid(proc.pid) in self.sessions or str(self.data_dir) in (
                    proc.info["cmdline"] or []
                )
                if ours and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(f"{proc.pid} {proc.info['name']}")
            except (OSError, psutil.Error):
                continue
        return found

    def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        response = self.http.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    # --- sends --------------------------------------------------------------------------------------
    def set_up(self) -> None:
        assert self.letta is not None
        agent = self.letta.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
        self.agent_id = agent.id
        named = [self.letta.conversations.create(agent_id=agent.id).id for _ in range(2)]
        # The agent's own (default) conversation is addressed by the agent's id.
        self.conversations = [*named, agent.id]

    def new_turn(self, conversation_id: str, mode: str, directives: str = "", words: int = 0) -> Turn:
        tag = f"r{self.round:02d}n{len(self.turns):04d}"
        reply = " ".join([tag, *self.rng.choices(WORDS, k=words)])
        # Background runs stream tokens or not, at random (chosen here: the rng is not for threads).
        tokens = mode == "stream_tokens" or (mode in ("background", "detached") and self.rng.random() < 0.5)
        turn = Turn(conversation_id, mode, f"{directives}say {reply}", reply, self.round, tokens)
        self.turns.append(turn)
        self.by_prompt[turn.prompt] = turn
        return turn

    def run(self, turn: Turn) -> None:
        """Send ``turn`` and read its response; a send the kill cuts short ends with its error."""
        turn.state = "sent"
        try:
            if turn.mode == "step":
                self._step(turn)
            else:
                self._stream(turn)
        except Exception as exc:
            turn.error = f"{type(exc).__name__}: {exc}"
        finally:
            turn.done.set()

    def _step(self, turn: Turn) -> None:
        assert self.http is not None
        response = self.http.post(
            f"/v1/conversations/{turn.conversation_id}/messages",
            json={"messages": [{"role": "user", "content": turn.prompt}], "streaming": False},
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body = response.json()
        turn.state = "receiving"
        turn.run_id = body["usage"]["run_ids"][0]
        text = "".join(m["content"] for m in body["messages"] if m["message_type"] == "assistant_message")
        assert (body["stop_reason"]["stop_reason"], text) == ("end_turn", turn.reply), body
        turn.state = "acked"

    def _stream(self, turn: Turn) -> None:
        assert self.letta is not None
        stream = self.letta.conversations.messages.create(
            turn.conversation_id,
            messages=[{"role": "user", "content": turn.prompt}],
            stream_tokens=turn.stream_tokens,
            background=turn.background,
        )
        text: list[str] = []
        stop_reason = None
        usage = False
        for chunk in stream:
            turn.run_id = turn.run_id or getattr(chunk, "run_id", None)
            turn.state = "receiving"
            if turn.mode == "detached":
                stream.close()  # the client goes away; a background run goes on
                turn.state = "detached"
                return
            if chunk.message_type == "assistant_message":
                text.append(chunk.content)
                turn.chunks += 1
            elif chunk.message_type == "stop_reason":
                stop_reason = chunk.stop_reason
            elif chunk.message_type == "usage_statistics":
                usage = True
        assert (stop_reason, usage, "".join(text)) == ("end_turn", True, turn.reply), turn
        turn.state = "acked"

    def in_thread(self, turn: Turn) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(turn,), daemon=True)
        thread.start()
        return thread

    def fresh_sends(self) -> None:
        """A new send on every conversation at once, each in a random mode: all must succeed,
        at once (a conversation left busy would answer 409)."""
        turns = [self.new_turn(c, self.rng.choice(MODES[:3])) for c in self.conversations]
        for thread in [self.in_thread(t) for t in turns]:
            thread.join(REQUEST_TIMEOUT * 2)
        for turn in turns:
            assert turn.acked, f"a send after the restart failed: {turn}"

    # --- one kill -----------------------------------------------------------------------------------
    def crash_during(self, phase: str) -> list[str]:
        rng = self.rng
        target, other, _ = rng.sample(self.conversations, 3)
        latency = rng.uniform(0.2, 1.2)
        wait: Callable[[Turn], None]
        if phase == "request":  # waiting for the reply of a step send
            turn = self.new_turn(target, "step", f"[[latency={latency:.2f}]] ")
            delay = rng.uniform(0.0, latency + 0.3)

            def wait(turn: Turn) -> None:
                time.sleep(delay)

        elif phase == "stream":  # tokens arriving
            turn = self.new_turn(target, "stream_tokens", "[[token_delay=0.04]] ", words=24)
            wanted = rng.randint(1, 12)

            def wait(turn: Turn) -> None:
                _until(lambda: turn.chunks >= wanted or turn.done.is_set())
                time.sleep(rng.uniform(0.0, 0.05))

        elif phase == "background":  # a background run working for a client that left
            words = rng.randint(0, 16)
            # Its reply takes the latency, then 0.03 s a token when streamed; the kill comes
            # before, during or just after.
            directives = f"[[latency={latency:.2f}]] [[token_delay=0.03]] "
            turn = self.new_turn(target, "detached", directives, words=words)
            delay = rng.uniform(0.0, latency + 0.03 * words + 0.3)

            def wait(turn: Turn) -> None:
                _until(lambda: turn.done.is_set())
                time.sleep(delay)

        else:  # between sends: the last one answered, nothing in flight
            turn = self.new_turn(target, rng.choice(MODES[:3]))
            delay = rng.uniform(0.0, 0.3)

            def wait(turn: Turn) -> None:
                _until(lambda: turn.done.is_set())
                time.sleep(delay)

        in_flight = [turn]
        if rng.random() < 0.5:  # now and then another conversation is busy too
            in_flight.append(
                self.new_turn(other, rng.choice(MODES), f"[[latency={rng.uniform(0.0, 1.0):.2f}]] ")
            )
        threads = [self.in_thread(t) for t in in_flight]
        wait(turn)
        landed = [_where(each) for each in in_flight]
        self.tally.landed.update(landed)
        self.crash()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
            assert not thread.is_alive(), "a send did not end when its server was killed"
        return landed

    # --- the checks after a restart -----------------------------------------------------------------
    def check(self) -> None:
        runs = {r["id"]: r for r in self.get("/v1/runs", agent_id=self.agent_id, limit=1000, order="asc")}
        assert len(runs) < 1000, "raise the page size"
        left = {i: r["status"] for i, r in runs.items() if r["status"] not in ("completed", "failed")}
        assert not left, f"runs not ended after the restart: {left}"
        assert self.get("/v1/runs", agent_id=self.agent_id, active=True) == []
        for run in runs.values():
            if run["status"] == "completed":
                assert run["stop_reason"] == "end_turn", run
            else:
                assert run["stop_reason"] == "error", run
                assert "interrupted" in json.dumps(run["metadata"].get("error")), run
        contexts = self._stored_contexts()
        run_messages: dict[str, list[dict[str, Any]]] = {}
        for conversation_id in self.conversations:
            for message in self._check_conversation(conversation_id, runs, contexts[conversation_id]):
                run_messages.setdefault(message["run_id"], []).append(message)
        for run_id, run in runs.items():
            if run["status"] == "completed":  # a complete run shows its whole turn
                kinds = [m["message_type"] for m in run_messages.get(run_id, [])]
                assert kinds == ["user_message", "assistant_message"], (run, kinds)
        interrupted = {i for i, r in runs.items() if r["status"] == "failed"}
        self.tally.interrupted_runs = len(interrupted)
        self.tally.unacked_complete = sum(
            1
            for t in self.turns
            if t.run_id in runs and not t.acked and runs[t.run_id]["status"] == "completed"
        )
        self._check_replays(runs)

    def _check_conversation(
        self, conversation_id: str, runs: dict[str, dict[str, Any]], context: list[str]
    ) -> list[dict[str, Any]]:
        listed = self.get(f"/v1/conversations/{conversation_id}/messages", limit=1000, order="asc")
        assert len(listed) < 1000, "raise the page size"
        kinds = Counter(m["message_type"] for m in listed)
        assert set(kinds) <= {"system_message", "user_message", "assistant_message"}, kinds
        assert kinds["system_message"] == 1, kinds
        ids = [m["id"] for m in listed]
        assert len(set(ids)) == len(ids), "a message is listed twice"
        turns = [m for m in listed if m["message_type"] != "system_message"]
        prompts = [m["content"] for m in turns if m["message_type"] == "user_message"]
        assert len(set(prompts)) == len(prompts), "a user message is stored twice"
        # Each run: its user message, then (when it got that far) its whole reply.
        sent_by_run: dict[str, Turn] = {}
        seen: dict[str, list[str]] = {}
        for message in turns:
            run_id = message["run_id"]
            assert run_id in runs, f"a message of an unknown run: {message}"
            if message["message_type"] == "user_message":
                turn = self.by_prompt.get(message["content"])
                assert turn is not None and turn.conversation_id == conversation_id, message
                assert turn.run_id in (None, run_id), (turn, message)
                turn.run_id = run_id  # a step send cut short never told us its run
                sent_by_run[run_id] = turn
            else:
                assert run_id in sent_by_run, f"a reply before its user message: {message}"
                # Stored only when complete: never a part of a streamed reply.
                assert message["content"] == sent_by_run[run_id].reply, message
            seen.setdefault(run_id, []).append(message["message_type"])
        for run_id, run_kinds in seen.items():
            assert run_kinds in (["user_message"], ["user_message", "assistant_message"]), (run_id, run_kinds)
        # Every acknowledged send, in the order the acknowledgements came.
        position = {(m["run_id"], m["message_type"]): i for i, m in enumerate(listed)}
        order = []
        for turn in self.turns:
            if turn.conversation_id != conversation_id or not turn.acked:
                continue
            assert runs.get(turn.run_id or "", {}).get("status") == "completed", f"lost: {turn}"
            user = position.get((turn.run_id, "user_message"))
            reply = position.get((turn.run_id, "assistant_message"))
            assert user is not None and reply is not None, f"an acknowledged send is lost: {turn}"
            order += [user, reply]
            self.tally.checked_messages += 2
        assert order == sorted(order), "acknowledged messages are out of order"
        # The model's context: the system message, then the complete turns, in order; nothing of
        # an interrupted turn, and no id without its message.
        assert context[0] == listed[0]["id"] and listed[0]["message_type"] == "system_message"
        index = {m["id"]: i for i, m in enumerate(listed)}
        assert all(i in index for i in context), "the context names a message that is not stored"
        assert [index[i] for i in context] == sorted(index[i] for i in context), "context out of order"
        in_context = set(context)
        for message in turns:
            complete = runs[message["run_id"]]["status"] == "completed"
            assert (message["id"] in in_context) == complete, (
                f"{'a complete' if complete else 'an interrupted'} turn's message is "
                f"{'missing from' if complete else 'still in'} the context: {message}"
            )
        return turns

    def _stored_contexts(self) -> dict[str, list[str]]:
        """Each conversation's in-context message ids, from the store itself (what the model sees)."""
        db = sqlite3.connect(self.data_dir / "parley.db", timeout=10)
        try:
            rows = db.execute(
                f"SELECT id, data FROM conversations WHERE id IN ({','.join('?' * len(self.conversations))})",
                self.conversations,
            ).fetchall()
        finally:
            db.close()
        return {row[0]: json.loads(row[1])["in_context_message_ids"] for row in rows}

    def _check_replays(self, runs: dict[str, dict[str, Any]]) -> None:
        """The background runs of the round just killed replay to their recorded end: the whole
        reply, or for an interrupted one the error saying so."""
        for turn in self.turns:
            if turn.round != self.round or not turn.background or turn.run_id not in runs:
                continue
            run = runs[turn.run_id]
            events = self._replay(turn.run_id)
            kinds = [payload["message_type"] for payload in events]
            if run["status"] == "completed":
                assert kinds[-2:] == ["stop_reason", "usage_statistics"], (turn, kinds)
                assert events[-2]["stop_reason"] == "end_turn", (turn, events)
                text = "".join(p["content"] for p in events if p["message_type"] == "assistant_message")
                assert text == turn.reply, (turn, text)
            else:
                assert kinds[-3:] == ["stop_reason", "usage_statistics", "error_message"], (turn, kinds)
                assert events[-3]["stop_reason"] == "error", (turn, events)
                assert "interrupted" in events[-1]["message"], (turn, events)
            self.tally.replays += 1

    def _replay(self, run_id: str) -> list[dict[str, Any]]:
        """A run's stream from its start, read raw (the SDK raises at an ``error`` event)."""
        assert self.http is not None
        events = []
        with self.http.stream("POST", f"/v1/runs/{run_id}/stream", json={"starting_after": 0}) as response:
            assert response.status_code == 200, (run_id, response.status_code, response.read())
            for line in response.iter_lines():
                if line.startswith("data:"):
                    payload = line.removeprefix("data:").strip()
                    if payload == "[DONE]":
                        break
                    events.append(json.loads(payload))
        return events


def _until(condition: Callable[[], bool], timeout: float = REQUEST_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _where(turn: Turn) -> str:
    """Where a send was when the kill came."""
    if turn.state in ("new", "sent"):
        return "awaiting the reply"
    if turn.state == "receiving":
        return "mid-stream"
    if turn.state == "detached":
        return "background run, client gone"
    return "between sends"


@pytest.fixture
def rig(fake_llm: FakeLLMProcess, tmp_path: Path) -> Iterator[CrashRig]:
    rig = CrashRig(fake_llm, tmp_path / "data", random.Random(SEED))
    try:
        yield rig
    finally:
        if rig.server is not None:
            rig.crash()  # a failed check leaves one running: the quickest certain end
        survivors = rig.survivors()
        assert not survivors, f"processes of the test's servers survive: {survivors}"


@pytest.mark.timeout(TEST_TIMEOUT)
def test_kill_anywhere_loses_nothing_acknowledged(rig: CrashRig) -> None:
    print(f"\ncrash test: {KILL_POINTS} kill points, seed {SEED} (PARLEY_CRASH_SEED={SEED} repeats it)")
    began = time.monotonic()
    schedule = [PHASES[i % len(PHASES)] for i in range(KILL_POINTS)]
    rig.rng.shuffle(schedule)
    rig.start()
    rig.set_up()
    for point, phase in enumerate(schedule):
        rig.round = point
        rig.fresh_sends()
        landed = rig.crash_during(phase)
        rig.start()
        print(
            f"kill {point + 1}/{KILL_POINTS} ({phase}): {', '.join(landed)}; restarted in {rig.tally.restarts[-1]:.1f} s"
        )
        try:
            rig.check()
        except AssertionError:
            print(f"the checks after kill {point + 1} failed; seed {SEED}")
            raise
    rig.round = len(schedule)
    rig.fresh_sends()
    rig.check()
    rig.shut_down()
    tally = rig.tally
    acked = sum(1 for t in rig.turns if t.acked)
    print(
        f"survived {tally.kills} kills ({tally.processes_killed} processes killed) in "
        f"{time.monotonic() - began:.0f} s; restart median {statistics.median(tally.restarts):.1f} s, "
        f"max {max(tally.restarts):.1f} s\n"
        f"sends {len(rig.turns)}, acknowledged {acked} ({2 * acked} messages, "
        f"{tally.checked_messages} found again over all checks); interrupted runs {tally.interrupted_runs}, "
        f"completed but unacknowledged {tally.unacked_complete}, background replays checked {tally.replays}\n"
        f"where the kills found the sends in flight: {dict(tally.landed)}; failed server starts {tally.failed_starts}"
    )
