"""``/openai/v1/responses``: a response is a run of a conversation's actor, seen the OpenAI way.

A response with ``conversation`` runs in that conversation: its items are the context, its input
and output are appended. Without one, it runs in a hidden conversation of its own, which a later
``previous_response_id`` continues (or forks, when it would branch). Lookups and validation all
happen before the first byte, so errors are plain HTTP errors even for ``stream: true``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from actors.conversation_client import RunStream
from runtime.conversation import Conversation
from runtime.errors import Conflict, NotFound
from runtime.events import Done, RunEvent
from runtime.ids import CONVERSATION, MESSAGE, derived_id, new_id
from runtime.limits import check_metadata
from runtime.message import Message
from runtime.providers.base import ToolSchema
from runtime.run import Run, RunStatus
from runtime.run_log import load_run_log
from runtime.store import Page
from runtime.tools.schema import given_function
from runtime.turn import TurnRequest
from serve_app import sse as sse_frames
from serve_app.routing import IdempotencyKey, OpenAIPageLimit
from serve_app.services import Services, ServicesDep
from serve_app.sse import STREAMING

from . import ids
from .conversation_routes import ALL, cursor_page, is_compiled_prompt
from .home import home_agent, invalid, load_conversation, model_handle
from .items import items_of, parse_input
from .responses import ResponseEnd, created_for, response_of
from .stream import ResponseStream, sse

log = logging.getLogger(__name__)
router = APIRouter()

CANCEL_WAIT_SECONDS = 5.0


class CreateResponse(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # as OpenAI: no true for 1, no 1 for true

    model: str | None = None
    input: Any = None
    instructions: str | None = None
    conversation: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    store: bool | None = None
    background: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    metadata: Any = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None


def _function_tools(tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[ToolSchema]:
    if not tools or tool_choice == "none":
        return []
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise invalid(
                f"Invalid 'tools[{index}].type': {kind!r} tools are not supported; use 'function'.",
                f"tools[{index}].type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name")
        parameters = tool.get("parameters") or None
        out.append(given_function(name, tool.get("description"), parameters, f"tools[{index}]"))
    return out


def _forced_tool(tool_choice: Any, tools: list[ToolSchema]) -> tuple[bool, str | None]:
    """``tool_choice`` as (a tool call is required, the tool it must be): "auto" / "none" / absent
    force nothing, "required" any of the tools, ``{"type": "function", "name": ...}`` that one."""
    if tool_choice is None or tool_choice in ("auto", "none"):
        return False, None
    if tool_choice == "required":
        if not tools:
            raise invalid(
                "Invalid 'tool_choice': 'required' needs at least one tool in 'tools'.", "tool_choice"
            )
        return True, None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = tool_choice.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise invalid(
                f"Invalid 'tool_choice': function {name!r} is not among the function tools in 'tools'.",
                "tool_choice",
            )
        return True, name
    raise invalid(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or {'type': 'function', 'name': ...}.",
        "tool_choice",
    )


def _check_ranges(body: CreateResponse) -> None:
    if body.temperature is not None and not 0 <= body.temperature <= 2:
        raise invalid(
            f"Invalid 'temperature': {body.temperature}. Expected a value between 0 and 2.", "temperature"
        )
    if body.top_p is not None and not 0 <= body.top_p <= 1:
        raise invalid(f"Invalid 'top_p': {body.top_p}. Expected a value between 0 and 1.", "top_p")
    if body.max_output_tokens is not None and body.max_output_tokens < 1:
        raise invalid(
            f"Invalid 'max_output_tokens': {body.max_output_tokens}. Expected at least 1.",
            "max_output_tokens",
        )


# --- where a response runs ------------------------------------------------------------------------
async def _target(
    services: Services, body: CreateResponse, key: str | None
) -> tuple[Conversation, str | None]:
    """The conversation to run in, and the one to show on the response (None when hidden).

    With an idempotency ``key``, a retry must reach the conversation the original ran in, where its
    actor finds the key: a new hidden conversation then has an id derived from the key."""
    if body.conversation is not None and body.previous_response_id is not None:
        raise invalid(
            "Invalid value for 'previous_response_id, conversation': previous_response_id and conversation "
            "are both provided. Provide only one of these parameters.",
            "previous_response_id",
        )
    if body.conversation is not None:
        given = body.conversation.get("id") if isinstance(body.conversation, dict) else body.conversation
        if not isinstance(given, str):
            raise invalid("Invalid 'conversation': expected an id or an object with an 'id'.", "conversation")
        conversation = await load_conversation(services, given)
        if body.store is False:
            # Read the conversation, add nothing to it: run on a copy of its context.
            return await _fork(services, conversation.id, key=key), conversation.id
        return conversation, conversation.id
    if body.previous_response_id is None:
        conversation = Conversation(
            id=_new_conversation_id(services, key), agent_id=(await home_agent(services)).id, ephemeral=True
        )
        await services.store.create_conversation(conversation)  # a retry finds it there already
        return conversation, None
    previous = await load_response_run(services, body.previous_response_id)
    assert previous.conversation_id is not None
    if key is not None and await services.store.find_run_by_key(previous.conversation_id, key):
        found = await services.store.get_conversation(previous.conversation_id)
        if found is not None:
            return found, None  # the retry of a response that continued the chain
    if not previous.status.terminal:
        raise invalid(
            f"Invalid 'previous_response_id': response {body.previous_response_id!r} is still in progress.",
            "previous_response_id",
        )
    hidden = previous.request_config["openai"].get("conversation") is None
    latest = await services.store.list_runs(Page(limit=1), conversation_id=previous.conversation_id)
    if hidden and body.store is not False and latest and latest[0].id == previous.id:
        found = await services.store.get_conversation(previous.conversation_id)
        if found is not None:
            return found, None  # the usual chain: continue where the previous response ended
    return await _fork(services, previous.conversation_id, previous.id, key), None


def _new_conversation_id(services: Services, key: str | None) -> str:
    if key is None:
        return new_id(CONVERSATION)
    return derived_id(CONVERSATION, f"openai-response:{key}")


async def _fork(
    services: Services, source_id: str, through_run: str | None = None, key: str | None = None
) -> Conversation:
    """A new ephemeral conversation holding a copy of ``source_id``'s context (up to the end of
    run ``through_run`` when given): a branch that leaves the original as it was."""
    conversation_id = _new_conversation_id(services, key)
    if key is not None:
        retried = await services.store.get_conversation(conversation_id)
        if retried is not None:
            return retried  # the original's branch, already made
    source = await services.store.get_conversation(source_id)
    context = await services.store.get_messages(source.in_context_message_ids) if source else []
    if through_run is not None:
        ends = [i for i, m in enumerate(context) if m.run_id == through_run]
        context = context[: ends[-1] + 1] if ends else context
    conversation = Conversation(id=conversation_id, agent_id=(await home_agent(services)).id, ephemeral=True)
    copies = [
        m.model_copy(
            update={
                "id": new_id(MESSAGE),
                "conversation_id": conversation.id,
                "run_id": None,  # the copies belong to no response: each response lists its own
                "position": None,
                "revision": 0,
            }
        )
        for m in context
        if not is_compiled_prompt(m)  # a Letta conversation's memory prompt; instructions replace it
    ]
    conversation.in_context_message_ids = [m.id for m in copies]
    await services.store.create_conversation(conversation)
    if copies:
        await services.store.append_messages(copies)
    return conversation


# --- reading responses ----------------------------------------------------------------------------
async def load_response_run(services: Services, response_id: str) -> Run:
    run = await services.store.get_run(ids.from_openai_response(response_id))
    if (
        run is None
        or "openai" not in run.request_config
        or run.request_config["openai"].get("store") is False
    ):
        raise NotFound(f"Response {response_id!r} not found.")
    return run


async def _run_messages(services: Services, run: Run) -> list[Message]:
    return await services.store.list_run_messages(run.id, Page(limit=ALL, order="asc"))


async def response_for(services: Services, run: Run) -> dict[str, Any]:
    # Inputs carry no step; everything a step produced is output.
    output = [m for m in await _run_messages(services, run) if m.step_id is not None]
    return response_of(run, output)


def _as_created(stream: RunStream, conversation: Conversation, turn: TurnRequest) -> Run | None:
    """The run ``stream`` started, as its runner created it, known without reading it back: its id
    and ``created_at`` come with its first event, the rest from the request that started it.

    None for a send with an idempotency key: its stream may be an earlier run's (a retry), made
    from that request's echo, not this one's; its response is read from the store as before. None
    too when the first event carries no ``created_at`` (a runner of an older version)."""
    started = stream.started
    if turn.idempotency_key is not None or started is None or started.created_at is None:
        return None
    run = Run(
        id=started.run_id,
        agent_id=conversation.agent_id,
        conversation_id=conversation.id,
        status=RunStatus.running,
        background=turn.background,
        created_at=started.created_at,
        metadata=turn.run_metadata,
        request_config=turn.request_config,
    )
    # As the store would give it back: the echo holds the request's JSON as parsed, and a NaN or
    # Infinity in a free-form field (``text``, ``reasoning`` ...) is stored, and so echoed, as null.
    return Run.model_validate_json(run.model_dump_json())


# --- routes ---------------------------------------------------------------------------------------
@router.post("/responses", response_model=None, responses=STREAMING)
async def create_response(
    body: CreateResponse, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any] | sse_frames.EventStreamResponse:
    if body.input is None:
        raise invalid("Missing required parameter: 'input'.", "input")
    inputs = parse_input(body.input, limits=services.limits)
    services.limits.check_text(body.instructions, "instructions")
    handle = model_handle(services, body.model)
    metadata = check_metadata(body.metadata)
    _check_ranges(body)
    client_tools = _function_tools(body.tools, body.tool_choice)
    tool_required, forced_tool = _forced_tool(body.tool_choice, client_tools)
    conversation, shown = await _target(services, body, idempotency_key)
    echo = {
        **body.model_dump(exclude={"input", "conversation", "stream"}),
        "model": body.model or handle,
        "metadata": metadata,
        "store": body.store is not False,
        "background": bool(body.background),
        "conversation": shown,
    }
    turn = TurnRequest(
        messages=inputs,
        model=handle,
        instructions=body.instructions or "",
        client_tools=client_tools,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        stream_tokens=bool(body.stream),
        background=bool(body.background),
        request_config={"openai": echo},
        run_metadata={"run_type": "openai_response"},
        idempotency_key=idempotency_key,
        tool_required=tool_required,
        forced_tool=forced_tool,
    )
    stream = await services.conversations.send(conversation.id, turn)
    run_id = stream.run_id
    assert run_id is not None
    created = _as_created(stream, conversation, turn)
    if body.stream:
        return sse_frames.EventStreamResponse(
            _events(services, stream, run_id, created=created), services.settings.heartbeat_seconds
        )
    if body.background:
        stream.close()  # a background response outlives this request; poll or cancel it
    else:
        end = ResponseEnd()
        await _drain(stream, end)
        finished = end.response(created) if created is not None else None
        if finished is not None:
            return finished
    run = await services.store.get_run(run_id)
    if run is None:
        raise NotFound(f"Response {ids.to_openai_response(run_id)!r} not found.")
    return await response_for(services, run)


async def _drain(stream: RunStream, end: ResponseEnd) -> None:
    try:
        async for batch in _batches(stream):
            for event in batch:
                end.feed(event)
    finally:
        stream.close()


async def _batches(stream: RunStream) -> AsyncIterator[list[RunEvent]]:
    """The run's event batches up to and including ``Done``."""
    async for batch in stream:
        yield batch
        if any(isinstance(e, Done) for e in batch):
            return


