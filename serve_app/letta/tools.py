"""``/v1/tools``: register Python tools from source; list, retrieve, update, delete.

Create and upsert both store by function name, as Letta does: registering a function again
updates the tool in place and keeps its id. The schema comes from the signature and docstring
(``runtime.tools.schema``); a function it cannot describe is a 422 that says why.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from runtime import ids
from runtime.clock import utcnow
from runtime.errors import NotFound, ValidationFailed
from runtime.limits import InputLimits
from runtime.store import Page
from runtime.tools import built_in
from runtime.tools.schema import given_function, schema_from_source
from runtime.tools.tool import BUILT_IN_TYPES, DEFAULT_RETURN_CHAR_LIMIT, MAX_NAME_LENGTH, Tool
from serve_app.routing import PageLimit, collection, require_id
from serve_app.services import Services, ServicesDep

from . import render
from .schemas import CreateTool, ToolFields

router = APIRouter()


def _json_schema(fields: ToolFields, source_code: str) -> dict[str, Any]:
    """The schema given, or the one derived from the source."""
    if fields.json_schema is not None:
        name = fields.json_schema.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationFailed("json_schema.name: a tool's JSON schema needs a name")
        if len(name) > MAX_NAME_LENGTH:
            raise ValidationFailed(f"json_schema.name: at most {MAX_NAME_LENGTH} characters")
        schema = fields.json_schema
        given_function(name, schema.get("description"), schema.get("parameters"), "json_schema")
        return schema
    derived = schema_from_source(source_code, fields.args_json_schema)
    return derived.model_dump()


def _new_tool(body: CreateTool, limits: InputLimits) -> Tool:
    limits.check_tool_source(body.source_code)
    schema = _json_schema(body, body.source_code)
    description = body.description or schema.get("description") or ""
    if body.description:
        schema = {**schema, "description": body.description}
    return Tool(
        name=schema["name"],
        description=description,
        source_type=body.source_type or "python",
        source_code=body.source_code,
        json_schema=schema,
        args_json_schema=body.args_json_schema,
        tags=body.tags or [],
        return_char_limit=body.return_char_limit or DEFAULT_RETURN_CHAR_LIMIT,
        pip_requirements=body.pip_requirements,
        npm_requirements=body.npm_requirements,
        default_requires_approval=body.default_requires_approval,
        enable_parallel_execution=body.enable_parallel_execution,
        metadata=body.metadata,
    )


async def ensure_built_in_tools(services: Services) -> None:
    """Store the built-in tools once per process (idempotent: upsert by name)."""
    if services.built_in_tools_ready:
        return
    for tool in built_in.definitions():
        await services.store.upsert_tool(tool)
    services.built_in_tools_ready = True


async def load_tool(services: Services, tool_id: str) -> Tool:
    require_id(ids.TOOL, tool_id, "tool_id")
    found = await services.store.get_tools([tool_id])
    if not found:
        raise NotFound(f"Tool with id {tool_id} not found")
    return found[0]


async def resolve_tools(
    services: Services, tool_ids: list[str] | None, names: list[str] | None, base_for: str | None
) -> list[str]:
    """Tool ids for an agent from ``tool_ids``, tool names and (``base_for`` an agent type) its
    base tools; unknown ones are a 404 naming the field."""
    wanted: list[str] = []
    for tool_id in tool_ids or []:
        require_id(ids.TOOL, tool_id, "tool_ids")
    found = await services.store.get_tools(tool_ids or [])
    missing = [i for i in tool_ids or [] if i not in {t.id for t in found}]
    if missing:
        raise NotFound(f"tool_ids: Tool {missing[0]} not found")
    wanted += [t.id for t in found]
    all_names = list(names or [])
    if base_for is not None or all_names:
        await ensure_built_in_tools(services)
    if base_for is not None:
        all_names += [n for n in built_in.base_tool_names(base_for) if n not in all_names]
    by_name = await services.store.get_tools_by_name(all_names)
    unknown = [n for n in names or [] if n not in {t.name for t in by_name}]
    if unknown:
        raise NotFound(f"tools: Tool {unknown[0]!r} not found")
    wanted += [t.id for t in by_name]
    return list(dict.fromkeys(wanted))


# --- /v1/tools ------------------------------------------------------------------------------------
@collection(router, "POST", "/v1/tools")
async def create_tool(body: CreateTool, services: ServicesDep) -> dict[str, Any]:
    return render.tool(await services.store.upsert_tool(_new_tool(body, services.limits)))


@collection(router, "PUT", "/v1/tools")
async def upsert_tool(body: CreateTool, services: ServicesDep) -> dict[str, Any]:
    return render.tool(await services.store.upsert_tool(_new_tool(body, services.limits)))


@collection(router, "GET", "/v1/tools")
async def list_tools(
    services: ServicesDep,
    name: str | None = None,
    names: Annotated[list[str] | None, Query()] = None,
    tool_ids: Annotated[list[str] | None, Query()] = None,
    search: str | None = None,
    tool_types: Annotated[list[str] | None, Query()] = None,
    exclude_tool_types: Annotated[list[str] | None, Query()] = None,
    return_only_letta_tools: bool = False,
    after: str | None = None,
    before: str | None = None,
    limit: PageLimit = 50,
    order: Literal["asc", "desc"] = "desc",
) -> list[dict[str, Any]]:
    await ensure_built_in_tools(services)
    wanted_names = [*(names or []), *([name] if name else [])]
    types = list(tool_types or [])
    if return_only_letta_tools:
        types = [t for t in types if t in BUILT_IN_TYPES] or list(BUILT_IN_TYPES)
    tools = await services.store.list_tools(
        Page(limit=limit, order=order, after=after, before=before),
        names=wanted_names,
        tool_types=types,
        exclude_tool_types=exclude_tool_types or (),
        search=search,
    )
    if tool_ids:
        tools = [t for t in tools if t.id in set(tool_ids)]
    return [render.tool(t) for t in tools]


@router.get("/v1/tools/{tool_id}")
async def retrieve_tool(tool_id: str, services: ServicesDep) -> dict[str, Any]:
    return render.tool(await load_tool(services, tool_id))


@router.patch("/v1/tools/{tool_id}")
async def update_tool(tool_id: str, body: ToolFields, services: ServicesDep) -> dict[str, Any]:
    tool = await load_tool(services, tool_id)
    services.limits.check_tool_source(body.source_code)
    given = {name for name in body.model_fields_set}
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in (
            "description",
            "tags",
            "source_type",
            "return_char_limit",
            "pip_requirements",
            "npm_requirements",
            "default_requires_approval",
            "enable_parallel_execution",
            "metadata",
        )
        if name in given and (getattr(body, name) is not None or name == "metadata")
    }
    if given & {"source_code", "json_schema", "args_json_schema"}:
        source = body.source_code if body.source_code is not None else tool.source_code or ""
        if body.json_schema is None and not source:
            raise ValidationFailed("source_code: a tool without source code needs a json_schema")
        fields = body.model_copy(update={"args_json_schema": body.args_json_schema or tool.args_json_schema})
        schema = _json_schema(fields, source)
        changes.update(
            source_code=source,
            json_schema=schema,
            name=schema["name"],
            args_json_schema=fields.args_json_schema,
        )
        changes.setdefault("description", schema.get("description") or tool.description)
    if "description" in changes:
        changes["json_schema"] = {
            **changes.get("json_schema", tool.json_schema),
            "description": changes["description"],
        }
    updated = tool.model_copy(update={**changes, "updated_at": utcnow()})
    await services.store.update_tool(updated)
    return render.tool(updated)


@router.delete("/v1/tools/{tool_id}")
async def delete_tool(tool_id: str, services: ServicesDep) -> None:
    tool = await load_tool(services, tool_id)
    await services.store.delete_tool(tool.id)
