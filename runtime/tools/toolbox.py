"""``Toolbox``: the tools of one run, and how each call the model makes is carried out.

Built-in tools run here (they are store operations); user tools go to a ``ToolRunner``, which the
actor layer backs with Ray tasks. Every failure becomes an error result the model can read, never
an exception that ends the run: a tool that raises, hangs or names nothing is the model's problem
to recover from.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

from ..agent import Agent
from ..message import ToolCallPart, ToolReturnPart
from ..providers.base import ToolSchema
from ..store import Store
from .built_in import BuiltInTools, ToolFailure, is_memory_tool
from .sandbox import ToolOutcome, truncate
from .tool import Tool


class ToolRunner(Protocol):
    async def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome: ...


class Toolbox:
    def __init__(
        self,
        store: Store,
        agent: Agent,
        tools: Sequence[Tool],
        runner: ToolRunner | None,
        client_tools: Sequence[ToolSchema] = (),
    ) -> None:
        self._tools = {t.name: t for t in tools}
        self._runner = runner
        self._built_in = BuiltInTools(store, agent)
        # Tools the client runs itself: a call to one ends the run, and the client answers it.
        self._client_tools = {t.name for t in client_tools}
        self._schemas = [t.schema_for_model() for t in tools if t.name not in self._client_tools]
        self._schemas += list(client_tools)
        self.memory_changed = False  # a memory tool ran: the system prompt needs recompiling

    @property
    def schemas(self) -> list[ToolSchema]:
        return self._schemas

    def is_client_tool(self, name: str) -> bool:
        return name in self._client_tools

    async def call_all(self, calls: Sequence[ToolCallPart]) -> list[ToolReturnPart]:
        """Run one step's calls (in parallel); results in the order of the calls."""
        if len(calls) == 1:
            return [await self.call(calls[0])]
        return list(await asyncio.gather(*(self.call(c) for c in calls)))

    async def call(self, call: ToolCallPart) -> ToolReturnPart:
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(call, f"there is no tool named {call.name!r}; available: {', '.join(self._tools)}")
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return _error(call, f"the arguments are not valid JSON ({exc.msg}): {call.arguments[:200]}")
        if not isinstance(arguments, dict):
            return _error(call, "the arguments must be a JSON object")
        if tool.built_in and self._built_in.handles(tool.name):
            try:
                content = await self._built_in.call(tool.name, arguments)
            except ToolFailure as exc:
                return _error(call, str(exc))
            if is_memory_tool(tool.name):
                self.memory_changed = True
            return ToolReturnPart(tool_call_id=call.id, name=call.name, content=content)
        if self._runner is None or not tool.source_code:
            return _error(call, f"tool {call.name!r} cannot be executed on this server")
        outcome = await self._runner.run(tool, arguments)
        return ToolReturnPart(
            tool_call_id=call.id,
            name=call.name,
            content=truncate(outcome.content, tool.return_char_limit),
            status=outcome.status,
            stdout=outcome.stdout or None,
            stderr=outcome.stderr or None,
        )


def _error(call: ToolCallPart, message: str) -> ToolReturnPart:
    return ToolReturnPart(tool_call_id=call.id, name=call.name, content=f"Error: {message}", status="error")
