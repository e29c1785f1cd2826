"""``SqliteStore``: the embedded default. One file, WAL mode, safe for several processes.

Every row keeps its object as JSON in ``data`` plus the few columns that queries filter on. ``pos``
is an autoincrement column: listings order by it (creation order without timestamp ties) and
cursors translate an id into its ``pos``. Writes are short ``BEGIN IMMEDIATE`` transactions, so
concurrent writers from other processes wait on ``busy_timeout`` instead of failing.

Writes, and reads that may be long (listings, a history, a run's events), run on the store's own
thread, never on the caller's event loop. SQLite blocks while it waits for another process's write
lock (its busy handler sleeps 1, 2, 5, 10 ... ms) and while a commit runs a WAL checkpoint (an
fsync: 20 ms seen here); on the loop, either stalls every token stream the process serves, by more
than the gap between two of their batches. The thread is one, so these calls run one at a time in
the order they were made; sqlite3 releases the GIL while it waits, so the loop runs meanwhile.

Point reads (a row or a few by key: what every turn reads at its start) run on the caller's loop,
over a connection of their own (``_point_read``). The hop to the thread and back costs ~70 us of
CPU, against ~4 us for such a read, and a turn makes several. In WAL mode a reader takes no lock
that a writer holds, so it does not wait on the busy handler, and it never runs a checkpoint. It
sees what was committed when it runs: every write the caller awaited before it, as on the thread.
An in-memory database has no second connection, so there they stay on the thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic import BaseModel

from ..agent import Agent, Block
from ..clock import utcnow
from ..conversation import Conversation
from ..errors import Conflict
from ..message import Message
from ..run import Run
from ..tools.tool import Tool
from .base import Page, Store

M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")


def _off_loop(
    method: Callable[Concatenate[SqliteStore, P], R],
) -> Callable[Concatenate[SqliteStore, P], Awaitable[R]]:
    """The store method, run on the store's thread (see the module docstring)."""

    @functools.wraps(method)
    async def call(self: SqliteStore, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, functools.partial(method, self, *args, **kwargs)
        )

    return call


