"""The ``Store`` contract, run against every backend: SQLite on a temporary file and Redis on a
private ``redis-server`` started for this module (flushed before each test).

SQLite-only behaviour (WAL, several processes on one file) stays in ``test_store_sqlite.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, KeysView, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from parley.processes import start_redis
from runtime.agent import Agent, Block, LLMConfig
from runtime.clock import utcnow
from runtime.conversation import Conversation
from runtime.errors import Conflict
from runtime.message import Message, TextPart, ToolReturnPart
from runtime.run import Run, RunStatus, StopReason
from runtime.store import Page, Store, open_store
from runtime.store.redis import RedisStore
from runtime.store.sqlite import SqliteStore
from runtime.tools.tool import LETTA_CORE, Tool

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")

BACKENDS = ["sqlite", "redis"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- the Redis server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="parley-redis-") as workdir:
        try:
            server = start_redis(workdir)
        except RuntimeError as exc:  # no redis-server: these tests fail, they are never skipped
            pytest.fail(f"the Redis store contract tests need redis-server: {exc}", pytrace=False)
        try:
            yield server.url
        finally:
            server.stop()


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- stores ---------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(str(tmp_path / "store" / "parley.db"))
    else:
        url = request.getfixturevalue("redis_url")
        _flush(url)
        s = RedisStore(url)
    yield s
    s.close()


@pytest.fixture
def reopen(store: Store) -> Iterator[Callable[[], Store]]:
    """Opens another store on the same data: another connection, as another process would have."""
    opened: list[Store] = []

    def open_again() -> Store:
        if isinstance(store, SqliteStore):
            another = open_store(f"sqlite://{store.path}")
        else:
            assert isinstance(store, RedisStore)
            another = open_store(store.url)
        opened.append(another)
        return another

    yield open_again
    for another in opened:
        another.close()


# --- builders -------------------------------------------------------------------------------------
def make_agent(
    name: str = "agent",
    tags: list[str] | None = None,
    block_ids: list[str] | None = None,
    hidden: bool = False,
) -> Agent:
    return Agent(
        name=name,
        tags=tags or [],
        block_ids=block_ids or [],
        hidden=hidden or None,
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


def make_tool(name: str, tool_type: str = "custom", description: str = "") -> Tool:
    return Tool(name=name, tool_type=tool_type, description=description, json_schema={"name": name})


def ids_of(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def add_agent(
    store: Store, name: str = "agent", tags: list[str] | None = None, hidden: bool = False
) -> Agent:
    agent = make_agent(name, tags, hidden=hidden)
    run(store.create_agent(agent, []))
    return agent


def add_conversation(store: Store, agent: Agent, **fields: Any) -> Conversation:
    conversation = Conversation(agent_id=agent.id, **fields)
    assert run(store.create_conversation(conversation))
    return conversation


def add_messages(
    store: Store, conversation: Conversation, count: int, run_id: str | None = None
) -> list[Message]:
    messages = [user_message(conversation.agent_id, conversation.id, f"m{i}", run_id) for i in range(count)]
    run(store.append_messages(messages))
    return messages


def add_run(store: Store, agent: Agent, conversation: Conversation | None = None, **fields: Any) -> Run:
    created = Run(agent_id=agent.id, conversation_id=conversation.id if conversation else None, **fields)
    run(store.create_run(created))
    return created


# --- agents ---------------------------------------------------------------------------------------
def test_agent_create_get_roundtrip(store: Store) -> None:
    persona = Block(label="persona", value="I help.")
    agent = make_agent("alice", ["t1"], [persona.id])
    run(store.create_agent(agent, [persona]))
    assert run(store.get_agent(agent.id)) == agent
    assert run(store.get_blocks([persona.id])) == [persona]
    assert run(store.get_agent("agent-missing")) is None


def test_agent_update_replaces_row_tags_and_adds_blocks(store: Store) -> None:
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


def test_agent_delete_cascades(store: Store) -> None:
    own = Block(label="persona", value="mine")
    agent = make_agent("doomed", ["t"], [own.id])
    run(store.create_agent(agent, [own]))
    conversation = add_conversation(store, agent)
    default = Conversation.default_for(agent.id)
    run(store.create_conversation(default))
    agent_run = add_run(store, agent, conversation)
    messages = add_messages(store, conversation, 3, run_id=agent_run.id)
    messages += add_messages(store, default, 2)

    # Another agent that shares the first agent's block and owns its own data must survive.
    theirs = Block(label="human", value="theirs")
    other = make_agent("survivor", ["t"], [theirs.id, own.id])
    run(store.create_agent(other, [theirs]))
    other_conversation = add_conversation(store, other)
    other_messages = add_messages(store, other_conversation, 2)
    other_run = add_run(store, other, other_conversation)

    assert run(store.delete_agent(agent.id)) is True
    assert run(store.get_agent(agent.id)) is None
    assert run(store.get_conversation(conversation.id)) is None
    assert run(store.get_conversation(default.id)) is None
    assert run(store.get_messages(ids_of(messages))) == []
    assert run(store.list_messages(conversation.id, Page())) == []
    assert run(store.list_agent_messages(agent.id, Page())) == []
    assert run(store.list_run_messages(agent_run.id, Page())) == []
    assert run(store.list_conversations(agent.id, Page())) == []
    assert run(store.get_run(agent_run.id)) is None
    assert run(store.list_runs(Page(), agent_ids=[agent.id])) == []
    assert run(store.get_blocks([own.id])) == []
    assert ids_of(run(store.list_agents(Page(), tags=["t"]))) == [other.id]
    assert ids_of(run(store.list_agents(Page()))) == [other.id]

    assert run(store.get_agent(other.id)) == other
    assert run(store.get_conversation(other_conversation.id)) == other_conversation
    assert ids_of(run(store.get_messages(ids_of(other_messages)))) == ids_of(other_messages)
    assert ids_of(run(store.list_conversations(None, Page()))) == [other_conversation.id]
    assert ids_of(run(store.list_runs(Page()))) == [other_run.id]
    assert run(store.get_blocks([theirs.id])) == [theirs]

    assert run(store.delete_agent(agent.id)) is False


def test_get_blocks_in_requested_order_skipping_missing(store: Store) -> None:
    blocks = [Block(label=f"b{i}", value=str(i)) for i in range(4)]
    run(store.create_agent(make_agent(block_ids=ids_of(blocks)), blocks))
    wanted = [blocks[2].id, "block-missing", blocks[0].id, blocks[3].id]
    assert ids_of(run(store.get_blocks(wanted))) == [blocks[2].id, blocks[0].id, blocks[3].id]
    assert run(store.get_blocks([])) == []


def test_hidden_agents_are_never_listed(store: Store) -> None:
    visible = add_agent(store, "same", ["t"])
    hidden = add_agent(store, "same", ["t"], hidden=True)
    assert run(store.get_agent(hidden.id)) == hidden
    assert ids_of(run(store.list_agents(Page()))) == [visible.id]
    assert ids_of(run(store.list_agents(Page(), name="same"))) == [visible.id]
    assert ids_of(run(store.list_agents(Page(), tags=["t"], match_all_tags=True))) == [visible.id]
    # A hidden agent's id still works as a cursor.
    assert ids_of(run(store.list_agents(Page(after=hidden.id)))) == [visible.id]


# --- agent listings -------------------------------------------------------------------------------
@pytest.fixture
def four_agents(store: Store) -> list[str]:
    """Created oldest first: a0, a1, a2, a3."""
    return [add_agent(store, f"a{i}").id for i in range(4)]


def test_list_agents_default_is_newest_first(store: Store, four_agents: list[str]) -> None:
    assert ids_of(run(store.list_agents(Page()))) == four_agents[::-1]


def test_list_agents_asc(store: Store, four_agents: list[str]) -> None:
    assert ids_of(run(store.list_agents(Page(order="asc")))) == four_agents


def test_list_agents_limit(store: Store, four_agents: list[str]) -> None:
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
    store: Store,
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


def test_list_agents_unknown_cursor_is_ignored(store: Store, four_agents: list[str]) -> None:
    page = Page(after="agent-unknown", before="agent-unknown")
    assert ids_of(run(store.list_agents(page))) == four_agents[::-1]


def test_list_agents_name_filter(store: Store) -> None:
    a = add_agent(store, "same")
    add_agent(store, "different")
    b = add_agent(store, "same")
    assert ids_of(run(store.list_agents(Page(), name="same"))) == [b.id, a.id]
    assert run(store.list_agents(Page(), name="nobody")) == []


def test_list_agents_tags_any_and_all(store: Store) -> None:
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


def test_list_agents_tags_and_name_combine_with_cursor(store: Store) -> None:
    first = add_agent(store, "n", ["t"])
    add_agent(store, "other", ["t"])
    second = add_agent(store, "n", ["t"])
    third = add_agent(store, "n", ["t"])
    page = Page(after=third.id)
    assert ids_of(run(store.list_agents(page, name="n", tags=["t"]))) == [second.id, first.id]


def test_list_limit_counts_rows_after_filtering(store: Store) -> None:
    wanted = [add_agent(store, "wanted").id]
    for _ in range(250):  # more than one batch of rows that the filter drops
        add_agent(store, "noise")
    wanted += [add_agent(store, "wanted").id for _ in range(2)]
    assert ids_of(run(store.list_agents(Page(limit=2, order="asc"), name="wanted"))) == wanted[:2]
    assert ids_of(run(store.list_agents(Page(limit=5), name="wanted"))) == wanted[::-1]
    assert run(store.list_agents(Page(limit=5), name="nobody")) == []


# --- conversations --------------------------------------------------------------------------------
def test_conversation_create_get_update(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    assert run(store.get_conversation(conversation.id)) == conversation
    assert run(store.get_conversation("conv-missing")) is None
    fields = {"summary": "talked", "in_context_message_ids": ["message-1"]}
    updated = run(store.update_conversation(conversation.id, fields))
    assert updated == conversation.model_copy(update=fields)
    assert run(store.get_conversation(conversation.id)) == updated
    assert run(store.update_conversation("conv-missing", fields)) is None


def test_conversation_create_is_false_when_id_taken(store: Store) -> None:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    conversation = add_conversation(store, agent, summary="first")
    clash = Conversation(id=conversation.id, agent_id=other.id, summary="second")
    assert run(store.create_conversation(clash)) is False
    assert run(store.get_conversation(conversation.id)) == conversation
    assert run(store.list_conversations(other.id, Page())) == []
    assert ids_of(run(store.list_conversations(None, Page()))) == [conversation.id]


def test_conversation_update_keeps_fields_it_does_not_name(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    run(store.update_conversation(conversation.id, {"in_context_message_ids": ["message-1"]}))
    run(store.update_conversation(conversation.id, {"summary": "patched"}))
    stored = run(store.get_conversation(conversation.id))
    assert stored is not None
    assert (stored.summary, stored.in_context_message_ids) == ("patched", ["message-1"])


def test_list_conversations_by_agent_and_order(store: Store) -> None:
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


def test_default_and_ephemeral_conversations_are_never_listed(store: Store) -> None:
    agent = add_agent(store)
    listed = add_conversation(store, agent)
    ephemeral = add_conversation(store, agent, ephemeral=True)
    default = Conversation.default_for(agent.id)
    assert run(store.create_conversation(default))
    for stored in (ephemeral, default):
        assert run(store.get_conversation(stored.id)) == stored
    assert ids_of(run(store.list_conversations(agent.id, Page()))) == [listed.id]
    assert ids_of(run(store.list_conversations(None, Page()))) == [listed.id]
    assert ids_of(run(store.list_conversations(None, Page(before=ephemeral.id)))) == []
    assert ids_of(run(store.list_conversations(agent.id, Page(after=default.id)))) == [listed.id]


def test_conversation_delete_removes_its_messages_only(store: Store) -> None:
    agent = add_agent(store)
    doomed, kept = add_conversation(store, agent), add_conversation(store, agent)
    doomed_run = add_run(store, agent, doomed)
    doomed_messages = add_messages(store, doomed, 3, run_id=doomed_run.id)
    kept_messages = add_messages(store, kept, 2)

    assert run(store.delete_conversation(doomed.id)) is True
    assert run(store.get_conversation(doomed.id)) is None
    assert run(store.get_messages(ids_of(doomed_messages))) == []
    assert run(store.get_run(doomed_run.id)) is None
    assert ids_of(run(store.list_messages(kept.id, Page(order="asc")))) == ids_of(kept_messages)
    assert ids_of(run(store.list_agent_messages(agent.id, Page(order="asc")))) == ids_of(kept_messages)
    assert ids_of(run(store.list_conversations(agent.id, Page()))) == [kept.id]
    assert run(store.list_runs(Page())) == []
    assert run(store.list_run_messages(doomed_run.id, Page())) == []
    assert run(store.get_agent(agent.id)) is not None
    assert run(store.delete_conversation(doomed.id)) is False


# --- messages -------------------------------------------------------------------------------------
def test_append_assigns_increasing_positions(store: Store) -> None:
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


def test_append_saves_conversation_with_messages(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    message = user_message(agent.id, conversation.id, "hello")
    fields = {"in_context_message_ids": [message.id]}
    run(store.append_messages([message], fields))
    assert run(store.get_conversation(conversation.id)) == conversation.model_copy(update=fields)


def test_append_patch_keeps_fields_it_does_not_name(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    run(store.update_conversation(conversation.id, {"summary": "set over HTTP"}))
    message = user_message(agent.id, conversation.id, "hello")
    run(store.append_messages([message], {"in_context_message_ids": [message.id]}))
    stored = run(store.get_conversation(conversation.id))
    assert stored is not None
    assert (stored.summary, stored.in_context_message_ids) == ("set over HTTP", [message.id])


def test_append_with_a_taken_id_writes_nothing(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    existing = add_messages(store, conversation, 1)[0]
    fresh = user_message(agent.id, conversation.id, "fresh")
    duplicate = existing.model_copy()  # same id: the append fails as a whole
    fields = {"in_context_message_ids": [existing.id, fresh.id]}
    with pytest.raises((sqlite3.IntegrityError, Conflict)):
        run(store.append_messages([fresh, duplicate], fields))
    assert run(store.get_conversation(conversation.id)) == conversation
    assert run(store.get_messages([fresh.id])) == []
    assert ids_of(run(store.list_messages(conversation.id, Page()))) == [existing.id]
    assert ids_of(run(store.list_agent_messages(agent.id, Page()))) == [existing.id]
    add_messages(store, conversation, 1)  # the store is usable again


@pytest.fixture
def five_messages(store: Store) -> tuple[Conversation, list[str]]:
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
    store: Store,
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
    store: Store, five_messages: tuple[Conversation, list[str]]
) -> None:
    conversation, message_ids = five_messages
    page = Page(order="asc", after="message-unknown", before="message-unknown")
    assert ids_of(run(store.list_messages(conversation.id, page))) == message_ids


def test_list_messages_positions_set(store: Store, five_messages: tuple[Conversation, list[str]]) -> None:
    conversation, _ = five_messages
    positions = [m.position for m in run(store.list_messages(conversation.id, Page(order="asc")))]
    assert all(p is not None for p in positions)
    assert positions == sorted(positions)


def test_get_messages_keeps_requested_order(
    store: Store, five_messages: tuple[Conversation, list[str]]
) -> None:
    _, message_ids = five_messages
    wanted = [message_ids[3], "message-missing", message_ids[0], message_ids[4]]
    found = run(store.get_messages(wanted))
    assert ids_of(found) == [message_ids[3], message_ids[0], message_ids[4]]
    assert all(m.position is not None for m in found)
    assert run(store.get_messages([])) == []


def test_replace_message_keeps_position(store: Store, five_messages: tuple[Conversation, list[str]]) -> None:
    conversation, message_ids = five_messages
    [original] = run(store.get_messages([message_ids[2]]))
    rewritten = original.model_copy(update={"parts": [TextPart(text="rewritten")], "revision": 1})
    run(store.replace_message(rewritten))
    [stored] = run(store.get_messages([message_ids[2]]))
    assert stored == rewritten
    listed = run(store.list_messages(conversation.id, Page(order="asc")))
    assert ids_of(listed) == message_ids
    assert listed[2].text() == "rewritten"


def test_delete_messages_removes_them_from_every_listing(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    agent_run = add_run(store, agent, conversation)
    messages = add_messages(store, conversation, 4, run_id=agent_run.id)
    doomed = [messages[1].id, messages[3].id, "message-missing"]
    run(store.delete_messages(doomed))
    kept = [messages[0].id, messages[2].id]
    assert ids_of(run(store.get_messages(ids_of(messages)))) == kept
    assert ids_of(run(store.list_messages(conversation.id, Page(order="asc")))) == kept
    assert ids_of(run(store.list_agent_messages(agent.id, Page(order="asc")))) == kept
    assert ids_of(run(store.list_run_messages(agent_run.id, Page(order="asc")))) == kept
    run(store.delete_messages([]))


def test_agent_and_run_message_listings(store: Store) -> None:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    c1, c2, theirs = (
        add_conversation(store, agent),
        add_conversation(store, agent),
        add_conversation(store, other),
    )
    r1 = add_run(store, agent, c1)
    first = add_messages(store, c1, 2, run_id=r1.id)
    add_messages(store, theirs, 2)
    second = add_messages(store, c2, 2)
    third = add_messages(store, c1, 1, run_id=r1.id)
    assert ids_of(run(store.list_agent_messages(agent.id, Page(order="asc")))) == ids_of(
        first + second + third
    )
    assert ids_of(run(store.list_run_messages(r1.id, Page()))) == ids_of(first + third)[::-1]
    page = Page(order="asc", after=first[1].id, before=third[0].id)
    assert ids_of(run(store.list_agent_messages(agent.id, page))) == ids_of(second)
    # The run's messages stay listed by it after the run is forgotten.
    assert run(store.delete_run(r1.id)) is True
    assert run(store.delete_run(r1.id)) is False
    assert ids_of(run(store.list_run_messages(r1.id, Page(order="asc")))) == ids_of(first + third)


# --- search ---------------------------------------------------------------------------------------
def test_search_messages(store: Store) -> None:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    c1, c2 = add_conversation(store, agent), add_conversation(store, agent)
    theirs = add_conversation(store, other)

    def said(conversation: Conversation, role: str, text: str) -> Message:
        message = Message(
            role=role,
            parts=[TextPart(text=text)],
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
        )  # type: ignore[arg-type]
        run(store.append_messages([message]))
        return message

    old = said(c1, "user", "I like the Blue whale")
    said(c1, "assistant", "blue is nice")
    said(theirs, "user", "blue from another agent")
    tool = Message(
        role="tool",
        parts=[ToolReturnPart(tool_call_id="call-1", name="lookup", content="BLUE sky report")],
        agent_id=agent.id,
        conversation_id=c2.id,
    )
    run(store.append_messages([tool]))
    said(c2, "user", "nothing here")
    new = said(c2, "user", "blue again")

    assert ids_of(run(store.search_messages(agent.id, "BLUE", ["user"], 10))) == [new.id, old.id]
    assert ids_of(run(store.search_messages(agent.id, "blue", ["user"], 1))) == [new.id]
    assert ids_of(run(store.search_messages(agent.id, "sky", ["tool"], 10))) == [tool.id]
    found = run(store.search_messages(agent.id, "blue", ["user", "assistant", "tool"], 10))
    assert [m.role for m in found] == ["user", "tool", "assistant", "user"]
    assert all(m.position is not None for m in found)
    assert run(store.search_messages(agent.id, "whale", ["assistant"], 10)) == []
    assert run(store.search_messages(agent.id, "absent", ["user"], 10)) == []


# --- runs -----------------------------------------------------------------------------------------
def test_run_create_update_get(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    created = add_run(store, agent, conversation, status=RunStatus.running)
    assert run(store.get_run(created.id)) == created
    finished = created.model_copy(
        update={"status": RunStatus.completed, "stop_reason": StopReason.end_turn, "metadata": {"k": 1}}
    )
    run(store.update_run(finished))
    assert run(store.get_run(created.id)) == finished
    assert run(store.get_run("run-missing")) is None


def test_update_run_does_not_bring_back_a_deleted_run(store: Store) -> None:
    agent = add_agent(store)
    created = add_run(store, agent)
    assert run(store.delete_run(created.id)) is True
    run(store.update_run(created.model_copy(update={"status": RunStatus.completed})))
    assert run(store.get_run(created.id)) is None
    assert run(store.list_runs(Page())) == []


def test_list_runs_filters(store: Store) -> None:
    a, b = add_agent(store, "a"), add_agent(store, "b")
    ca, cb = add_conversation(store, a), add_conversation(store, b)
    r1 = add_run(store, a, ca, status=RunStatus.running)
    r2 = add_run(store, a, ca, status=RunStatus.completed)
    r3 = add_run(store, b, cb, status=RunStatus.running)
    r4 = add_run(store, a, ca, status=RunStatus.failed)

    assert ids_of(run(store.list_runs(Page()))) == [r4.id, r3.id, r2.id, r1.id]
    assert ids_of(run(store.list_runs(Page(order="asc"), agent_ids=[a.id]))) == [r1.id, r2.id, r4.id]
    assert ids_of(run(store.list_runs(Page(order="asc"), agent_ids=[a.id, b.id]))) == [
        r1.id,
        r2.id,
        r3.id,
        r4.id,
    ]
    assert ids_of(run(store.list_runs(Page(), conversation_id=cb.id))) == [r3.id]
    assert ids_of(run(store.list_runs(Page(), statuses=["running"]))) == [r3.id, r1.id]
    running_or_failed = run(store.list_runs(Page(), agent_ids=[a.id], statuses=["running", "failed"]))
    assert ids_of(running_or_failed) == [r4.id, r1.id]

    # The status follows updates.
    run(store.update_run(r1.model_copy(update={"status": RunStatus.cancelled})))
    assert ids_of(run(store.list_runs(Page(), statuses=["running"]))) == [r3.id]
    assert ids_of(run(store.list_runs(Page(), statuses=["cancelled"]))) == [r1.id]
    assert ids_of(run(store.list_runs(Page(after=r4.id, limit=2)))) == [r3.id, r2.id]


def test_list_runs_background_and_stop_reason(store: Store) -> None:
    agent = add_agent(store)
    plain = add_run(store, agent)
    background = add_run(store, agent, background=True)
    ended = add_run(store, agent, stop_reason=StopReason.end_turn, status=RunStatus.completed)
    failed = add_run(store, agent, background=True, stop_reason=StopReason.error, status=RunStatus.failed)
    assert ids_of(run(store.list_runs(Page(order="asc"), background=True))) == [background.id, failed.id]
    assert ids_of(run(store.list_runs(Page(order="asc"), background=False))) == [plain.id, ended.id]
    assert ids_of(run(store.list_runs(Page(), stop_reason="end_turn"))) == [ended.id]
    assert ids_of(run(store.list_runs(Page(), background=True, stop_reason="error"))) == [failed.id]
    assert run(store.list_runs(Page(), background=False, stop_reason="error")) == []


# --- blocks ---------------------------------------------------------------------------------------
def test_update_block_sets_only_named_fields(store: Store) -> None:
    block = Block(label="human", value="original")
    agent = make_agent("with-block", None, [block.id])
    run(store.create_agent(agent, [block]))
    updated = run(store.update_block(block.id, {"value": "changed"}))
    assert updated is not None and updated.value == "changed" and updated.label == block.label
    assert run(store.get_blocks([block.id])) == [updated]
    assert run(store.update_block("block-missing", {"value": "x"})) is None


def test_edit_block_reads_current_and_stamps_updated_at(store: Store) -> None:
    block = Block(label="human", value="one")
    run(store.create_agent(make_agent(block_ids=[block.id]), [block]))
    updated = run(store.edit_block(block.id, lambda b: {"value": b.value + " two"}))
    assert updated is not None and updated.value == "one two"
    assert updated.updated_at > block.updated_at
    assert run(store.get_blocks([block.id])) == [updated]
    assert run(store.edit_block("block-missing", lambda b: {"value": "x"})) is None


def test_edit_block_that_raises_writes_nothing(store: Store) -> None:
    block = Block(label="human", value="kept")
    run(store.create_agent(make_agent(block_ids=[block.id]), [block]))

    def refuse(current: Block) -> Mapping[str, Any]:
        raise ValueError("read-only")

    with pytest.raises(ValueError, match="read-only"):
        run(store.edit_block(block.id, refuse))
    assert run(store.get_blocks([block.id])) == [block]
    assert run(store.edit_block(block.id, lambda b: {"value": "after"})) is not None  # usable again


# --- tools ----------------------------------------------------------------------------------------
def test_upsert_tool_inserts_then_replaces_by_name(store: Store) -> None:
    first = make_tool("lookup", description="v1")
    assert run(store.upsert_tool(first)) == first
    again = make_tool("lookup", description="v2")
    stored = run(store.upsert_tool(again))
    assert (stored.id, stored.created_at, stored.description) == (first.id, first.created_at, "v2")
    assert run(store.get_tools([first.id])) == [stored]
    assert run(store.get_tools([again.id])) == []
    assert run(store.get_tools_by_name(["lookup"])) == [stored]
    assert ids_of(run(store.list_tools(Page()))) == [first.id]


def test_update_tool_renames_and_refuses_a_taken_name(store: Store) -> None:
    a, b = run(store.upsert_tool(make_tool("a"))), run(store.upsert_tool(make_tool("b")))
    with pytest.raises(Conflict):
        run(store.update_tool(a.model_copy(update={"name": "b"})))
    assert run(store.get_tools([a.id])) == [a]
    renamed = a.model_copy(update={"name": "c", "description": "renamed"})
    run(store.update_tool(renamed))
    assert run(store.get_tools_by_name(["c", "a", "b"])) == [renamed, b]
    # The old name is free again.
    fresh = run(store.upsert_tool(make_tool("a")))
    assert fresh.id not in (a.id, b.id)
    run(store.update_tool(make_tool("ghost")))  # no such tool: nothing happens
    assert run(store.get_tools_by_name(["ghost"])) == []


def test_get_tools_in_requested_order(store: Store) -> None:
    tools = [run(store.upsert_tool(make_tool(f"t{i}"))) for i in range(3)]
    assert ids_of(run(store.get_tools([tools[2].id, "tool-missing", tools[0].id]))) == [
        tools[2].id,
        tools[0].id,
    ]
    assert ids_of(run(store.get_tools_by_name(["t1", "nope", "t0"]))) == [tools[1].id, tools[0].id]
    assert run(store.get_tools([])) == [] and run(store.get_tools_by_name([])) == []


def test_list_tools_filters(store: Store) -> None:
    send = run(store.upsert_tool(make_tool("send_message", LETTA_CORE)))
    weather = run(store.upsert_tool(make_tool("get_Weather")))
    news = run(store.upsert_tool(make_tool("get_news")))
    asc = Page(order="asc")
    assert ids_of(run(store.list_tools(asc, names=["get_news", "send_message", "nope"]))) == [
        send.id,
        news.id,
    ]
    assert ids_of(run(store.list_tools(asc, tool_types=[LETTA_CORE]))) == [send.id]
    assert ids_of(run(store.list_tools(asc, exclude_tool_types=[LETTA_CORE]))) == [weather.id, news.id]
    assert ids_of(run(store.list_tools(asc, search="WEATH"))) == [weather.id]
    assert ids_of(run(store.list_tools(asc, search="get", names=["get_news"]))) == [news.id]
    assert ids_of(run(store.list_tools(Page(limit=1, after=news.id)))) == [weather.id]


def test_delete_tool(store: Store) -> None:
    tool = run(store.upsert_tool(make_tool("doomed")))
    assert run(store.delete_tool(tool.id)) is True
    assert run(store.get_tools([tool.id])) == []
    assert run(store.get_tools_by_name(["doomed"])) == []
    assert run(store.list_tools(Page())) == []
    assert run(store.delete_tool(tool.id)) is False
    assert run(store.upsert_tool(make_tool("doomed"))).id != tool.id


# --- every cursor and order on every listing ------------------------------------------------------
@dataclass
class Seeded:
    """Objects created oldest first; ``listed`` is the subset the listing returns, the rest is
    noise that its filters drop (and that still works as a cursor)."""

    created: list[str]
    listed: list[str]
    list_page: Callable[[Page], Awaitable[list[Any]]]


def _seed(
    store: Store, make_listed: Callable[[int], str], make_noise: Callable[[int], str]
) -> tuple[list[str], list[str]]:
    created, listed = [], []
    for i in range(4):
        if i != 2:
            created.append(make_noise(i))
        listed.append(make_listed(i))
        created.append(listed[-1])
    return created, listed


def seed_agents(store: Store, variant: str) -> Seeded:
    filtered = variant == "filtered"

    def noise(i: int) -> str:
        if i == 1 or not filtered:
            return add_agent(store, "n", ["t"], hidden=True).id
        # Filtered out by name (i == 0) or by tag (i == 3).
        return add_agent(store, "other", ["t"]).id if i == 0 else add_agent(store, "n", ["u"]).id

    created, listed = _seed(store, lambda i: add_agent(store, "n", ["t"]).id, noise)
    if filtered:
        return Seeded(created, listed, lambda page: store.list_agents(page, name="n", tags=["t", "x"]))
    return Seeded(created, listed, lambda page: store.list_agents(page))


def seed_conversations(store: Store, variant: str) -> Seeded:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    theirs: list[str] = []

    def noise(i: int) -> str:
        if i == 0:
            default = Conversation.default_for(agent.id)
            assert run(store.create_conversation(default))
            return default.id
        if i == 1:
            return add_conversation(store, agent, ephemeral=True).id
        theirs.append(add_conversation(store, other).id)  # listed by the listing of all
        return theirs[-1]

    created, listed = _seed(store, lambda i: add_conversation(store, agent).id, noise)
    if variant == "agent":
        return Seeded(created, listed, lambda page: store.list_conversations(agent.id, page))
    every = [c for c in created if c in listed or c in theirs]
    return Seeded(created, every, lambda page: store.list_conversations(None, page))


def seed_runs(store: Store, variant: str) -> Seeded:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    conversation = add_conversation(store, agent)

    def noise(i: int) -> str:
        if variant == "status":
            return add_run(store, agent, conversation, status=RunStatus.completed).id
        return add_run(store, other, add_conversation(store, other), status=RunStatus.running).id

    created, listed = _seed(
        store, lambda i: add_run(store, agent, conversation, status=RunStatus.running).id, noise
    )
    if variant == "status":
        return Seeded(created, listed, lambda page: store.list_runs(page, statuses=["running"]))
    if variant == "agent":
        return Seeded(created, listed, lambda page: store.list_runs(page, agent_ids=[agent.id]))
    return Seeded(created, listed, lambda page: store.list_runs(page, conversation_id=conversation.id))


def seed_tools(store: Store, variant: str) -> Seeded:
    created, listed = _seed(
        store,
        lambda i: run(store.upsert_tool(make_tool(f"listed_{i}"))).id,
        lambda i: run(store.upsert_tool(make_tool(f"noise_{i}", LETTA_CORE))).id,
    )
    if variant == "type":
        return Seeded(created, listed, lambda page: store.list_tools(page, exclude_tool_types=[LETTA_CORE]))
    names = [f"listed_{i}" for i in range(4)] + ["unknown"]
    return Seeded(created, listed, lambda page: store.list_tools(page, names=names))


def seed_messages(store: Store, variant: str) -> Seeded:
    agent, other = add_agent(store, "a"), add_agent(store, "b")
    conversation, sibling = add_conversation(store, agent), add_conversation(store, agent)
    theirs = add_conversation(store, other)
    agent_run, other_run = add_run(store, agent, conversation), add_run(store, agent, conversation)
    noise_in = {"conversation": sibling, "agent": theirs, "run": conversation}[variant]
    created, listed = _seed(
        store,
        lambda i: add_messages(store, conversation, 1, run_id=agent_run.id)[0].id,
        lambda i: add_messages(store, noise_in, 1, run_id=other_run.id)[0].id,
    )
    if variant == "conversation":
        return Seeded(created, listed, lambda page: store.list_messages(conversation.id, page))
    if variant == "agent":
        return Seeded(created, listed, lambda page: store.list_agent_messages(agent.id, page))
    return Seeded(created, listed, lambda page: store.list_run_messages(agent_run.id, page))


def expected_page(seeded: Seeded, page: Page, relative: bool) -> list[str]:
    """What SQLite's cursor rules select, computed from creation order."""
    rank = {ident: n for n, ident in enumerate(seeded.created)}
    rows = seeded.listed[::-1] if page.order == "desc" else list(seeded.listed)
    if relative:  # after/before: the rows that follow/precede the cursor in the requested order
        step = -1 if page.order == "desc" else 1
        if page.after:
            rows = [r for r in rows if (rank[r] - rank[page.after]) * step > 0]
        if page.before:
            rows = [r for r in rows if (rank[page.before] - rank[r]) * step > 0]
        return rows[-page.limit :] if page.before and not page.after else rows[: page.limit]
    if page.after:  # absolute: newer than
        rows = [r for r in rows if rank[r] > rank[page.after]]
    if page.before:  # absolute: older than
        rows = [r for r in rows if rank[r] < rank[page.before]]
    return rows[: page.limit]


