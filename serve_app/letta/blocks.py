"""Memory blocks: ``/v1/agents/{id}/core-memory/blocks`` by label, ``/v1/blocks/{id}`` by id.

An edit shows in every conversation of the agent from its next turn on: each turn recompiles the
conversation's system message from the blocks as they are then.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from runtime import ids
from runtime.agent import Block
from runtime.clock import utcnow
from runtime.errors import NotFound, ValidationFailed
from serve_app.routing import PageLimit, relative_window, require_id
from serve_app.services import Services, ServicesDep

from . import render
from .agents import load_agent
from .schemas import UpdateBlock

router = APIRouter()


async def _update(services: Services, block: Block, body: UpdateBlock) -> dict[str, Any]:
    fields = {name: getattr(body, name) for name in body.model_fields_set if getattr(body, name) is not None}
    value = fields.get("value", block.value)
    limit = fields.get("limit", block.limit)
    if len(value) > limit:
        raise ValidationFailed(f"value: {len(value)} characters exceed the block's limit of {limit}")
    updated = await services.store.update_block(block.id, {**fields, "updated_at": utcnow()})
    if updated is None:
        raise NotFound(f"Block {block.id} not found")
    return render.block(updated)


async def _by_label(services: Services, agent_id: str, label: str) -> Block:
    _, blocks = await load_agent(services, agent_id)
    found = next((b for b in blocks if b.label == label), None)
    if found is None:
        raise NotFound(f"Block with label {label!r} not found on agent {agent_id}")
    return found


@router.get("/v1/agents/{agent_id}/core-memory/blocks")
async def list_agent_blocks(
    agent_id: str,
    services: ServicesDep,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 100,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    """Cursors are relative to the order; a page past the end is empty (the SDK pages until then)."""
    _, blocks = await load_agent(services, agent_id)
    return [render.block(b) for b in relative_window(blocks, lambda b: b.id, after, before, limit, order)]


@router.get("/v1/agents/{agent_id}/core-memory/blocks/{block_label}")
async def retrieve_agent_block(agent_id: str, block_label: str, services: ServicesDep) -> dict[str, Any]:
    return render.block(await _by_label(services, agent_id, block_label))


@router.patch("/v1/agents/{agent_id}/core-memory/blocks/{block_label}")
async def update_agent_block(
    agent_id: str, block_label: str, body: UpdateBlock, services: ServicesDep
) -> dict[str, Any]:
    return await _update(services, await _by_label(services, agent_id, block_label), body)


async def _by_id(services: Services, block_id: str) -> Block:
    require_id(ids.BLOCK, block_id, "block_id")
    found = await services.store.get_blocks([block_id])
    if not found:
        raise NotFound(f"Block {block_id} not found")
    return found[0]


@router.get("/v1/blocks/{block_id}")
async def retrieve_block(block_id: str, services: ServicesDep) -> dict[str, Any]:
    return render.block(await _by_id(services, block_id))


@router.patch("/v1/blocks/{block_id}")
async def update_block(block_id: str, body: UpdateBlock, services: ServicesDep) -> dict[str, Any]:
    return await _update(services, await _by_id(services, block_id), body)