def _point_read(
    method: Callable[Concatenate[SqliteStore, P], R],
) -> Callable[Concatenate[SqliteStore, P], Awaitable[R]]:
    """The store method, run at once on the caller's loop over the read connection (see the module
    docstring); only for reads of a few rows by key."""
    on_thread = _off_loop(method)

    @functools.wraps(method)
    async def call(self: SqliteStore, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._reader is None:
            return await on_thread(self, *args, **kwargs)
        return method(self, *args, **kwargs)

    return call


_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agent_tags (
    agent_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (agent_id, tag));
CREATE INDEX IF NOT EXISTS agent_tags_tag ON agent_tags (tag);
CREATE TABLE IF NOT EXISTS blocks (
    id TEXT PRIMARY KEY, owner_agent_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_owner ON blocks (owner_agent_id);
CREATE TABLE IF NOT EXISTS conversations (
    pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, agent_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_agent ON conversations (agent_id, pos);
CREATE TABLE IF NOT EXISTS messages (
    pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, agent_id TEXT NOT NULL,
    conversation_id TEXT, run_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, pos);
CREATE INDEX IF NOT EXISTS messages_agent ON messages (agent_id, pos);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id, pos);
CREATE TABLE IF NOT EXISTS runs (
    pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, agent_id TEXT NOT NULL,
    conversation_id TEXT, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_agent ON runs (agent_id, pos);
CREATE INDEX IF NOT EXISTS runs_conversation ON runs (conversation_id, pos);
CREATE TABLE IF NOT EXISTS run_log (
    n INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS run_log_run ON run_log (run_id, n);
CREATE TABLE IF NOT EXISTS run_keys (
    conversation_id TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, key));
CREATE TABLE IF NOT EXISTS tools (
    pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, name TEXT UNIQUE NOT NULL,
    tool_type TEXT NOT NULL, data TEXT NOT NULL);
"""


class SqliteStore(Store):
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) where several rows move together.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash (kill -9); only power loss may drop the last commits.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        self._on_thread = threading.local()  # ``writer`` is set on the store's thread only
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-store", initializer=self._mark_thread
        )
        self._reader: sqlite3.Connection | None = None
        if path != ":memory:":
            self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA busy_timeout = 10000")

    def _mark_thread(self) -> None:
        self._on_thread.writer = True

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._db.close()
        if self._reader is not None:
            self._reader.close()

    # --- helpers ------------------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _conn(self) -> sqlite3.Connection:
        """The store thread's connection there; the read connection on a loop (``_point_read``)."""
        if self._reader is None or getattr(self._on_thread, "writer", False):
            return self._db
        return self._reader

    def _one(self, model: type[M], sql: str, args: Sequence[object]) -> M | None:
        row = self._conn().execute(sql, args).fetchone()
        return model.model_validate_json(row[0]) if row else None

    def _many(self, model: type[M], sql: str, args: Sequence[object]) -> list[M]:
        return [model.model_validate_json(row[0]) for row in self._conn().execute(sql, args)]

    def _pos(self, table: str, row_id: str | None) -> int | None:
        if row_id is None:
            return None
        row = self._db.execute(f"SELECT pos FROM {table} WHERE id = ?", (row_id,)).fetchone()
        return row[0] if row else None

    def _relative_page(
        self, table: str, columns: str, where: list[str], args: list[object], page: Page
    ) -> tuple[str, list[object], bool]:
        """SQL for a listing whose cursors are relative to the requested order.

        Returns (sql, args, reverse): with ``before`` we fetch the rows nearest the cursor and the
        caller flips them back into the requested order.
        """
        desc = page.order == "desc"
        reverse = False
        after_pos = self._pos(table, page.after)
        before_pos = self._pos(table, page.before)
        if after_pos is not None:
            where.append("pos < ?" if desc else "pos > ?")
            args.append(after_pos)
        if before_pos is not None:
            where.append("pos > ?" if desc else "pos < ?")
            args.append(before_pos)
            if after_pos is None:
                desc, reverse = not desc, True
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {columns} FROM {table} {clause} ORDER BY pos {'DESC' if desc else 'ASC'} LIMIT ?"
        args.append(page.limit)
        return sql, args, reverse

    # --- agents and blocks ---------------------------------------------------------------------
    @_off_loop
    def create_agent(self, agent: Agent, blocks: Sequence[Block]) -> None:
        with self._tx() as db:
            self._insert_blocks(db, blocks, agent.id)
            db.execute(
                "INSERT INTO agents (id, name, data) VALUES (?, ?, ?)",
                (agent.id, agent.name, agent.model_dump_json()),
            )
            self._write_tags(db, agent)

    def _insert_blocks(self, db: sqlite3.Connection, blocks: Iterable[Block], owner: str) -> None:
        db.executemany(
            "INSERT INTO blocks (id, owner_agent_id, data) VALUES (?, ?, ?)",
            [(b.id, owner, b.model_dump_json()) for b in blocks],
        )

    def _write_tags(self, db: sqlite3.Connection, agent: Agent) -> None:
        db.execute("DELETE FROM agent_tags WHERE agent_id = ?", (agent.id,))
        db.executemany(
            "INSERT OR IGNORE INTO agent_tags (agent_id, tag) VALUES (?, ?)",
            [(agent.id, t) for t in agent.tags],
        )

    @_point_read
    def get_agent(self, agent_id: str) -> Agent | None:
        return self._one(Agent, "SELECT data FROM agents WHERE id = ?", (agent_id,))

    @_off_loop
    def list_agents(
        self, page: Page, name: str | None = None, tags: Sequence[str] = (), match_all_tags: bool = False
    ) -> list[Agent]:
        where: list[str] = ["coalesce(json_extract(data, '$.hidden'), 0) = 0"]
        args: list[object] = []
        if name is not None:
            where.append("name = ?")
            args.append(name)
        if tags:
            marks = ",".join("?" * len(tags))
            if match_all_tags:
                where.append(
                    f"id IN (SELECT agent_id FROM agent_tags WHERE tag IN ({marks}) "
                    "GROUP BY agent_id HAVING COUNT(DISTINCT tag) = ?)"
                )
                args += [*tags, len(set(tags))]
            else:
                where.append(f"id IN (SELECT agent_id FROM agent_tags WHERE tag IN ({marks}))")
                args += list(tags)
        sql, args, reverse = self._relative_page("agents", "data", where, args, page)
        agents = self._many(Agent, sql, args)
        return agents[::-1] if reverse else agents

    @_off_loop
    def update_agent(self, agent: Agent, new_blocks: Sequence[Block] = ()) -> None:
        with self._tx() as db:
            self._insert_blocks(db, new_blocks, agent.id)
            db.execute(
                "UPDATE agents SET name = ?, data = ? WHERE id = ?",
                (agent.name, agent.model_dump_json(), agent.id),
            )
            self._write_tags(db, agent)

    @_off_loop
    def delete_agent(self, agent_id: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM agents WHERE id = ?", (agent_id,)).rowcount
            db.execute(
                "DELETE FROM run_log WHERE run_id IN (SELECT id FROM runs WHERE agent_id = ?)", (agent_id,)
            )
            db.execute(
                "DELETE FROM run_keys WHERE conversation_id IN (SELECT id FROM conversations WHERE agent_id = ?)",
                (agent_id,),
            )
            for table in ("conversations", "messages", "runs"):
                db.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
            db.execute("DELETE FROM agent_tags WHERE agent_id = ?", (agent_id,))
            db.execute("DELETE FROM blocks WHERE owner_agent_id = ?", (agent_id,))
        return gone > 0

    @_off_loop
    def update_block(self, block_id: str, fields: Mapping[str, Any]) -> Block | None:
        with self._tx() as db:
            return _patch(db, "blocks", Block, block_id, fields)

    @_off_loop
    def edit_block(self, block_id: str, edit: Callable[[Block], Mapping[str, Any]]) -> Block | None:
        # BEGIN IMMEDIATE takes the write lock before the read: no other writer, in this process
        # or another, can change the block between our read and our write.
        with self._tx() as db:
            current = self._one(Block, "SELECT data FROM blocks WHERE id = ?", (block_id,))
            if current is None:
                return None
            return _patch(db, "blocks", Block, block_id, {**edit(current), "updated_at": utcnow()})

    @_point_read
    def get_blocks(self, block_ids: Sequence[str]) -> list[Block]:
        if not block_ids:
            return []
        marks = ",".join("?" * len(block_ids))
        found = {
            b.id: b
            for b in self._many(Block, f"SELECT data FROM blocks WHERE id IN ({marks})", list(block_ids))
        }
        return [found[i] for i in block_ids if i in found]

    # --- tools ---------------------------------------------------------------------------------
    @_off_loop
    def upsert_tool(self, tool: Tool) -> Tool:
        with self._tx() as db:
            existing = self._one(Tool, "SELECT data FROM tools WHERE name = ?", (tool.name,))
            if existing is not None:
                tool = tool.model_copy(update={"id": existing.id, "created_at": existing.created_at})
                db.execute(
                    "UPDATE tools SET tool_type = ?, data = ? WHERE id = ?",
                    (tool.tool_type, tool.model_dump_json(), tool.id),
                )
            else:
                db.execute(
                    "INSERT INTO tools (id, name, tool_type, data) VALUES (?, ?, ?, ?)",
                    (tool.id, tool.name, tool.tool_type, tool.model_dump_json()),
                )
        return tool

    @_off_loop
    def update_tool(self, tool: Tool) -> None:
        try:
            self._db.execute(
                "UPDATE tools SET name = ?, tool_type = ?, data = ? WHERE id = ?",
                (tool.name, tool.tool_type, tool.model_dump_json(), tool.id),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"name: a tool named {tool.name!r} already exists") from None

    @_point_read
    def get_tools(self, tool_ids: Sequence[str]) -> list[Tool]:
        return self._by_keys("id", tool_ids)

    @_off_loop
    def get_tools_by_name(self, names: Sequence[str]) -> list[Tool]:
        return self._by_keys("name", names)

    def _by_keys(self, column: str, keys: Sequence[str]) -> list[Tool]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._many(Tool, f"SELECT data FROM tools WHERE {column} IN ({marks})", list(keys))
        found = {getattr(t, column): t for t in rows}
        return [found[k] for k in keys if k in found]

    @_off_loop
    def list_tools(
        self,
        page: Page,
        names: Sequence[str] = (),
        tool_types: Sequence[str] = (),
        exclude_tool_types: Sequence[str] = (),
        search: str | None = None,
    ) -> list[Tool]:
        where: list[str] = []
        args: list[object] = []
        for column, values, op in (
            ("name", names, "IN"),
            ("tool_type", tool_types, "IN"),
            ("tool_type", exclude_tool_types, "NOT IN"),
        ):
            if values:
                where.append(f"{column} {op} ({','.join('?' * len(values))})")
                args.extend(values)
        if search:
            where.append("instr(lower(name), lower(?)) > 0")
            args.append(search)
        sql, args, reverse = self._relative_page("tools", "data", where, args, page)
        found = self._many(Tool, sql, args)
        return found[::-1] if reverse else found

    @_off_loop
    def delete_tool(self, tool_id: str) -> bool:
        return self._db.execute("DELETE FROM tools WHERE id = ?", (tool_id,)).rowcount > 0

    # --- conversations -------------------------------------------------------------------------
    @_off_loop
    def create_conversation(self, conversation: Conversation) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO conversations (id, agent_id, data) VALUES (?, ?, ?)",
            (conversation.id, conversation.agent_id, conversation.model_dump_json()),
        )
        return cursor.rowcount == 1

    @_point_read
    def get_conversation(self, conversation_id: str) -> Conversation | None:
        return self._one(Conversation, "SELECT data FROM conversations WHERE id = ?", (conversation_id,))

    @_off_loop
    def list_conversations(self, agent_id: str | None, page: Page) -> list[Conversation]:
        # Neither agents' default conversations nor the ephemeral ones of OpenAI responses.
        where: list[str] = ["id != agent_id", "coalesce(json_extract(data, '$.ephemeral'), 0) = 0"]
        args: list[object] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            args.append(agent_id)
        sql, args, reverse = self._relative_page("conversations", "data", where, args, page)
        found = self._many(Conversation, sql, args)
        return found[::-1] if reverse else found

    @_off_loop
    def update_conversation(self, conversation_id: str, fields: Mapping[str, Any]) -> Conversation | None:
        with self._tx() as db:
            return _patch(db, "conversations", Conversation, conversation_id, fields)

    @_off_loop
    def delete_conversation(self, conversation_id: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            db.execute(
                "DELETE FROM run_log WHERE run_id IN (SELECT id FROM runs WHERE conversation_id = ?)",
                (conversation_id,),
            )
            db.execute("DELETE FROM runs WHERE conversation_id = ?", (conversation_id,))
            db.execute("DELETE FROM run_keys WHERE conversation_id = ?", (conversation_id,))
        return gone > 0

    # --- messages ------------------------------------------------------------------------------
    @_off_loop
    def append_messages(
        self, messages: Sequence[Message], conversation_fields: Mapping[str, Any] | None = None
    ) -> None:
        with self._tx() as db:
            for message in messages:
                cursor = db.execute(
                    "INSERT INTO messages (id, agent_id, conversation_id, run_id, data) VALUES (?, ?, ?, ?, ?)",
                    (
                        message.id,
                        message.agent_id,
                        message.conversation_id,
                        message.run_id,
                        _message_json(message),
                    ),
                )
                message.position = cursor.lastrowid
            if conversation_fields and messages and messages[0].conversation_id:
                _patch(db, "conversations", Conversation, messages[0].conversation_id, conversation_fields)

    @_off_loop
    def replace_message(self, message: Message) -> None:
        self._db.execute("UPDATE messages SET data = ? WHERE id = ?", (_message_json(message), message.id))

    @_off_loop
    def delete_messages(self, message_ids: Sequence[str]) -> None:
        self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in message_ids])

    @_off_loop
    def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        if not message_ids:
            return []
        marks = ",".join("?" * len(message_ids))
        found = {
            m.id: m
            for m in self._messages(
                f"SELECT pos, data FROM messages WHERE id IN ({marks})", list(message_ids)
            )
        }
        return [found[i] for i in message_ids if i in found]

    @_off_loop
    def list_messages(self, conversation_id: str, page: Page) -> list[Message]:
        return self._message_page("conversation_id", conversation_id, page)

    @_off_loop
    def list_agent_messages(self, agent_id: str, page: Page) -> list[Message]:
        return self._message_page("agent_id", agent_id, page)

    @_off_loop
    def search_messages(self, agent_id: str, query: str, roles: Sequence[str], limit: int) -> list[Message]:
        # The JSON text narrows the candidates cheaply; the parsed text decides.
        needle = query.lower()
        found: list[Message] = []
        rows = self._messages(
            "SELECT pos, data FROM messages WHERE agent_id = ? AND instr(lower(data), ?) > 0 "
            "ORDER BY pos DESC LIMIT ?",
            (agent_id, needle, limit * 8),
        )
        for message in rows:
            text = message.text() or "".join(getattr(p, "content", "") for p in message.parts)
            if message.role in roles and needle in text.lower():
                found.append(message)
                if len(found) == limit:
                    break
        return found

    @_off_loop
    def list_run_messages(self, run_id: str, page: Page) -> list[Message]:
        return self._message_page("run_id", run_id, page)

    def _message_page(self, column: str, value: str, page: Page) -> list[Message]:
        where = [f"{column} = ?"]
        args: list[object] = [value]
        # Absolute cursors: after = newer than, before = older than, whatever the order.
        after_pos = self._pos("messages", page.after)
        before_pos = self._pos("messages", page.before)
        if after_pos is not None:
            where.append("pos > ?")
            args.append(after_pos)
        if before_pos is not None:
            where.append("pos < ?")
            args.append(before_pos)
        sql = (
            f"SELECT pos, data FROM messages WHERE {' AND '.join(where)} "
            f"ORDER BY pos {'DESC' if page.order == 'desc' else 'ASC'} LIMIT ?"
        )
        return self._messages(sql, [*args, page.limit])

    def _messages(self, sql: str, args: Sequence[object]) -> list[Message]:
        found = []
        for pos, data in self._db.execute(sql, args):
            message = Message.model_validate_json(data)
            message.position = pos  # the row's own position, not stored in the JSON
            found.append(message)
        return found

    # --- runs ----------------------------------------------------------------------------------
    @_off_loop
    def create_run(self, run: Run) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, agent_id, conversation_id, status, data) VALUES (?, ?, ?, ?, ?)",
                (run.id, run.agent_id, run.conversation_id, run.status.value, run.model_dump_json()),
            )
            if run.idempotency_key is not None and run.conversation_id is not None:
                db.execute(
                    "INSERT OR REPLACE INTO run_keys (conversation_id, key, run_id) VALUES (?, ?, ?)",
                    (run.conversation_id, run.idempotency_key, run.id),
                )

    @_point_read
    def find_run_by_key(self, conversation_id: str, key: str) -> Run | None:
        return self._one(
            Run,
            "SELECT runs.data FROM run_keys JOIN runs ON runs.id = run_keys.run_id"
            " WHERE run_keys.conversation_id = ? AND run_keys.key = ?",
            (conversation_id, key),
        )

    @_off_loop
    def update_run(self, run: Run) -> None:
        self._db.execute(
            "UPDATE runs SET status = ?, data = ? WHERE id = ?",
            (run.status.value, run.model_dump_json(), run.id),
        )

    @_off_loop
    def delete_run(self, run_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM run_log WHERE run_id = ?", (run_id,))
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    @_off_loop
    def append_run_events(self, run_id: str, chunk: bytes) -> None:
        self._db.execute("INSERT INTO run_log (run_id, data) VALUES (?, ?)", (run_id, chunk))

    @_off_loop
    def get_run_events(self, run_id: str) -> list[bytes]:
        rows = self._db.execute("SELECT data FROM run_log WHERE run_id = ? ORDER BY n", (run_id,))
        return [bytes(row[0]) for row in rows]

    @_point_read
    def get_run(self, run_id: str) -> Run | None:
        return self._one(Run, "SELECT data FROM runs WHERE id = ?", (run_id,))

    @_off_loop
    def list_runs(
        self,
        page: Page,
        agent_ids: Sequence[str] = (),
        conversation_id: str | None = None,
        statuses: Sequence[str] = (),
        background: bool | None = None,
        stop_reason: str | None = None,
    ) -> list[Run]:
        where: list[str] = []
        args: list[object] = []
        if agent_ids:
            where.append(f"agent_id IN ({','.join('?' * len(agent_ids))})")
            args += list(agent_ids)
        if conversation_id is not None:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += list(statuses)
        if background is not None:
            where.append("json_extract(data, '$.background') = ?")
            args.append(1 if background else 0)
        if stop_reason is not None:
            where.append("json_extract(data, '$.stop_reason') = ?")
            args.append(stop_reason)
        sql, args, reverse = self._relative_page("runs", "data", where, args, page)
        found = self._many(Run, sql, args)
        return found[::-1] if reverse else found


def _patch(
    db: sqlite3.Connection, table: str, model: type[M], row_id: str, fields: Mapping[str, Any]
) -> M | None:
    """Set ``fields`` on one stored object; run inside the caller's BEGIN IMMEDIATE, so no other
    writer can interleave between the read and the write."""
    row = db.execute(f"SELECT data FROM {table} WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        return None
    updated = model.model_validate({**model.model_validate_json(row[0]).model_dump(), **fields})
    db.execute(f"UPDATE {table} SET data = ? WHERE id = ?", (updated.model_dump_json(), row_id))
    return updated


def _message_json(message: Message) -> str:
    return message.model_dump_json(exclude={"position"})


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