async def _events(
    services: Services,
    stream: RunStream,
    run_id: str,
    starting_after: int = -1,
    created: Run | None = None,
) -> AsyncIterator[bytes]:
    """The response's SSE events, those numbered after ``starting_after`` (a resumed stream)."""
    async for event in _all_events(services, stream, run_id, created):
        if event["sequence_number"] > starting_after:
            yield sse(event)


async def _all_events(
    services: Services, stream: RunStream, run_id: str, created: Run | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The response's events, from ``created`` (the run as created, or any row of it read before it
    ended) and the run's own events: no store read while the stream is going, where this replica
    forwards every other stream too. Without ``created``, or where the log cannot vouch for the
    run's end (``ResponseEnd``), the run and its messages are read from the store instead."""
    renderer: ResponseStream | None = None
    try:
        run = created if created is not None else await services.store.get_run(run_id)
        assert run is not None, run_id
        # The run may already be past its start (or finished) by now: the stream opens with the
        # response as created, never with this read's progress.
        renderer = ResponseStream(created_for(run))
        for event in renderer.start():
            yield event
        end = ResponseEnd()
        async for batch in _batches(stream):
            for event in batch:
                end.feed(event)
                for out in renderer.feed(event):
                    yield out
        response = end.response(run) if created is not None else None
        if response is None:
            final = await services.store.get_run(run_id)
            assert final is not None, run_id
            response = await response_for(services, final)
        for out in renderer.finish(response):
            yield out
    except Exception as exc:  # the run's actor went away mid-stream: say so, then end
        log.warning("response stream ended by %s: %s", type(exc).__name__, exc)
        message = f"the stream was interrupted: {type(exc).__name__}"
        if renderer is not None:
            yield renderer.error(message)
    finally:
        stream.close()


