"""``RedisStore``: the ``Store`` on a Redis server, so several hosts can share one state.

Key layout (every key starts with the prefix, ``parley:`` by default; ``pos`` is a position):

    seq                              string  global position counter (INCR / INCRBY)
    agent:{id}                       string  Agent JSON
    block:{id}                       string  Block JSON
    tool:{id}                        string  Tool JSON
    conversation:{id}                string  Conversation JSON
    message:{id}                     string  Message JSON (``position`` excluded: it is the score)
    run:{id}                         string  Run JSON
    run_log:{id}                     stream  a background run's event batches, appended as it runs
    run_keys:{conversation_id}       hash    idempotency key -> run id (the latest run sent with it)
    agents                           zset    agent id -> pos (hidden ones too: filtered on read)
    tools                            zset    tool id -> pos
    tool_names                       hash    tool name -> tool id
    conversations                    zset    conversation id -> pos
    messages                         zset    message id -> pos (every message: position lookups)
    runs                             zset    run id -> pos
    agent_tags:{agent_id}            set     the agent's tags
    tag_agents:{tag}                 set     ids of the agents with that tag
    agent_blocks:{agent_id}          set     ids of the blocks created with the agent (deleted with it)
    agent_conversations:{agent_id}   zset    conversation id -> pos
    agent_messages:{agent_id}        zset    message id -> pos
    agent_runs:{agent_id}            zset    run id -> pos
    conversation_messages:{id}       zset    message id -> pos
    conversation_runs:{id}           zset    run id -> pos
    run_messages:{run_id}            zset    message id -> pos (kept when the run is deleted)

Positions play the part of SQLite's autoincrement ``pos``: an object takes the next value of ``seq``
when it is created and is scored with it in every sorted set that lists it, so listings order by
creation and a cursor id translates into a score through the global set of its kind.

Atomicity: creating an object (position, JSON and index entries) and appending messages are Lua
scripts, which Redis runs without interleaving anything. Read-modify-writes (patches, block edits,
tool names, deletes that must first find the index entries to remove) read under WATCH and write in
MULTI/EXEC, reading again whenever a watched key changed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from ..agent import Agent, Block
from ..clock import utcnow
from ..conversation import Conversation
from ..errors import Conflict
from ..message import Message
from ..run import Run
from ..tools.tool import Tool
from .base import Page, Store

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

Row = tuple[str, int]  # (id, position) as read from a sorted set

# KEYS: seq, the object's key, then the sorted sets listing it. ARGV: its JSON, its id.
# Returns its position, or 0 (and writes nothing) if the key is taken.
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local pos = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], pos, ARGV[2]) end
return pos
"""

# KEYS: seq, the conversation, then per message its key followed by its sorted sets.
# ARGV: the conversation JSON ('' leaves it alone), the message count, then per message its id,
# its JSON and how many sorted sets follow its key. Returns the first position, or -i (and writes
# nothing) if message i's key is taken.
_APPEND = """
local n = tonumber(ARGV[2])
local k, a = 3, 3
for i = 1, n do
  if redis.call('EXISTS', KEYS[k]) == 1 then return -i end
  k = k + 1 + tonumber(ARGV[a + 2])
  a = a + 3
end
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
k, a = 3, 3
for i = 1, n do
  local count = tonumber(ARGV[a + 2])
  redis.call('SET', KEYS[k], ARGV[a + 1])
  for j = 1, count do redis.call('ZADD', KEYS[k + j], first + i - 1, ARGV[a]) end
  k = k + 1 + count
  a = a + 3
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
return first
"""

