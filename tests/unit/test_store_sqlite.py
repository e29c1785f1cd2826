"""``SqliteStore`` on a temporary file: rows, listings, cursors, transactions, several processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import Coroutine, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.agent import Agent, Block, LLMConfig
from runtime.conversation import Conversation
from runtime.message import Message, TextPart
from runtime.run import Run, RunStatus, StopReason
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


def make_agent(
    name: str = "agent", tags: list[str] | None = None, block_ids: list[str] | None = None
) -> Agent:
    return Agent(
        name=name,
        tags=tags or [],
        block_ids=block_ids or [],
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )


def user_message(agent_id: str, conversation_id: str | None, text: str, run_id: str | None = None) -> Message:
    return Message(
        role="user",
        parts=[TextPart(text=text)],
        agent_id=agent_id,
        conversation_id=conversation_id,
        run_id=run_id,
    )


def ids_of(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def add_agent(store: SqliteStore, name: str = "agent", tags: list[str] | None = None) -> Agent:
    agent = make_agent(name, tags)
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


# --- agents ---------------------------------------------------------------------------------------
def test_agent_create_get_roundtrip(store: SqliteStore) -> None:
    persona = Block(label="persona", value="I help.")
    agent = make_agent("alice", ["t1"], [persona.id])
    run(store.create_agent(agent, [persona]))
    assert run(store.get_agent(agent.id)) == agent
    assert run(store.get_blocks([persona.id])) == [persona]
    assert run(store.get_agent("agent-missing")) is None


def test_agent_update_replaces_row_tags_and_adds_blocks(store: SqliteStore) -> None:
    agent = add_agent(store, "before", ["old"])
    extra = Block(label="extra", value="more")
    updated = agent.model_copy(update={"name": "after", "tags": ["new"], "block_ids": [extra.id]})
    run(store.update_agent(updated, [extra]))
    assert run(store.get_agent(agent.id)) == updated
    assert ids_of(run(store.list_agents(Page(), name="after"))) == [agent.id]
    assert run(store.list_agents(Page(), name="before")) == []
    assert ids_of(run(store.list_agents(Page(), tags=["new"]))) == [agent.id]
    assert run(store.list_agents(Page(), tags=["old"])) == []
    assert run(store.get_blocks([extra.id])) == [extra]


def test_agent_delete_cascades(store: SqliteStore) -> None:
    own = Block(label="persona", value="mine")
    agent = make_agent("doomed", ["t"], [own.id])
    run(store.create_agent(agent, [own]))
    conversation = add_conversation(store, agent)
    messages = add_messages(store, conversation, 3)
    agent_run = Run(agent_id=agent.id, conversation_id=conversation.id)
    run(store.create_run(agent_run))

    # Another agent that shares the first agent's block and owns its own data must survive.
    theirs = Block(label="human", value="theirs")
    other = make_agent("survivor", ["t"], [theirs.id, own.id])
    run(store.create_agent(other, [theirs]))
    other_conversation = add_conversation(store, other)
    other_messages = add_messages(store, other_conversation, 2)
    other_run = Run(agent_id=other.id, conversation_id=other_conversation.id)
    run(store.create_run(other_run))

    assert run(store.delete_agent(agent.id)) is True
    assert run(store.get_agent(agent.id)) is None
    assert run(store.get_conversation(conversation.id)) is None
    assert run(store.get_messages(ids_of(messages))) == []
    assert run(store.list_messages(conversation.id, Page())) == []
    assert run(store.get_run(agent_run.id)) is None
    assert run(store.get_blocks([own.id])) == []
    assert ids_of(run(store.list_agents(Page(), tags=["t"]))) == [other.id]

    assert run(store.get_agent(other.id)) == other
    assert run(store.get_conversation(other_conversation.id)) == other_conversation
    assert ids_of(run(store.get_messages(ids_of(other_messages)))) == ids_of(other_messages)
    assert run(store.get_run(other_run.id)) is not None
    assert run(store.get_blocks([theirs.id])) == [theirs]

    assert run(store.delete_agent(agent.id)) is False


def test_get_blocks_in_requested_order_skipping_missing(store: SqliteStore) -> None:
    blocks = [Block(label=f"b{i}", value=str(i)) for i in range(4)]
    run(store.create_agent(make_agent(block_ids=ids_of(blocks)), blocks))
    wanted = [blocks[2].id, "block-missing", blocks[0].id, blocks[3].id]
    assert ids_of(run(store.get_blocks(wanted))) == [blocks[2].id, blocks[0].id, blocks[3].id]
    assert run(store.get_blocks([])) == []


# --- agent listings -------------------------------------------------------------------------------
@pytest.fixture
def four_agents(store: SqliteStore) -> list[str]:
    """Created oldest first: a0, a1, a2, a3."""
    return [add_agent(store, f"a{i}").id for i in range(4)]


def test_list_agents_default_is_newest_first(store: SqliteStore, four_agents: list[str]) -> None:
    assert ids_of(run(store.list_agents(Page()))) == four_agents[::-1]


def test_list_agents_asc(store: SqliteStore, four_agents: list[str]) -> None:
    assert ids_of(run(store.list_agents(Page(order="asc")))) == four_agents


def test_list_agents_limit(store: SqliteStore, four_agents: list[str]) -> None:
    a0, a1, a2, a3 = four_agents
    assert ids_of(run(store.list_agents(Page(limit=2)))) == [a3, a2]
    assert ids_of(run(store.list_agents(Page(limit=2, order="asc")))) == [a0, a1]


@pytest.mark.parametrize(
    ("order", "after", "before", "limit", "expected"),
    [
        # after = the rows that follow the cursor in the requested order
        ("desc", 2, None, 50, [1, 0]),
        ("asc", 1, None, 50, [2, 3]),
        # before = the rows that precede the cursor in the requested order, nearest kept by limit
        ("desc", None, 1, 50, [3, 2]),
        ("asc", None, 2, 50, [0, 1]),
        ("desc", None, 0, 2, [2, 1]),
        ("asc", None, 3, 2, [1, 2]),
        # both: the rows between them
        ("desc", 3, 0, 50, [2, 1]),
        ("asc", 0, 3, 50, [1, 2]),
        ("desc", 3, None, 1, [2]),
    ],
)
def test_list_agents_cursors_are_relative_to_order(
    store: SqliteStore,
    four_agents: list[str],
    order: str,
    after: int | None,
    before: int | None,
    limit: int,
    expected: list[int],
) -> None:
    page = Page(
        limit=limit,
        order=order,  # type: ignore[arg-type]
        after=None if after is None else four_agents[after],
        before=None if before is None else four_agents[before],
    )
    assert ids_of(run(store.list_agents(page))) == [four_agents[i] for i in expected]


def test_list_agents_unknown_cursor_is_ignored(store: SqliteStore, four_agents: list[str]) -> None:
    page = Page(after="agent-unknown", before="agent-unknown")
    assert ids_of(run(store.list_agents(page))) == four_agents[::-1]


def test_list_agents_name_filter(store: SqliteStore) -> None:
    a = add_agent(store, "same")
    add_agent(store, "different")
    b = add_agent(store, "same")
    assert ids_of(run(store.list_agents(Page(), name="same"))) == [b.id, a.id]
    assert run(store.list_agents(Page(), name="nobody")) == []


def test_list_agents_tags_any_and_all(store: SqliteStore) -> None:
    x = add_agent(store, "x", ["x"])
    xy = add_agent(store, "xy", ["x", "y"])
    y = add_agent(store, "y", ["y"])
    add_agent(store, "none", [])
    any_ = run(store.list_agents(Page(order="asc"), tags=["x", "y"]))
    assert ids_of(any_) == [x.id, xy.id, y.id]
    all_ = run(store.list_agents(Page(order="asc"), tags=["x", "y"], match_all_tags=True))
    assert ids_of(all_) == [xy.id]
    assert ids_of(run(store.list_agents(Page(order="asc"), tags=["x"], match_all_tags=True))) == [x.id, xy.id]
    assert run(store.list_agents(Page(), tags=["x", "z"], match_all_tags=True)) == []


def test_list_agents_tags_and_name_combine_with_cursor(store: SqliteStore) -> None:
    first = add_agent(store, "n", ["t"])
    add_agent(store, "other", ["t"])
    second = add_agent(store, "n", ["t"])
    third = add_agent(store, "n", ["t"])
    page = Page(after=third.id)
    assert ids_of(run(store.list_agents(page, name="n", tags=["t"]))) == [second.id, first.id]


# --- conversations --------------------------------------------------------------------------------
def test_conversation_create_get_update(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    assert run(store.get_conversation(conversation.id)) == conversation
    assert run(store.get_conversation("conv-missing")) is None
    fields = {"summary": "talked", "in_context_message_ids": ["message-1"]}
    updated = run(store.update_conversation(conversation.id, fields))
    assert updated == conversation.model_copy(update=fields)
    assert run(store.get_conversation(conversation.id)) == updated
    assert run(store.update_conversation("conv-missing", fields)) is None


def test_conversation_update_keeps_fields_it_does_not_name(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    run(store.update_conversation(conversation.id, {"in_context_message_ids": ["message-1"]}))
    run(store.update_conversation(conversation.id, {"summary": "patched"}))
    stored = run(store.get_conversation(conversation.id))
    assert stored is not None
    assert (stored.summary, stored.in_context_message_ids) == ("patched", ["message-1"])


def test_list_conversations_by_agent_and_order(store: SqliteStore) -> None:
    a, b = add_agent(store, "a"), add_agent(store, "b")
    a1 = add_conversation(store, a)
    b1 = add_conversation(store, b)
    a2 = add_conversation(store, a)
    a3 = add_conversation(store, a)
    assert ids_of(run(store.list_conversations(a.id, Page()))) == [a3.id, a2.id, a1.id]
    assert ids_of(run(store.list_conversations(a.id, Page(order="asc")))) == [a1.id, a2.id, a3.id]
    assert ids_of(run(store.list_conversations(b.id, Page()))) == [b1.id]
    assert ids_of(run(store.list_conversations(None, Page(order="asc")))) == [a1.id, b1.id, a2.id, a3.id]
    assert ids_of(run(store.list_conversations(a.id, Page(after=a3.id, limit=1)))) == [a2.id]
    assert ids_of(run(store.list_conversations(a.id, Page(before=a1.id, limit=1)))) == [a2.id]


def test_conversation_delete_removes_its_messages_only(store: SqliteStore) -> None:
    agent = add_agent(store)
    doomed, kept = add_conversation(store, agent), add_conversation(store, agent)
    doomed_messages = add_messages(store, doomed, 3)
    kept_messages = add_messages(store, kept, 2)
    doomed_run = Run(agent_id=agent.id, conversation_id=doomed.id)
    run(store.create_run(doomed_run))

    assert run(store.delete_conversation(doomed.id)) is True
    assert run(store.get_conversation(doomed.id)) is None
    assert run(store.get_messages(ids_of(doomed_messages))) == []
    assert run(store.get_run(doomed_run.id)) is None
    assert ids_of(run(store.list_messages(kept.id, Page(order="asc")))) == ids_of(kept_messages)
    assert run(store.get_agent(agent.id)) is not None
    assert run(store.delete_conversation(doomed.id)) is False


# --- messages -------------------------------------------------------------------------------------
def test_append_assigns_increasing_positions(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    first = add_messages(store, conversation, 3)
    second = add_messages(store, conversation, 2)
    positions = [m.position for m in first + second]
    assert all(isinstance(p, int) for p in positions)
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    stored = run(store.list_messages(conversation.id, Page(order="asc")))
    assert [m.position for m in stored] == positions
    assert [m.text() for m in stored] == ["m0", "m1", "m2", "m0", "m1"]


def test_append_saves_conversation_with_messages(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    message = user_message(agent.id, conversation.id, "hello")
    fields = {"in_context_message_ids": [message.id]}
    run(store.append_messages([message], fields))
    assert run(store.get_conversation(conversation.id)) == conversation.model_copy(update=fields)


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


@pytest.fixture
def five_messages(store: SqliteStore) -> tuple[Conversation, list[str]]:
    """m0 (oldest) .. m4 (newest), with another conversation's messages interleaved."""
    agent = add_agent(store)
    conversation, other = add_conversation(store, agent), add_conversation(store, agent)
    found = []
    for _ in range(5):
        found += add_messages(store, conversation, 1)
        add_messages(store, other, 1)
    return conversation, ids_of(found)