@router.get("/responses/{response_id}", response_model=None, responses=STREAMING)
async def retrieve_response(
    response_id: str,
    services: ServicesDep,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1)] = -1,
) -> dict[str, Any] | sse_frames.EventStreamResponse:
    """The response; with ``stream=true`` (background responses) its event stream from the start,
    or after event ``starting_after``, replayed and then followed live to its end."""
    run = await load_response_run(services, response_id)
    if not stream:
        return await response_for(services, run)
    if not run.background:
        raise invalid("Invalid 'stream': only a background response can be streamed again.", "stream")
    stored = await load_run_log(services.store, run) if run.status.terminal else None
    assert run.conversation_id is not None
    source = (
        RunStream.of(stored.events())
        if stored is not None
        else await services.conversations.follow(run.conversation_id, run.id, 0)
    )
    # A run still going ends on this stream, as on its first: its end comes from its events. One
    # that ended before is a replay, and its end is what the store says now, as a plain retrieve.
    created = None if run.status.terminal else run
    return sse_frames.EventStreamResponse(
        _events(services, source, run.id, starting_after, created), services.settings.heartbeat_seconds
    )


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, services: ServicesDep) -> dict[str, Any]:
    run = await load_response_run(services, response_id)
    await services.store.delete_run(run.id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, services: ServicesDep) -> dict[str, Any]:
    run = await load_response_run(services, response_id)
    if run.status is RunStatus.cancelled:
        return await response_for(services, run)
    if not run.background or run.status.terminal:
        raise Conflict(
            f"Response {response_id!r} cannot be cancelled: only a background response in progress can."
        )
    assert run.conversation_id is not None
    await services.conversations.cancel(run.conversation_id, run.id)
    deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
    while not run.status.terminal and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        run = await services.store.get_run(run.id) or run
    return await response_for(services, run)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: OpenAIPageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    run = await load_response_run(services, response_id)
    inputs = [m for m in await _run_messages(services, run) if m.step_id is None]
    return cursor_page([item for m in inputs for item in items_of(m)], after, limit, order)