LISTINGS: dict[str, tuple[Callable[[Store, str], Seeded], str, bool]] = {
    "agents": (seed_agents, "all", True),
    "agents_by_name_and_tag": (seed_agents, "filtered", True),
    "conversations_of_agent": (seed_conversations, "agent", True),
    "conversations_all": (seed_conversations, "all", True),
    "runs_by_status": (seed_runs, "status", True),
    "runs_by_agent": (seed_runs, "agent", True),
    "runs_by_conversation": (seed_runs, "conversation", True),
    "tools_by_type": (seed_tools, "type", True),
    "tools_by_name": (seed_tools, "names", True),
    "messages_of_conversation": (seed_messages, "conversation", False),
    "messages_of_agent": (seed_messages, "agent", False),
    "messages_of_run": (seed_messages, "run", False),
}


@pytest.mark.parametrize("listing", list(LISTINGS))
def test_every_cursor_and_order(store: Store, listing: str) -> None:
    seed, variant, relative = LISTINGS[listing]
    seeded = seed(store, variant)
    cursors = [None, *seeded.created, "unknown-id"]
    label = {
        ident: f"{'listed' if ident in seeded.listed else 'noise'}#{seeded.created.index(ident)}"
        for ident in seeded.created
    }

    async def check_all() -> None:
        for order, after, before, limit in itertools.product(("asc", "desc"), cursors, cursors, (1, 2, 50)):
            page = Page(limit=limit, order=order, after=after, before=before)  # type: ignore[arg-type]
            known = Page(
                limit=limit,
                order=order,  # type: ignore[arg-type]
                after=after if after in label else None,
                before=before if before in label else None,
            )
            got = [label.get(i, i) for i in ids_of(await seeded.list_page(page))]
            want = [label[i] for i in expected_page(seeded, known, relative)]
            assert got == want, (order, label.get(after, after), label.get(before, before), limit)

    run(check_all())