@pytest.mark.parametrize(
    ("order", "after", "before", "limit", "expected"),
    [
        ("desc", None, None, 50, [4, 3, 2, 1, 0]),
        ("asc", None, None, 50, [0, 1, 2, 3, 4]),
        ("desc", None, None, 2, [4, 3]),
        ("asc", None, None, 2, [0, 1]),
        # after = newer than the cursor, whatever the order
        ("asc", 1, None, 50, [2, 3, 4]),
        ("desc", 1, None, 50, [4, 3, 2]),
        # before = older than the cursor, whatever the order
        ("asc", None, 3, 50, [0, 1, 2]),
        ("desc", None, 3, 50, [2, 1, 0]),
        ("desc", None, 3, 2, [2, 1]),
        # both
        ("asc", 0, 4, 50, [1, 2, 3]),
        ("desc", 0, 4, 50, [3, 2, 1]),
        ("asc", 4, None, 50, []),
    ],
)
def test_list_messages_absolute_cursors(
    store: SqliteStore,
    five_messages: tuple[Conversation, list[str]],
    order: str,
    after: int | None,
    before: int | None,
    limit: int,
    expected: list[int],
) -> None:
    conversation, message_ids = five_messages
    page = Page(
        limit=limit,
        order=order,  # type: ignore[arg-type]
        after=None if after is None else message_ids[after],
        before=None if before is None else message_ids[before],
    )
    assert ids_of(run(store.list_messages(conversation.id, page))) == [message_ids[i] for i in expected]


