"""The ``Store`` interface every backend implements.

The store is the truth; actors only cache. Everything acknowledged to a client is written here
first. Methods are async so a networked backend fits the same shape; the SQLite backend answers
inline because its calls take tens of microseconds and a thread hop would cost more.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..agent import Agent, Block
from ..conversation import Conversation
from ..message import Message
from ..run import Run
from ..tools.tool import Tool

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page:
    """Cursor arguments of a list call. Cursors are ids of rows of the same listing."""

    limit: int = 50
    order: Order = "desc"
    after: str | None = None
    before: str | None = None


class Store(abc.ABC):
    # --- agents and blocks -------------------------------------------------------------------
    @abc.abstractmethod
    async def create_agent(self, agent: Agent, blocks: Sequence[Block]) -> None: ...

    @abc.abstractmethod
    async def get_agent(self, agent_id: str) -> Agent | None: ...

    @abc.abstractmethod
    async def list_agents(
        self, page: Page, name: str | None = None, tags: Sequence[str] = (), match_all_tags: bool = False
    ) -> list[Agent]:
        """Agents matching the filters; hidden agents are never listed."""

    @abc.abstractmethod
    async def update_agent(self, agent: Agent, new_blocks: Sequence[Block] = ()) -> None:
        """Replace the agent row; ``new_blocks`` are created alongside in the same transaction."""

    @abc.abstractmethod
    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent with its blocks, conversations, messages and runs."""

    @abc.abstractmethod
    async def update_block(self, block_id: str, fields: Mapping[str, Any]) -> Block | None:
        """Set ``fields`` on a block atomically (two conversations editing one block lose nothing)."""

    @abc.abstractmethod
    async def edit_block(self, block_id: str, edit: Callable[[Block], Mapping[str, Any]]) -> Block | None:
        """Read-modify-write one block atomically: ``edit`` receives the block as stored now and
        returns the fields to set (raising aborts the edit). None if there is no such block."""

    @abc.abstractmethod
    async def get_blocks(self, block_ids: Sequence[str]) -> list[Block]:
        """Blocks in the order of ``block_ids``; missing ids are skipped."""

    # --- tools -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def upsert_tool(self, tool: Tool) -> Tool:
        """Store ``tool`` by name: a tool of that name is replaced in place and keeps its id and
        creation time. Returns the stored tool."""

    @abc.abstractmethod
    async def update_tool(self, tool: Tool) -> None:
        """Replace a stored tool (by id); ``Conflict`` if its new name belongs to another tool."""

    @abc.abstractmethod
    async def get_tools(self, tool_ids: Sequence[str]) -> list[Tool]:
        """Tools in the order of ``tool_ids``; missing ids are skipped."""

    @abc.abstractmethod
    async def get_tools_by_name(self, names: Sequence[str]) -> list[Tool]:
        """Tools in the order of ``names``; unknown names are skipped."""

    @abc.abstractmethod
    async def list_tools(
        self,
        page: Page,
        names: Sequence[str] = (),
        tool_types: Sequence[str] = (),
        exclude_tool_types: Sequence[str] = (),
        search: str | None = None,
    ) -> list[Tool]:
        """Tools matching every filter given (``search``: name contains); cursors relative."""

    @abc.abstractmethod
    async def delete_tool(self, tool_id: str) -> bool: ...

    # --- conversations -----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_conversation(self, conversation: Conversation) -> bool:
        """Store a new conversation; False (and nothing written) if its id is taken."""

    @abc.abstractmethod
    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    @abc.abstractmethod
    async def list_conversations(self, agent_id: str | None, page: Page) -> list[Conversation]:
        """Conversations (agents' default conversations and ephemeral ones are not listed)."""

    @abc.abstractmethod
    async def update_conversation(
        self, conversation_id: str, fields: Mapping[str, Any]
    ) -> Conversation | None:
        """Set ``fields`` on the stored conversation atomically; other fields keep whatever they
        hold now (the HTTP layer and the conversation's actor each own different fields)."""

    @abc.abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool: ...

    # --- messages ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def append_messages(
        self, messages: Sequence[Message], conversation_fields: Mapping[str, Any] | None = None
    ) -> None:
        """Append in order, assigning ``position``; ``conversation_fields`` are set on the messages'
        conversation in the same transaction (its in-context ids and timestamps move with them)."""

    @abc.abstractmethod
    async def replace_message(self, message: Message) -> None:
        """Rewrite a stored message in place, keeping its position (system prompt recompiles)."""

    @abc.abstractmethod
    async def delete_messages(self, message_ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        """Messages in the order of ``message_ids``; missing ids are skipped."""

    @abc.abstractmethod
    async def list_messages(self, conversation_id: str, page: Page) -> list[Message]:
        """Messages of a conversation; cursors are absolute (``after`` = newer than, ``before`` =
        older than the cursor message), ``order`` picks newest-first or oldest-first."""

    @abc.abstractmethod
    async def list_agent_messages(self, agent_id: str, page: Page) -> list[Message]:
        """Every message of an agent, in all of its conversations, with the cursors of ``list_messages``."""

    @abc.abstractmethod
    async def search_messages(
        self, agent_id: str, query: str, roles: Sequence[str], limit: int
    ) -> list[Message]:
        """The agent's newest messages with one of ``roles`` whose text contains ``query``
        (case-insensitive), newest first."""

    @abc.abstractmethod
    async def list_run_messages(self, run_id: str, page: Page) -> list[Message]:
        """Messages a run stored (its input included), with the cursors of ``list_messages``."""

    # --- runs --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_run(self, run: Run) -> None: ...

    @abc.abstractmethod
    async def update_run(self, run: Run) -> None: ...

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run | None: ...

    @abc.abstractmethod
    async def find_run_by_key(self, conversation_id: str, key: str) -> Run | None:
        """The latest run created in the conversation with this ``idempotency_key``, if any."""

    @abc.abstractmethod
    async def append_run_events(self, run_id: str, chunk: bytes) -> None:
        """Append a batch of a background run's events (``events.encode_batch``) to its stored log,
        written while it runs, so its stream can be replayed by any replica, also after the
        conversation's actor is gone; the log is deleted with the run."""

    @abc.abstractmethod
    async def get_run_events(self, run_id: str) -> list[bytes]:
        """The run's stored batches in the order appended ([] for none)."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> bool:
        """Forget a run (its messages stay in their conversation)."""

    @abc.abstractmethod
    async def list_runs(
        self,
        page: Page,
        agent_ids: Sequence[str] = (),
        conversation_id: str | None = None,
        statuses: Sequence[str] = (),
        background: bool | None = None,
        stop_reason: str | None = None,
    ) -> list[Run]:
        """Runs matching every filter given; cursors are relative to the order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def open_store(url: str) -> Store:
    """A store for ``url``: ``sqlite:///path/to/file.db`` (the default) or ``redis://host:port/db``
    (``rediss://`` for TLS)."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite://"))
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store url {url!r}: expected sqlite:///path or redis://host:port/db")