# --- concurrency ----------------------------------------------------------------------------------
BATCHES, BATCH_SIZE = 12, 5


def test_concurrent_appends_keep_batches_whole(store: Store, reopen: Callable[[], Store]) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    another = reopen()
    writers = [store, store, another, another]  # several tasks on each of two connections

    async def appender(s: Store, tag: str) -> None:
        for b in range(BATCHES):
            batch = [user_message(agent.id, conversation.id, f"{tag}/{b}/{i}") for i in range(BATCH_SIZE)]
            await s.append_messages(batch, {"last_message_at": utcnow()} if b % 3 else None)
            assert [m.position for m in batch] == sorted({m.position for m in batch})  # type: ignore[type-var]

    done = asyncio.Event()
    seen: list[tuple[int, Any]] = []

    async def http_updates() -> int:
        """Patches a field no append names, for as long as appends run, reading each one back:
        an append that wrote back a conversation read before the patch would undo it."""
        i = 0
        while not done.is_set() or i == 0:
            await another.update_conversation(conversation.id, {"metadata": {"i": i}})
            back = await another.get_conversation(conversation.id)
            seen.append((i, back.metadata if back else None))
            i += 1
            await asyncio.sleep(0)
        return i - 1

    async def all_writers() -> int:
        async def appenders() -> None:
            await asyncio.gather(*(appender(s, f"w{n}") for n, s in enumerate(writers)))
            done.set()

        _, last = await asyncio.gather(appenders(), http_updates())
        return last

    last = run(all_writers())
    stored = run(store.list_messages(conversation.id, Page(order="asc", limit=10_000)))
    assert len(stored) == len(writers) * BATCHES * BATCH_SIZE
    positions = [m.position for m in stored]
    assert positions == sorted(set(positions))  # type: ignore[type-var]
    texts = [m.text() for m in stored]
    for start in range(0, len(texts), BATCH_SIZE):  # each batch lies contiguous, in its own order
        tag, b, _ = texts[start].split("/")
        assert texts[start : start + BATCH_SIZE] == [f"{tag}/{b}/{i}" for i in range(BATCH_SIZE)]
    for n in range(len(writers)):
        mine = [t for t in texts if t.startswith(f"w{n}/")]
        assert mine == [f"w{n}/{b}/{i}" for b in range(BATCHES) for i in range(BATCH_SIZE)]
    final = run(store.get_conversation(conversation.id))
    assert final is not None and final.metadata == {"i": last}
    assert [metadata for _, metadata in seen] == [{"i": i} for i, _ in seen]