def test_list_messages_unknown_cursor_is_ignored(
    store: SqliteStore, five_messages: tuple[Conversation, list[str]]
) -> None:
    conversation, message_ids = five_messages
    page = Page(order="asc", after="message-unknown", before="message-unknown")
    assert ids_of(run(store.list_messages(conversation.id, page))) == message_ids


def test_list_messages_positions_set(
    store: SqliteStore, five_messages: tuple[Conversation, list[str]]
) -> None:
    conversation, _ = five_messages
    positions = [m.position for m in run(store.list_messages(conversation.id, Page(order="asc")))]
    assert all(p is not None for p in positions)
    assert positions == sorted(positions)


def test_get_messages_keeps_requested_order(
    store: SqliteStore, five_messages: tuple[Conversation, list[str]]
) -> None:
    _, message_ids = five_messages
    wanted = [message_ids[3], "message-missing", message_ids[0], message_ids[4]]
    found = run(store.get_messages(wanted))
    assert ids_of(found) == [message_ids[3], message_ids[0], message_ids[4]]
    assert all(m.position is not None for m in found)
    assert run(store.get_messages([])) == []


def test_replace_message_keeps_position(
    store: SqliteStore, five_messages: tuple[Conversation, list[str]]
) -> None:
    conversation, message_ids = five_messages
    [original] = run(store.get_messages([message_ids[2]]))
    rewritten = original.model_copy(update={"parts": [TextPart(text="rewritten")]})
    run(store.replace_message(rewritten))
    [stored] = run(store.get_messages([message_ids[2]]))
    assert stored.text() == "rewritten"
    assert stored.position == original.position
    listed = run(store.list_messages(conversation.id, Page(order="asc")))
    assert ids_of(listed) == message_ids
    assert listed[2].text() == "rewritten"


