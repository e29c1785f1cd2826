"""The built-in tools: memory edits and conversation search, run inside the conversation's actor.

They are store operations, not user code, so they need no worker process. A memory edit is one
atomic read-modify-write of the block in the store (``Store.edit_block``): two conversations of
one agent editing the same block at once both land, in some order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..agent import Agent, Block
from ..store import Store
from .tool import LETTA_CORE, LETTA_MEMORY_CORE, Tool


class ToolFailure(Exception):
    """A built-in tool refused the call; the message is what the model reads."""


def _params(properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


_LABEL = _string("The label of the memory block to edit, e.g. 'human' or 'persona'.")

_DEFINITIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "memory_insert": (
        LETTA_MEMORY_CORE,
        "Insert text into one of your memory blocks, at a given line (the end by default). "
        "The block is shared by all of your conversations.",
        _params(
            {
                "label": _LABEL,
                "new_string": _string("The text to insert."),
                "insert_line": {
                    "type": "integer",
                    "description": "The line after which to insert: 0 for the top, -1 for the end.",
                    "default": -1,
                },
            },
            ["label", "new_string"],
        ),
    ),
    "memory_replace": (
        LETTA_MEMORY_CORE,
        "Replace text in one of your memory blocks. old_string must occur exactly once in the block; "
        "an empty new_string deletes it.",
        _params(
            {
                "label": _LABEL,
                "old_string": _string("The exact text to replace, as it appears in the block."),
                "new_string": _string("The text to put in its place."),
            },
            ["label", "old_string", "new_string"],
        ),
    ),
    "core_memory_append": (
        LETTA_MEMORY_CORE,
        "Append text to the end of one of your memory blocks, on a new line.",
        _params({"label": _LABEL, "content": _string("The text to append.")}, ["label", "content"]),
    ),
    "core_memory_replace": (
        LETTA_MEMORY_CORE,
        "Replace text in one of your memory blocks; every occurrence of old_content is replaced.",
        _params(
            {
                "label": _LABEL,
                "old_content": _string("The exact text to replace."),
                "new_content": _string("The replacement text."),
            },
            ["label", "old_content", "new_content"],
        ),
    ),
    "conversation_search": (
        LETTA_CORE,
        "Search the messages of all your past conversations for text; the newest matches come first.",
        _params(
            {
                "query": _string("Text to look for (case-insensitive)."),
                "roles": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["assistant", "user", "tool"]},
                    "description": "Only messages with these roles.",
                },
                "limit": {"type": "integer", "description": "At most this many results.", "default": 10},
            },
            ["query"],
        ),
    ),
}

# Attached to a new agent when it asks for base tools (the default), by agent type.
BASE_TOOLS: dict[str, tuple[str, ...]] = {
    "letta_v1_agent": ("conversation_search", "memory_replace", "memory_insert"),
    "memgpt_v2_agent": ("conversation_search", "memory_replace", "memory_insert"),
}
LEGACY_BASE_TOOLS = ("conversation_search", "core_memory_append", "core_memory_replace")
SEARCH_LIMIT = 50


def base_tool_names(agent_type: str) -> tuple[str, ...]:
    return BASE_TOOLS.get(agent_type, LEGACY_BASE_TOOLS)


def definitions() -> list[Tool]:
    """Fresh ``Tool`` rows for every built-in (the store keeps one of each, by name)."""
    return [
        Tool(
            name=name,
            description=description,
            tool_type=tool_type,
            json_schema={"name": name, "description": description, "parameters": parameters},
            tags=["letta"],
        )
        for name, (tool_type, description, parameters) in _DEFINITIONS.items()
    ]


def is_memory_tool(name: str) -> bool:
    entry = _DEFINITIONS.get(name)
    return entry is not None and entry[0] == LETTA_MEMORY_CORE


BlockEdit = Callable[[Block], Mapping[str, Any]]


class BuiltInTools:
    """Runs built-in calls for one agent's run."""

    def __init__(self, store: Store, agent: Agent) -> None:
        self._store = store
        self._agent = agent
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {
            "memory_insert": self._memory_insert,
            "memory_replace": self._memory_replace,
            "core_memory_append": self._core_memory_append,
            "core_memory_replace": self._core_memory_replace,
            "conversation_search": self._conversation_search,
        }

    def handles(self, name: str) -> bool:
        return name in self._handlers

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        try:
            return await self._handlers[name](arguments)
        except KeyError as exc:
            raise ToolFailure(f"missing argument {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ToolFailure(f"bad arguments: {exc}") from None

    # --- memory -----------------------------------------------------------------------------
    async def _edit(self, label: str, edit: Callable[[str], str]) -> str:
        blocks = await self._store.get_blocks(self._agent.block_ids)
        target = next((b for b in blocks if b.label == label), None)
        if target is None:
            known = ", ".join(repr(b.label) for b in blocks) or "none"
            raise ToolFailure(f"no memory block labelled {label!r} (blocks: {known})")

        def apply(block: Block) -> Mapping[str, Any]:
            if block.read_only:
                raise ToolFailure(f"memory block {label!r} is read-only")
            value = edit(block.value)
            if len(value) > block.limit:
                raise ToolFailure(
                    f"the edit would make block {label!r} {len(value)} characters long; its limit is {block.limit}"
                )
            return {"value": value}

        updated = await self._store.edit_block(target.id, apply)
        if updated is None:
            raise ToolFailure(f"memory block {label!r} no longer exists")
        return f"The memory block {label!r} has been updated; it now holds {len(updated.value)} characters."

    async def _memory_insert(self, args: dict[str, Any]) -> str:
        text = str(args["new_string"])
        line = int(args.get("insert_line", -1))

        def insert(value: str) -> str:
            lines = value.split("\n") if value else []
            at = len(lines) if line < 0 or line > len(lines) else line
            return "\n".join([*lines[:at], *text.split("\n"), *lines[at:]])

        return await self._edit(str(args["label"]), insert)

    async def _memory_replace(self, args: dict[str, Any]) -> str:
        old, new = str(args["old_string"]), str(args["new_string"])
        if not old:
            raise ToolFailure("old_string must not be empty")

        def replace(value: str) -> str:
            count = value.count(old)
            if count == 0:
                raise ToolFailure(f"old_string {old!r} does not occur in block {args['label']!r}")
            if count > 1:
                raise ToolFailure(
                    f"old_string {old!r} occurs {count} times in block {args['label']!r}; "
                    "include more surrounding text so it is unique"
                )
            return value.replace(old, new)

        return await self._edit(str(args["label"]), replace)

    async def _core_memory_append(self, args: dict[str, Any]) -> str:
        content = str(args["content"])
        return await self._edit(str(args["label"]), lambda value: f"{value}\n{content}" if value else content)

    async def _core_memory_replace(self, args: dict[str, Any]) -> str:
        old, new = str(args["old_content"]), str(args["new_content"])

        def replace(value: str) -> str:
            if not old or old not in value:
                raise ToolFailure(f"old_content {old!r} does not occur in block {args['label']!r}")
            return value.replace(old, new)

        return await self._edit(str(args["label"]), replace)

    # --- recall -------------------------------------------------------------------------------
    async def _conversation_search(self, args: dict[str, Any]) -> str:
        query = str(args["query"])
        roles = args.get("roles") or ("user", "assistant", "tool")
        limit = max(1, min(int(args.get("limit") or 10), SEARCH_LIMIT))
        found = await self._store.search_messages(self._agent.id, query, tuple(roles), limit)
        results = [
            {
                "role": m.role,
                "content": m.text() or "".join(getattr(p, "content", "") for p in m.parts),
                "created_at": m.created_at.isoformat(),
                "conversation_id": m.conversation_id,
            }
            for m in found
        ]
        if not results:
            return f"No messages found matching {query!r}."
        return json.dumps(results)
