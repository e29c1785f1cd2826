"""``SqliteStore`` specifics on a temporary file: WAL, the file itself, rollback, several processes.

Behaviour every backend shares is in ``test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.agent import Agent, LLMConfig
from runtime.conversation import Conversation
from runtime.message import Message, TextPart
from runtime.store import Page
from runtime.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(10)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "parley.db")


@pytest.fixture
def store(db_path: str) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


def user_message(agent_id: str, conversation_id: str | None, text: str) -> Message:
    return Message(
        role="user", parts=[TextPart(text=text)], agent_id=agent_id, conversation_id=conversation_id
    )


def ids_of(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def add_agent(store: SqliteStore, name: str = "agent") -> Agent:
    agent = Agent(
        name=name,
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )
    run(store.create_agent(agent, []))
    return agent


def add_conversation(store: SqliteStore, agent: Agent) -> Conversation:
    conversation = Conversation(agent_id=agent.id)
    run(store.create_conversation(conversation))
    return conversation


def add_messages(store: SqliteStore, conversation: Conversation, count: int) -> list[Message]:
    messages = [user_message(conversation.agent_id, conversation.id, f"m{i}") for i in range(count)]
    run(store.append_messages(messages))
    return messages


# --- setup ----------------------------------------------------------------------------------------
def test_wal_mode_is_on(store: SqliteStore, db_path: str) -> None:
    with sqlite3.connect(db_path) as other:  # a fresh connection sees the persistent mode
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_creates_missing_parent_directory(db_path: str, store: SqliteStore) -> None:
    assert Path(db_path).is_file()


def test_reopening_keeps_data(db_path: str, store: SqliteStore) -> None:
    agent = add_agent(store)
    again = SqliteStore(db_path)
    try:
        assert run(again.get_agent(agent.id)) == agent
    finally:
        again.close()


# --- where calls run ------------------------------------------------------------------------------
def test_point_reads_do_not_wait_for_the_store_thread(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    busy = threading.Event()
    store._thread.submit(busy.wait, 5)  # the store thread is stuck (a long write, say)

    async def reads() -> tuple[Agent | None, Conversation | None]:
        async with asyncio.timeout(1):
            return await store.get_agent(agent.id), await store.get_conversation(conversation.id)

    try:
        assert run(reads()) == (agent, conversation)
    finally:
        busy.set()


def test_point_reads_do_not_wait_for_another_process_write_lock(store: SqliteStore, db_path: str) -> None:
    agent = add_agent(store)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock; in WAL mode readers go on
    other.execute("DELETE FROM agents WHERE id = ?", (agent.id,))

    async def read() -> Agent | None:
        async with asyncio.timeout(1):
            return await store.get_agent(agent.id)

    try:
        assert run(read()) == agent  # the last commit's, not the open transaction's deletion
    finally:
        other.execute("ROLLBACK")
        other.close()


# --- transactions ---------------------------------------------------------------------------------
def test_append_is_one_transaction_with_the_conversation(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    existing = add_messages(store, conversation, 1)[0]
    fresh = user_message(agent.id, conversation.id, "fresh")
    duplicate = existing.model_copy()  # same id: the insert fails
    fields = {"in_context_message_ids": [existing.id, fresh.id]}
    with pytest.raises(sqlite3.IntegrityError):
        run(store.append_messages([fresh, duplicate], fields))
    assert run(store.get_conversation(conversation.id)) == conversation
    assert run(store.get_messages([fresh.id])) == []
    assert ids_of(run(store.list_messages(conversation.id, Page()))) == [existing.id]
    # The connection is usable again (the transaction was rolled back, not left open).
    add_messages(store, conversation, 1)


# --- several processes ----------------------------------------------------------------------------
PER_PROCESS = 150
WAIT = 30.0


def _append_worker(conn: Connection) -> None:
    """Runs in a spawned process: on ``job`` open the store, report, wait for ``go``, append
    ``count`` messages one transaction each, report ``done`` (or the error)."""
    try:
        conn.send("ready")
        job = conn.recv()
    except EOFError:  # the module finished without needing us
        return
    path, agent_id, conversation_id, tag, count = job
    store = SqliteStore(path)

    async def append_all() -> None:
        for i in range(count):
            await store.append_messages([user_message(agent_id, conversation_id, f"{tag}-{i}")])

    try:
        conn.send("opened")
        conn.recv()  # go
        asyncio.run(append_all())
        conn.send("done")
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        store.close()


def _expect(conn: Connection, what: str) -> None:
    assert conn.poll(WAIT), f"worker did not send {what!r} in {WAIT}s"
    assert conn.recv() == what


@pytest.fixture(scope="module", autouse=True)
def append_workers() -> Iterator[list[Connection]]:
    """Two spawned processes, started with the module so their interpreter start overlaps the
    other tests instead of adding a second to the one that uses them."""
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs: list[SpawnProcess] = []
    for _ in range(2):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_append_worker, args=(theirs,), daemon=True)
        proc.start()
        theirs.close()
        conns.append(ours)
        procs.append(proc)
    yield conns
    for conn in conns:
        conn.close()
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


def test_two_processes_append_concurrently(
    store: SqliteStore, db_path: str, append_workers: list[Connection]
) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    tags = ["a", "b"]
    for conn in append_workers:
        _expect(conn, "ready")
    for conn, tag in zip(append_workers, tags, strict=True):
        conn.send((db_path, agent.id, conversation.id, tag, PER_PROCESS))
    for conn in append_workers:
        _expect(conn, "opened")
    for conn in append_workers:
        conn.send("go")
    for conn in append_workers:
        _expect(conn, "done")

    stored = run(store.list_messages(conversation.id, Page(order="asc", limit=10_000)))
    assert len(stored) == 2 * PER_PROCESS
    positions = [m.position for m in stored]
    assert len(set(positions)) == len(positions)
    assert positions == sorted(positions)
    for tag in tags:
        texts = [m.text() for m in stored if m.text().startswith(f"{tag}-")]
        assert texts == [f"{tag}-{i}" for i in range(PER_PROCESS)]