# --- runs -----------------------------------------------------------------------------------------
def test_run_create_update_get(store: SqliteStore) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    created = Run(agent_id=agent.id, conversation_id=conversation.id, status=RunStatus.running)
    run(store.create_run(created))
    assert run(store.get_run(created.id)) == created
    finished = created.model_copy(
        update={"status": RunStatus.completed, "stop_reason": StopReason.end_turn, "metadata": {"k": 1}}
    )
    run(store.update_run(finished))
    assert run(store.get_run(created.id)) == finished
    assert run(store.get_run("run-missing")) is None


def test_list_runs_filters(store: SqliteStore) -> None:
    a, b = add_agent(store, "a"), add_agent(store, "b")
    ca, cb = add_conversation(store, a), add_conversation(store, b)
    r1 = Run(agent_id=a.id, conversation_id=ca.id, status=RunStatus.running)
    r2 = Run(agent_id=a.id, conversation_id=ca.id, status=RunStatus.completed)
    r3 = Run(agent_id=b.id, conversation_id=cb.id, status=RunStatus.running)
    r4 = Run(agent_id=a.id, conversation_id=ca.id, status=RunStatus.failed)
    for r in (r1, r2, r3, r4):
        run(store.create_run(r))

    assert ids_of(run(store.list_runs(Page()))) == [r4.id, r3.id, r2.id, r1.id]
    assert ids_of(run(store.list_runs(Page(order="asc"), agent_ids=[a.id]))) == [r1.id, r2.id, r4.id]
    assert ids_of(run(store.list_runs(Page(), conversation_id=cb.id))) == [r3.id]
    assert ids_of(run(store.list_runs(Page(), statuses=["running"]))) == [r3.id, r1.id]
    running_or_failed = run(store.list_runs(Page(), agent_ids=[a.id], statuses=["running", "failed"]))
    assert ids_of(running_or_failed) == [r4.id, r1.id]

    # The status column follows updates.
    run(store.update_run(r1.model_copy(update={"status": RunStatus.cancelled})))
    assert ids_of(run(store.list_runs(Page(), statuses=["running"]))) == [r3.id]
    assert ids_of(run(store.list_runs(Page(), statuses=["cancelled"]))) == [r1.id]
    assert ids_of(run(store.list_runs(Page(after=r4.id, limit=2)))) == [r3.id, r2.id]


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


def test_update_block_sets_only_named_fields(store: SqliteStore) -> None:
    block = Block(label="human", value="original")
    agent = make_agent("with-block", None).model_copy(update={"block_ids": [block.id]})
    run(store.create_agent(agent, [block]))
    updated = run(store.update_block(block.id, {"value": "changed"}))
    assert updated is not None and updated.value == "changed" and updated.label == block.label
    assert run(store.get_blocks([block.id]))[0].value == "changed"
    assert run(store.update_block("block-missing", {"value": "x"})) is None
