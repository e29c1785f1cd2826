"""``/v1/agents/{id}/tools``: the tools attached to an agent; attach and detach by id."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from runtime.clock import utcnow
from serve_app.routing import PageLimit, relative_window
from serve_app.services import Services, ServicesDep

from . import render
from .agents import agent_view, load_agent
from .tools import load_tool

router = APIRouter()


@router.get("/v1/agents/{agent_id}/tools")
async def list_agent_tools(
    agent_id: str,
    services: ServicesDep,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 10,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    agent, _ = await load_agent(services, agent_id)
    tools = await services.store.get_tools(agent.tool_ids)
    return [render.tool(t) for t in relative_window(tools, lambda t: t.id, after, before, limit, order)]


async def _set_tools(services: Services, agent_id: str, tool_id: str, attach: bool) -> dict[str, Any]:
    agent, blocks = await load_agent(services, agent_id)
    tool = await load_tool(services, tool_id)
    tool_ids = [i for i in agent.tool_ids if i != tool.id]
    if attach:
        tool_ids.append(tool.id)
    updated = agent.model_copy(update={"tool_ids": tool_ids, "updated_at": utcnow()})
    await services.store.update_agent(updated)
    return await agent_view(services, updated, blocks)


@router.patch("/v1/agents/{agent_id}/tools/attach/{tool_id}")
async def attach_tool(agent_id: str, tool_id: str, services: ServicesDep) -> dict[str, Any]:
    return await _set_tools(services, agent_id, tool_id, attach=True)


@router.patch("/v1/agents/{agent_id}/tools/detach/{tool_id}")
async def detach_tool(agent_id: str, tool_id: str, services: ServicesDep) -> dict[str, Any]:
    return await _set_tools(services, agent_id, tool_id, attach=False)