def test_concurrent_block_edits_lose_nothing(store: Store, reopen: Callable[[], Store]) -> None:
    block = Block(label="notes", value="")
    run(store.create_agent(make_agent(block_ids=[block.id]), [block]))
    editors = {"a": store, "b": reopen()}

    def add_line(line: str) -> Callable[[Block], Mapping[str, Any]]:
        return lambda current: {"value": f"{current.value}\n{line}" if current.value else line}

    async def edit_all() -> None:
        async def edits(s: Store, tag: str) -> None:
            for i in range(20):
                assert await s.edit_block(block.id, add_line(f"{tag}{i}")) is not None

        await asyncio.gather(*(edits(s, tag) for tag, s in editors.items()))

    run(edit_all())
    [stored] = run(store.get_blocks([block.id]))
    lines = stored.value.split("\n")
    assert len(lines) == 40
    for tag in editors:
        assert [line for line in lines if line.startswith(tag)] == [f"{tag}{i}" for i in range(20)]


class Interferer:
    """Runs a write on another thread (its own loop and connection) the first time it is
    triggered, and waits a little for it: in the middle of the store's read-modify-write, that
    write lands between the read and the write, unless the store holds a lock (SQLite), in which
    case it waits for the commit. Either way it must not be undone."""

    def __init__(self, write: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._write = write
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def trigger(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run)
            self._thread.start()
            self._thread.join(0.5)

    def _run(self) -> None:
        try:
            asyncio.run(self._write())
        except BaseException as exc:
            self.errors.append(exc)

    def finish(self) -> None:
        assert self._thread is not None, "the store never read the fields"
        self._thread.join(10)
        assert not self._thread.is_alive() and not self.errors, self.errors


class InterferingFields(Mapping[str, Any]):
    """Fields that trigger an ``Interferer`` when the store merges them into what it read."""

    def __init__(self, fields: Mapping[str, Any], interferer: Interferer) -> None:
        self._fields = dict(fields)
        self._interferer = interferer

    def keys(self) -> KeysView[str]:
        self._interferer.trigger()
        return self._fields.keys()

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def test_append_does_not_undo_a_patch_made_while_it_ran(store: Store, reopen: Callable[[], Store]) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    another = reopen()
    interferer = Interferer(lambda: another.update_conversation(conversation.id, {"summary": "meanwhile"}))
    message = user_message(agent.id, conversation.id, "hello")
    run(
        store.append_messages(
            [message], InterferingFields({"in_context_message_ids": [message.id]}, interferer)
        )
    )
    interferer.finish()
    stored = run(store.get_conversation(conversation.id))
    assert stored is not None
    assert (stored.summary, stored.in_context_message_ids) == ("meanwhile", [message.id])


def test_edit_block_does_not_undo_an_edit_made_while_it_ran(
    store: Store, reopen: Callable[[], Store]
) -> None:
    block = Block(label="notes", value="start")
    run(store.create_agent(make_agent(block_ids=[block.id]), [block]))
    another = reopen()
    interferer = Interferer(lambda: another.edit_block(block.id, lambda b: {"value": b.value + " theirs"}))
    seen: list[str] = []

    def mine(current: Block) -> Mapping[str, Any]:
        seen.append(current.value)
        interferer.trigger()
        return {"value": current.value + " mine"}

    updated = run(store.edit_block(block.id, mine))
    interferer.finish()
    [stored] = run(store.get_blocks([block.id]))
    assert sorted(stored.value.split()) == ["mine", "start", "theirs"]
    # Either ours was re-run on their edit (optimistic) or theirs waited for ours (lock).
    assert updated is not None and (seen == ["start", "start theirs"] or updated.value == "start mine")


# --- Redis only -----------------------------------------------------------------------------------
def test_open_store_accepts_redis_urls(redis_url: str) -> None:
    for url in (redis_url, redis_url.replace("redis://", "rediss://")):
        opened = open_store(url)
        try:
            assert isinstance(opened, RedisStore) and opened.url == url
        finally:
            opened.close()
    with pytest.raises(ValueError):
        open_store("postgres://nowhere")


def test_redis_prefix_separates_stores(redis_url: str) -> None:
    _flush(redis_url)
    one, two = RedisStore(redis_url), RedisStore(redis_url, prefix="other:")
    try:
        agent = make_agent("mine")
        run(one.create_agent(agent, []))
        assert run(two.get_agent(agent.id)) is None
        assert run(two.list_agents(Page())) == []
        admin = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert all(key.startswith("parley:") for key in admin.keys("*"))
        finally:
            admin.close()
    finally:
        one.close()
        two.close()


def _clients_named(admin: redis.Redis, name: str) -> int:
    return sum(1 for client in admin.client_list() if client.get("name") == name)


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 5
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_redis_connections_close_with_their_loop_and_on_close(redis_url: str) -> None:
    name = "parley-close-test"
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    s = RedisStore(f"{redis_url}?client_name={name}")
    try:
        run(s.get_agent("agent-missing"))  # asyncio.run shuts the loop down: its connection goes
        assert _eventually(lambda: _clients_named(admin, name) == 0)
        with asyncio.Runner() as runner:
            runner.run(s.get_agent("agent-missing"))
            assert _clients_named(admin, name) == 1
            s.close()  # sync code, the loop idle: closed on that loop
            assert _eventually(lambda: _clients_named(admin, name) == 0)
        run(s.get_agent("agent-missing"))  # still usable after close: a new client
    finally:
        s.close()
        admin.close()


def test_run_events_are_appended_in_order_and_deleted_with_their_run(store: Store) -> None:
    agent = add_agent(store)
    conversation = add_conversation(store, agent)
    first, second, third = (add_run(store, agent, conversation) for _ in range(3))
    chunks = [b'[{"kind":"ping","run_id":"x","seq":%d}]' % n for n in range(3)]
    for chunk in chunks:
        for r in (first, second, third):
            run(store.append_run_events(r.id, chunk))
    assert run(store.get_run_events(first.id)) == chunks
    assert run(store.get_run_events("run-unknown")) == []
    assert run(store.delete_run(first.id)) is True
    assert run(store.get_run_events(first.id)) == []
    assert run(store.get_run_events(second.id)) == chunks  # only the deleted run's log goes
    assert run(store.delete_conversation(conversation.id)) is True
    assert run(store.get_run_events(second.id)) == []
    other = add_conversation(store, agent)
    fourth = add_run(store, agent, other)
    run(store.append_run_events(fourth.id, chunks[0]))
    run(store.delete_agent(agent.id))
    assert run(store.get_run_events(fourth.id)) == []


def test_concurrent_appends_to_one_run_log_keep_every_batch(store: Store) -> None:
    agent = add_agent(store)
    run_ = add_run(store, agent, add_conversation(store, agent))

    async def append_all() -> None:
        await asyncio.gather(*(store.append_run_events(run_.id, b"[%d]" % n) for n in range(50)))

    run(append_all())
    assert sorted(run(store.get_run_events(run_.id))) == sorted(b"[%d]" % n for n in range(50))


def test_runs_are_found_by_idempotency_key_per_conversation(store: Store) -> None:
    agent = add_agent(store)
    one, two = add_conversation(store, agent), add_conversation(store, agent)
    first = add_run(store, agent, one, idempotency_key="k")
    add_run(store, agent, one)  # no key
    elsewhere = add_run(store, agent, two, idempotency_key="k")
    assert run(store.find_run_by_key(one.id, "k")) == first
    assert run(store.find_run_by_key(two.id, "k")) == elsewhere
    assert run(store.find_run_by_key(one.id, "other")) is None
    retried = add_run(store, agent, one, idempotency_key="k")  # the key moves to the latest run
    assert run(store.find_run_by_key(one.id, "k")) == retried
    assert run(store.delete_run(retried.id)) is True
    assert run(store.find_run_by_key(one.id, "k")) is None
    assert run(store.delete_conversation(two.id)) is True
    assert run(store.find_run_by_key(two.id, "k")) is None
    add_run(store, agent, one, idempotency_key="k")
    run(store.delete_agent(agent.id))
    assert run(store.find_run_by_key(one.id, "k")) is None