_MAX_BATCH = 1000
_SEARCH_DEPTH = 50  # search_messages reads at most limit * this many of the newest messages


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "parley:") -> None:
        if urlparse(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported redis url {url!r}: expected redis://host:port/db")
        self.url = url
        self.prefix = prefix
        # A client per event loop: asyncio connections belong to the loop that opened them.
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for loop, held in clients.items():
            _close_on(loop, held)

    # --- plumbing ------------------------------------------------------------------------------
    async def _redis(self) -> Redis:
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is None:
            held = _LoopClient(Redis.from_url(self.url, decode_responses=True))
            with self._lock:
                self._forget_closed_loops()
                self._clients[loop] = held
            await held.start()
        return held.client

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            self._clients.pop(loop).abandon()

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _transact(
        self, watch: Sequence[str], body: Callable[[Pipeline], Awaitable[T]]
    ) -> tuple[T, list[Any]]:
        """Run ``body`` until its writes commit with nothing changed under it.

        ``body`` reads through the pipeline while WATCH guards ``watch``, then queues its writes
        after ``pipe.multi()`` or returns without writing. EXEC fails when a watched key changed
        since WATCH: read and decide again. Returns body's result and EXEC's replies; ``body`` may
        run several times, and an exception it raises aborts with nothing written.
        """
        client = await self._redis()
        async with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*watch)
                    result = await body(pipe)
                    if not pipe.explicit_transaction:
                        await pipe.reset()
                        return result, []
                    return result, await pipe.execute()
                except WatchError:
                    continue

    async def _load(self, reader: Redis | Pipeline, kind: str, model: type[M], ids: Sequence[str]) -> list[M]:
        """Objects in the order of ``ids``, skipping missing ones."""
        if not ids:
            return []
        raws = await reader.mget([self._k(kind, i) for i in ids])
        return [model.model_validate_json(raw) for raw in raws if raw is not None]

    async def _one(self, kind: str, model: type[M], ident: str) -> M | None:
        found = await self._load(await self._redis(), kind, model, [ident])
        return found[0] if found else None

    def _create_args(
        self, kind: str, obj: Agent | Tool | Conversation | Run, indexes: Sequence[str]
    ) -> list[Any]:
        """EVAL arguments of ``_CREATE`` for ``obj``."""
        keys = [self._k("seq"), self._k(kind, obj.id), *indexes]
        return [len(keys), *keys, obj.model_dump_json(), obj.id]

    async def _patch(
        self, kind: str, model: type[M], ident: str, fields: Callable[[M], Mapping[str, Any]]
    ) -> M | None:
        """Set ``fields(current)`` on one stored object: the merge of ``SqliteStore._patch``, under WATCH."""
        key = self._k(kind, ident)

        async def body(pipe: Pipeline) -> M | None:
            raw = await pipe.get(key)
            if raw is None:
                return None
            current = model.model_validate_json(raw)
            updated = _merged(current, fields(current))
            pipe.multi()
            pipe.set(key, updated.model_dump_json())
            return updated

        updated, _ = await self._transact([key], body)
        return updated

    # --- listings --------------------------------------------------------------------------------
    async def _list(
        self,
        kind: str,
        model: type[M],
        index: str,
        page: Page,
        *,
        relative: bool,
        keep: Callable[[M], bool] | None = None,
        members: Collection[str] | None = None,
    ) -> list[M]:
        """One page of ``index`` (or of just ``members`` of it), objects failing ``keep`` skipped;
        ``limit`` counts the objects returned. Cursors are ids of the global set of ``kind``."""
        if page.limit == 0:
            return []
        limit = page.limit if page.limit > 0 else math.inf  # SQLite: a negative LIMIT is none
        span = await self._span(kind, page, relative)
        batch = _batch_size(limit, filtered=keep is not None)
        rows = (
            self._walk(index, span, batch)
            if members is None
            else self._walk_members(index, members, span, batch)
        )
        found: list[M] = []
        async with contextlib.aclosing(rows):
            async for chunk in rows:
                found += [obj for obj in await self._fetch(kind, model, chunk) if keep is None or keep(obj)]
                if len(found) >= limit:
                    del found[int(limit) :]
                    break
        return found[::-1] if span.flip else found

    async def _span(self, kind: str, page: Page, relative: bool) -> _Span:
        after = await self._position(kind, page.after)
        before = await self._position(kind, page.before)
        desc = page.order == "desc"
        if not relative:  # absolute: after = newer than, before = older than, whatever the order
            return _Span(low=_or(after, -math.inf), high=_or(before, math.inf), desc=desc)
        # Relative: after = the rows that follow the cursor in the requested order, before = those
        # that precede it. With before alone, walk away from the cursor and flip the page back.
        low, high = (before, after) if desc else (after, before)
        flip = before is not None and after is None
        return _Span(low=_or(low, -math.inf), high=_or(high, math.inf), desc=desc != flip, flip=flip)

    async def _position(self, kind: str, ident: str | None) -> float | None:
        if ident is None:
            return None
        return await (await self._redis()).zscore(self._k(kind + "s"), ident)

    async def _walk(self, index: str, span: _Span, batch: int) -> AsyncIterator[list[Row]]:
        """Rows of ``index`` strictly inside ``span`` in its direction, ``batch`` per round trip."""
        client = await self._redis()
        low, high = span.low, span.high
        while True:
            if span.desc:
                got = await client.zrevrangebyscore(
                    index, _bound(high), _bound(low), start=0, num=batch, withscores=True
                )
            else:
                got = await client.zrangebyscore(
                    index, _bound(low), _bound(high), start=0, num=batch, withscores=True
                )
            rows = [(ident, int(score)) for ident, score in got]
            if rows:
                yield rows
            if len(rows) < batch:
                return
            # Positions are unique, so the last one read is an exclusive bound for the next batch.
            if span.desc:
                high = rows[-1][1]
            else:
                low = rows[-1][1]

    async def _walk_members(
        self, index: str, members: Collection[str], span: _Span, batch: int
    ) -> AsyncIterator[list[Row]]:
        """Like ``_walk`` over just ``members`` (a prefiltered set: tag or name lookups)."""
        ids = list(members)
        scores = await (await self._redis()).zmscore(index, ids) if ids else []
        rows = sorted(
            ((ident, int(score)) for ident, score in zip(ids, scores, strict=True) if score is not None),
            key=lambda row: row[1],
            reverse=span.desc,
        )
        rows = [row for row in rows if span.low < row[1] < span.high]
        for start in range(0, len(rows), batch):
            yield rows[start : start + batch]

    async def _fetch(self, kind: str, model: type[M], rows: Sequence[Row]) -> list[M]:
        """The objects of ``rows`` in order, skipping ids whose object is gone."""
        raws = await (await self._redis()).mget([self._k(kind, ident) for ident, _ in rows])
        found = []
        for (_, pos), raw in zip(rows, raws, strict=True):
            if raw is None:
                continue
            obj = model.model_validate_json(raw)
            if isinstance(obj, Message):
                obj.position = pos  # the score is the position; it is not in the JSON
            found.append(obj)
        return found

    # --- index keys -------------------------------------------------------------------------------
    def _conversation_indexes(self, conversation: Conversation) -> list[str]:
        return [self._k("conversations"), self._k("agent_conversations", conversation.agent_id)]

    def _message_indexes(self, message: Message) -> list[str]:
        indexes = [self._k("messages"), self._k("agent_messages", message.agent_id)]
        if message.conversation_id is not None:
            indexes.append(self._k("conversation_messages", message.conversation_id))
        if message.run_id is not None:
            indexes.append(self._k("run_messages", message.run_id))
        return indexes

    def _run_indexes(self, run: Run) -> list[str]:
        indexes = [self._k("runs"), self._k("agent_runs", run.agent_id)]
        if run.conversation_id is not None:
            indexes.append(self._k("conversation_runs", run.conversation_id))
        return indexes

    def _drop_messages(self, drop: _Drop, messages: Iterable[Message]) -> None:
        for message in messages:
            drop.keys.add(self._k("message", message.id))
            for index in self._message_indexes(message):
                drop.zrem[index].add(message.id)

    def _drop_runs(self, drop: _Drop, runs: Iterable[Run]) -> None:
        for run in runs:
            drop.keys.add(self._k("run", run.id))
            drop.keys.add(self._k("run_log", run.id))
            for index in self._run_indexes(run):
                drop.zrem[index].add(run.id)

    # --- agents and blocks ---------------------------------------------------------------------
    async def create_agent(self, agent: Agent, blocks: Sequence[Block]) -> None:
        agent_key = self._k("agent", agent.id)
        block_keys = [self._k("block", b.id) for b in blocks]

        async def body(pipe: Pipeline) -> None:
            if await pipe.exists(agent_key, *block_keys):
                raise Conflict(f"id: agent {agent.id} or one of its blocks already exists")
            pipe.multi()
            self._queue_blocks(pipe, agent.id, blocks)
            pipe.eval(_CREATE, *self._create_args("agent", agent, [self._k("agents")]))
            self._queue_tags(pipe, agent.id, set(), set(agent.tags))

        await self._transact([agent_key, *block_keys], body)

    def _queue_blocks(self, pipe: Pipeline, owner: str, blocks: Sequence[Block]) -> None:
        if blocks:
            pipe.mset({self._k("block", b.id): b.model_dump_json() for b in blocks})
            pipe.sadd(self._k("agent_blocks", owner), *(b.id for b in blocks))

    def _queue_tags(self, pipe: Pipeline, agent_id: str, old: set[str], new: set[str]) -> None:
        for tag in old - new:
            pipe.srem(self._k("tag_agents", tag), agent_id)
        for tag in new - old:
            pipe.sadd(self._k("tag_agents", tag), agent_id)
        pipe.delete(self._k("agent_tags", agent_id))
        if new:
            pipe.sadd(self._k("agent_tags", agent_id), *new)

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._one("agent", Agent, agent_id)

    async def list_agents(
        self, page: Page, name: str | None = None, tags: Sequence[str] = (), match_all_tags: bool = False
    ) -> list[Agent]:
        members: set[str] | None = None
        if tags:
            client = await self._redis()
            keys = [self._k("tag_agents", t) for t in tags]
            members = await (client.sinter(keys) if match_all_tags else client.sunion(keys))

        def keep(agent: Agent) -> bool:
            return not agent.hidden and (name is None or agent.name == name)

        return await self._list(
            "agent", Agent, self._k("agents"), page, relative=True, keep=keep, members=members
        )

    async def update_agent(self, agent: Agent, new_blocks: Sequence[Block] = ()) -> None:
        agent_key, tags_key = self._k("agent", agent.id), self._k("agent_tags", agent.id)
        block_keys = [self._k("block", b.id) for b in new_blocks]

        async def body(pipe: Pipeline) -> None:
            if block_keys and await pipe.exists(*block_keys):
                raise Conflict("id: one of the new blocks already exists")
            exists = await pipe.exists(agent_key)
            old_tags = await pipe.smembers(tags_key)
            pipe.multi()
            self._queue_blocks(pipe, agent.id, new_blocks)
            if exists:  # as SQLite's UPDATE: no agent, no row written
                pipe.set(agent_key, agent.model_dump_json())
                self._queue_tags(pipe, agent.id, set(old_tags), set(agent.tags))

        await self._transact([agent_key, tags_key, *block_keys], body)

    async def delete_agent(self, agent_id: str) -> bool:
        agent_key = self._k("agent", agent_id)
        owned = [
            self._k(kind, agent_id)
            for kind in ("agent_tags", "agent_blocks", "agent_conversations", "agent_messages", "agent_runs")
        ]
        tags_key, blocks_key, conversations_key, messages_key, runs_key = owned

        async def body(pipe: Pipeline) -> bool:
            exists = bool(await pipe.exists(agent_key))
            tags = await pipe.smembers(tags_key)
            block_ids = await pipe.smembers(blocks_key)
            conversation_ids = await pipe.zrange(conversations_key, 0, -1)
            message_ids = await pipe.zrange(messages_key, 0, -1)
            run_ids = await pipe.zrange(runs_key, 0, -1)
            messages = await self._load(pipe, "message", Message, message_ids)
            runs = await self._load(pipe, "run", Run, run_ids)
            pipe.multi()
            drop = _Drop(keys={agent_key, *owned})
            drop.zrem[self._k("agents")].add(agent_id)
            drop.keys.update(self._k("block", b) for b in block_ids)
            drop.keys.update(self._k("conversation", c) for c in conversation_ids)
            drop.keys.update(self._k("run_keys", c) for c in conversation_ids)
            drop.zrem[self._k("conversations")].update(conversation_ids)
            drop.zrem[self._k("messages")].update(message_ids)  # ids whose JSON is gone, too
            self._drop_messages(drop, messages)
            self._drop_runs(drop, runs)
            for tag in tags:
                pipe.srem(self._k("tag_agents", tag), agent_id)
            drop.queue(pipe)
            return exists

        gone, _ = await self._transact([agent_key, *owned], body)
        return gone

    async def update_block(self, block_id: str, fields: Mapping[str, Any]) -> Block | None:
        return await self._patch("block", Block, block_id, lambda _: fields)

    async def edit_block(self, block_id: str, edit: Callable[[Block], Mapping[str, Any]]) -> Block | None:
        # ``edit`` sees the block as read under WATCH; if another writer commits first, EXEC fails
        # and ``edit`` runs again on the newer block, so no edit is lost.
        return await self._patch(
            "block", Block, block_id, lambda current: {**edit(current), "updated_at": utcnow()}
        )

    async def get_blocks(self, block_ids: Sequence[str]) -> list[Block]:
        return await self._load(await self._redis(), "block", Block, block_ids)

    # --- tools ---------------------------------------------------------------------------------
    async def upsert_tool(self, tool: Tool) -> Tool:
        names, new_key = self._k("tool_names"), self._k("tool", tool.id)

        async def body(pipe: Pipeline) -> Tool:
            held = await pipe.hget(names, tool.name)
            raw = await pipe.get(self._k("tool", held)) if held is not None else None
            if raw is not None:  # replace in place: same id, creation time and position
                existing = Tool.model_validate_json(raw)
                stored = tool.model_copy(update={"id": existing.id, "created_at": existing.created_at})
                pipe.multi()
                pipe.set(self._k("tool", stored.id), stored.model_dump_json())
                return stored
            if await pipe.exists(new_key):
                raise Conflict(f"id: a tool with id {tool.id} already exists")
            pipe.multi()
            pipe.eval(_CREATE, *self._create_args("tool", tool, [self._k("tools")]))
            pipe.hset(names, tool.name, tool.id)
            return tool

        stored, _ = await self._transact([names, new_key], body)
        return stored

    async def update_tool(self, tool: Tool) -> None:
        names, key = self._k("tool_names"), self._k("tool", tool.id)

        async def body(pipe: Pipeline) -> None:
            raw = await pipe.get(key)
            if raw is None:
                return  # as SQLite's UPDATE of no row
            holder = await pipe.hget(names, tool.name)
            if holder is not None and holder != tool.id:
                raise Conflict(f"name: a tool named {tool.name!r} already exists")
            old_name = Tool.model_validate_json(raw).name
            pipe.multi()
            if old_name != tool.name:
                pipe.hdel(names, old_name)
            pipe.hset(names, tool.name, tool.id)
            pipe.set(key, tool.model_dump_json())

        await self._transact([key, names], body)

    async def get_tools(self, tool_ids: Sequence[str]) -> list[Tool]:
        return await self._load(await self._redis(), "tool", Tool, tool_ids)

    async def get_tools_by_name(self, names: Sequence[str]) -> list[Tool]:
        if not names:
            return []
        client = await self._redis()
        ids = await client.hmget(self._k("tool_names"), list(names))
        return await self._load(client, "tool", Tool, [i for i in ids if i is not None])

    async def list_tools(
        self,
        page: Page,
        names: Sequence[str] = (),
        tool_types: Sequence[str] = (),
        exclude_tool_types: Sequence[str] = (),
        search: str | None = None,
    ) -> list[Tool]:
        members: set[str] | None = None
        if names:
            ids = await (await self._redis()).hmget(self._k("tool_names"), list(names))
            members = {i for i in ids if i is not None}
        needle = search.lower() if search else None

        def keep(tool: Tool) -> bool:
            return (
                (not tool_types or tool.tool_type in tool_types)
                and tool.tool_type not in exclude_tool_types
                and (needle is None or needle in tool.name.lower())
            )

        return await self._list(
            "tool", Tool, self._k("tools"), page, relative=True, keep=keep, members=members
        )

    async def delete_tool(self, tool_id: str) -> bool:
        names, key = self._k("tool_names"), self._k("tool", tool_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.get(key)
            if raw is None:
                return False
            name = Tool.model_validate_json(raw).name
            holder = await pipe.hget(names, name)
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self._k("tools"), tool_id)
            if holder == tool_id:
                pipe.hdel(names, name)
            return True

        gone, _ = await self._transact([key, names], body)
        return gone

    # --- conversations -------------------------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> bool:
        args = self._create_args("conversation", conversation, self._conversation_indexes(conversation))
        return await (await self._redis()).eval(_CREATE, *args) != 0

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self._one("conversation", Conversation, conversation_id)

    async def list_conversations(self, agent_id: str | None, page: Page) -> list[Conversation]:
        index = self._k("conversations") if agent_id is None else self._k("agent_conversations", agent_id)

        def keep(conversation: Conversation) -> bool:
            # Neither agents' default conversations nor the ephemeral ones of OpenAI responses.
            return not conversation.is_default and not conversation.ephemeral

        return await self._list("conversation", Conversation, index, page, relative=True, keep=keep)

    async def update_conversation(
        self, conversation_id: str, fields: Mapping[str, Any]
    ) -> Conversation | None:
        return await self._patch("conversation", Conversation, conversation_id, lambda _: fields)

    async def delete_conversation(self, conversation_id: str) -> bool:
        key = self._k("conversation", conversation_id)
        messages_key = self._k("conversation_messages", conversation_id)
        runs_key = self._k("conversation_runs", conversation_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.get(key)
            message_ids = await pipe.zrange(messages_key, 0, -1)
            run_ids = await pipe.zrange(runs_key, 0, -1)
            messages = await self._load(pipe, "message", Message, message_ids)
            runs = await self._load(pipe, "run", Run, run_ids)
            pipe.multi()
            drop = _Drop(keys={key, messages_key, runs_key, self._k("run_keys", conversation_id)})
            drop.zrem[self._k("conversations")].add(conversation_id)
            if raw is not None:
                agent_id = Conversation.model_validate_json(raw).agent_id
                drop.zrem[self._k("agent_conversations", agent_id)].add(conversation_id)
            drop.zrem[self._k("messages")].update(message_ids)
            self._drop_messages(drop, messages)
            self._drop_runs(drop, runs)
            drop.queue(pipe)
            return raw is not None

        gone, _ = await self._transact([key, messages_key, runs_key], body)
        return gone

    # --- messages ------------------------------------------------------------------------------
    async def append_messages(
        self, messages: Sequence[Message], conversation_fields: Mapping[str, Any] | None = None
    ) -> None:
        if not messages:
            return
        if len({m.id for m in messages}) != len(messages):
            raise Conflict("id: a message appears twice in one append")
        conversation_id = messages[0].conversation_id
        if conversation_fields and conversation_id:
            first = await self._append_with_conversation(messages, conversation_id, conversation_fields)
        else:
            first = await (await self._redis()).eval(_APPEND, *self._append_args(messages, None, ""))
        if first < 0:
            raise Conflict(f"id: message {messages[-first - 1].id} already exists")
        for offset, message in enumerate(messages):
            message.position = first + offset

    async def _append_with_conversation(
        self, messages: Sequence[Message], conversation_id: str, fields: Mapping[str, Any]
    ) -> int:
        """The append script in MULTI/EXEC after reading the conversation under WATCH: the patch is
        computed from the stored conversation and written by the script with the messages."""
        key = self._k("conversation", conversation_id)

        async def body(pipe: Pipeline) -> None:
            raw = await pipe.get(key)
            patched = (
                ""
                if raw is None
                else _merged(Conversation.model_validate_json(raw), fields).model_dump_json()
            )
            pipe.multi()
            pipe.eval(_APPEND, *self._append_args(messages, key, patched))

        _, replies = await self._transact([key], body)
        return replies[0]

    def _append_args(
        self, messages: Sequence[Message], conversation_key: str | None, conversation: str
    ) -> list[Any]:
        """EVAL arguments of ``_APPEND``."""
        keys = [self._k("seq"), conversation_key or self._k("seq")]  # a key must be named even if unused
        args: list[Any] = [conversation, len(messages)]
        for message in messages:
            indexes = self._message_indexes(message)
            keys += [self._k("message", message.id), *indexes]
            args += [message.id, _message_json(message), len(indexes)]
        return [len(keys), *keys, *args]

    async def replace_message(self, message: Message) -> None:
        # XX: only a stored message is rewritten; its position (the score) is untouched.
        await (await self._redis()).set(self._k("message", message.id), _message_json(message), xx=True)

    async def delete_messages(self, message_ids: Sequence[str]) -> None:
        keys = [self._k("message", i) for i in message_ids]
        if not keys:
            return

        async def body(pipe: Pipeline) -> None:
            messages = await self._load(pipe, "message", Message, message_ids)
            if messages:
                pipe.multi()
                drop = _Drop()
                self._drop_messages(drop, messages)
                drop.queue(pipe)

        await self._transact(keys, body)

    async def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        if not message_ids:
            return []
        scores = await (await self._redis()).zmscore(self._k("messages"), list(message_ids))
        rows = [(i, int(s)) for i, s in zip(message_ids, scores, strict=True) if s is not None]
        return await self._fetch("message", Message, rows)

    async def list_messages(self, conversation_id: str, page: Page) -> list[Message]:
        return await self._message_page(self._k("conversation_messages", conversation_id), page)

    async def list_agent_messages(self, agent_id: str, page: Page) -> list[Message]:
        return await self._message_page(self._k("agent_messages", agent_id), page)

    async def list_run_messages(self, run_id: str, page: Page) -> list[Message]:
        return await self._message_page(self._k("run_messages", run_id), page)

    async def _message_page(self, index: str, page: Page) -> list[Message]:
        return await self._list("message", Message, index, page, relative=False)

    async def search_messages(
        self, agent_id: str, query: str, roles: Sequence[str], limit: int
    ) -> list[Message]:
        if limit <= 0:
            return []
        needle = query.lower()
        budget = limit * _SEARCH_DEPTH
        found: list[Message] = []
        rows = self._walk(self._k("agent_messages", agent_id), _Span(), min(budget, _MAX_BATCH))
        async with contextlib.aclosing(rows):
            async for chunk in rows:
                chunk = chunk[:budget]
                budget -= len(chunk)
                for message in await self._fetch("message", Message, chunk):
                    if message.role in roles and needle in _searchable_text(message).lower():
                        found.append(message)
                        if len(found) == limit:
                            return found
                if budget <= 0:
                    break
        return found

    # --- runs ----------------------------------------------------------------------------------
    async def create_run(self, run: Run) -> None:
        redis = await self._redis()
        args = self._create_args("run", run, self._run_indexes(run))
        if await redis.eval(_CREATE, *args) == 0:
            raise Conflict(f"id: run {run.id} already exists")
        if run.idempotency_key is not None and run.conversation_id is not None:
            # After the run exists: a crash in between loses the key (a retry then starts a new
            # run), never points it at a run that is not there.
            await redis.hset(self._k("run_keys", run.conversation_id), run.idempotency_key, run.id)

    async def find_run_by_key(self, conversation_id: str, key: str) -> Run | None:
        run_id = await (await self._redis()).hget(self._k("run_keys", conversation_id), key)
        return await self._one("run", Run, run_id) if run_id else None

    async def update_run(self, run: Run) -> None:
        # XX: a run deleted meanwhile stays deleted (SQLite's UPDATE of no row).
        await (await self._redis()).set(self._k("run", run.id), run.model_dump_json(), xx=True)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._one("run", Run, run_id)

    async def append_run_events(self, run_id: str, chunk: bytes) -> None:
        await (await self._redis()).xadd(self._k("run_log", run_id), {"b": chunk})

    async def get_run_events(self, run_id: str) -> list[bytes]:
        entries = await (await self._redis()).xrange(self._k("run_log", run_id))
        chunks = []
        for _entry_id, fields in entries:
            data = fields.get(b"b", fields.get("b"))
            chunks.append(data.encode() if isinstance(data, str) else data)
        return chunks

    async def delete_run(self, run_id: str) -> bool:
        key = self._k("run", run_id)

        async def body(pipe: Pipeline) -> bool:
            runs = await self._load(pipe, "run", Run, [run_id])
            if not runs:
                return False
            pipe.multi()
            drop = _Drop()
            self._drop_runs(drop, runs)
            drop.queue(pipe)
            return True

        gone, _ = await self._transact([key], body)
        return gone

    async def list_runs(
        self,
        page: Page,
        agent_ids: Sequence[str] = (),
        conversation_id: str | None = None,
        statuses: Sequence[str] = (),
        background: bool | None = None,
        stop_reason: str | None = None,
    ) -> list[Run]:
        if conversation_id is not None:
            index = self._k("conversation_runs", conversation_id)
        elif len(agent_ids) == 1:
            index = self._k("agent_runs", agent_ids[0])
        else:
            index = self._k("runs")

        def keep(run: Run) -> bool:
            return (
                (not agent_ids or run.agent_id in agent_ids)
                and (conversation_id is None or run.conversation_id == conversation_id)
                and (not statuses or run.status in statuses)
                and (background is None or run.background == background)
                and (stop_reason is None or run.stop_reason == stop_reason)
            )

        return await self._list("run", Run, index, page, relative=True, keep=keep)


@dataclass(frozen=True)
class _Span:
    """Exclusive position bounds of a listing and the direction to walk them."""

    low: float = -math.inf
    high: float = math.inf
    desc: bool = True
    flip: bool = False  # walked against the requested order: reverse the page found


@dataclass
class _Drop:
    """Keys to delete and sorted-set members to remove, queued as few commands."""

    keys: set[str] = field(default_factory=set)
    zrem: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def queue(self, pipe: Pipeline) -> None:
        for index, members in self.zrem.items():
            if members:
                pipe.zrem(index, *members)
        if self.keys:
            pipe.delete(*self.keys)


class _LoopClient:
    """The client of one event loop, and an async generator that closes it with the loop.

    ``asyncio.run`` (and ``asyncio.Runner``) call ``loop.shutdown_asyncgens()`` before closing the
    loop: the generator then gets GeneratorExit while the loop still runs and closes the client's
    connections properly, even though nobody called ``RedisStore.close``.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._closer = self._close_at_shutdown()

    async def _close_at_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        except GeneratorExit:
            await self.client.aclose()
            raise

    async def start(self) -> None:
        await anext(self._closer)  # its first step registers it with the running loop

    async def aclose(self) -> None:
        await self._closer.aclose()

    def abandon(self) -> None:
        """Finish the generator without its loop (closed, or not ours to drive): a suspended one
        would call into that loop when collected. The sockets close when collected."""
        with contextlib.suppress(StopIteration, StopAsyncIteration):
            self._closer.asend(None).send(None)


_background: set[asyncio.Task[None]] = set()


def _close_on(loop: asyncio.AbstractEventLoop, held: _LoopClient) -> None:
    """Close ``held`` from sync code, best effort: its connections can only close on ``loop``."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop.is_closed():
        held.abandon()
    elif current is loop:  # called from sync code inside the loop: it cannot block, so schedule
        task = loop.create_task(held.aclose())
        _background.add(task)
        task.add_done_callback(_background.discard)
    elif loop.is_running():  # another thread's loop
        asyncio.run_coroutine_threadsafe(held.aclose(), loop)
    elif current is None:
        loop.run_until_complete(held.aclose())
    else:  # another loop runs in this thread, so this one cannot be driven now
        held.abandon()


def _merged(current: M, fields: Mapping[str, Any]) -> M:
    return type(current).model_validate({**current.model_dump(), **fields})


def _message_json(message: Message) -> str:
    return message.model_dump_json(exclude={"position"})


def _searchable_text(message: Message) -> str:
    return message.text() or "".join(getattr(p, "content", "") for p in message.parts)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _bound(value: float) -> str:
    """An exclusive ZRANGEBYSCORE bound."""
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"({int(value)}"


def _batch_size(limit: float, filtered: bool) -> int:
    """Rows per round trip: the page itself when nothing is filtered out, more when some may be."""
    if math.isinf(limit):
        return _MAX_BATCH
    return int(min(limit if not filtered else max(limit * 4, 100), _MAX_BATCH))
