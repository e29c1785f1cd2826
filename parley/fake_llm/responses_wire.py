"""OpenAI Responses API: POST /v1/responses, plain and streamed.

A request with a ``reasoning`` object makes the model reason, and every response to it carries a
reasoning item (its tokens counted in ``usage.output_tokens_details.reasoning_tokens``), as the
real API's reasoning models do. The item's ``summary`` is empty unless the request asks for one
(``reasoning.summary``), and only then do ``response.reasoning_summary_*`` events stream. A call
that answers a tool result (the input ends with a ``function_call_output``) is the same turn as the
call that made the tool call: its reasoning item comes with an empty summary even when one is asked
for, so a turn's reasoning is summarized once, before its tool call.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from aiohttp import web

from .conversation import (
    BadRequest,
    Conversation,
    ToolResult,
    Turn,
    forced_tool,
    schema_chars,
    text_of,
    tool_list,
)
from .failures import openai_error
from .ids import new_id
from .pipeline import Dialect, Exchange
from .sse import PacedStream, Template, dumps, event_frame
from .tokens import split_tokens

HOLE = Template.HOLE


# ---- request -------------------------------------------------------------------------------


def parse_responses(body: dict[str, Any]) -> Conversation:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", "model")
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("Missing required parameter: 'input'.", "input")

    reasoning = body.get("reasoning")
    limit = body.get("max_output_tokens")
    conv = Conversation(
        model=model,
        stream=bool(body.get("stream")),
        can_reason=isinstance(reasoning, dict) and reasoning.get("effort") != "none",
        max_tokens=limit if isinstance(limit, int) else None,
    )
    chars = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        conv.turns.append(Turn("system", instructions))
        chars += len(instructions)
    call_names: dict[str, str] = {}  # call_id -> tool name, to label function_call_output
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("Each input item must be an object.", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            text = text_of(item.get("content"))
            conv.turns.append(Turn("system" if role == "developer" else str(role), text))
            chars += len(text)
        elif kind == "function_call":
            call_names[item.get("call_id", "")] = item.get("name", "")
            chars += len(item.get("name", "")) + len(item.get("arguments", ""))
        elif kind == "function_call_output":
            text = text_of(item.get("output"))
            conv.turns.append(Turn("tool", text))
            chars += len(text)
        elif kind == "reasoning":
            chars += len(text_of(item.get("summary")))
    last = items[-1]
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        name = call_names.get(last.get("call_id", ""), "unknown")
        conv.tool_result = ToolResult(name, conv.turns[-1].text)

    tools = tool_list(body)
    for tool in tools:
        if tool.get("type") == "function" and "name" in tool:
            conv.tools[tool["name"]] = tool.get("parameters") or {}
    conv.forced_tool = forced_tool(body.get("tool_choice"))
    chars += schema_chars(tools)
    conv.prompt_chars = chars
    return conv


# ---- reply ---------------------------------------------------------------------------------


class _Ids:
    """The ids of one response; streamed events and the final object must agree on them."""

    def __init__(self) -> None:
        self.response = new_id("resp_", 32)
        self.reasoning = new_id("rs_", 32)
        self.message = new_id("msg_", 32)
        self.function = new_id("fc_", 32)
        self.call = new_id("call_")


def _reasoning_item(ids: _Ids, summary: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": ids.reasoning, "type": "reasoning", "summary": summary}


def _summarized(ex: Exchange) -> bool:
    """Whether the reply's reasoning is handed out as a summary (see the module docstring)."""
    reasoning = ex.body.get("reasoning")
    asked = isinstance(reasoning, dict) and bool(reasoning.get("summary"))
    return asked and ex.conv.tool_result is None


def _summary(ex: Exchange) -> list[dict[str, str]]:
    if not ex.reply.reasoning or not _summarized(ex):
        return []
    return [{"type": "summary_text", "text": ex.reply.reasoning}]


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(ids: _Ids, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": ids.message, "type": "message", "status": status, "role": "assistant", "content": content}


def _function_item(ex: Exchange, ids: _Ids, status: str, arguments: str) -> dict[str, Any]:
    assert ex.reply.tool_call is not None
    return {
        "id": ids.function,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": ids.call,
        "name": ex.reply.tool_call.name,
    }


def _final_status(ex: Exchange) -> str:
    return "incomplete" if ex.truncated else "completed"


def _output(ex: Exchange, ids: _Ids) -> list[dict[str, Any]]:
    output = []
    if ex.reply.reasoning:
        output.append(_reasoning_item(ids, _summary(ex)))
    if ex.reply.text:
        output.append(_message_item(ids, _final_status(ex), [_text_part(ex.reply.text)]))
    if ex.reply.tool_call is not None:
        output.append(_function_item(ex, ids, "completed", ex.reply.tool_call.arguments))
    return output


def _response(
    ex: Exchange, ids: _Ids, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    body = ex.body
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        reasoning = {}
    return {
        "id": ids.response,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": ex.conv.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_echo_tool(tool) for tool in body.get("tools") or ()],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    # The API echoes tools with its defaults filled in; the SDK expects them present.
    if tool.get("type") != "function":
        return tool
    return {"type": "function", "description": None, "parameters": None, "strict": True, **tool}


def _usage(ex: Exchange) -> dict[str, Any]:
    return {
        "input_tokens": ex.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": ex.output_tokens,
        "output_tokens_details": {"reasoning_tokens": len(ex.reasoning_tokens)},
        "total_tokens": ex.prompt_tokens + ex.output_tokens,
    }


def render_responses(ex: Exchange) -> web.Response:
    ids = _Ids()
    body = _response(ex, ids, _final_status(ex), _output(ex, ids), _usage(ex))
    return web.Response(
        body=dumps(body).encode(), content_type="application/json", headers={"x-request-id": new_id("req_")}
    )


class _Events:
    """Numbers every event with the stream-wide `sequence_number` the API sends."""

    def __init__(self, out: PacedStream) -> None:
        self.out = out
        self.seq = 0

    def emit(self, kind: str, **fields: Any) -> None:
        self.out.event(event_frame(kind, {"type": kind, "sequence_number": self.seq, **fields}))
        self.seq += 1

    def template(self, kind: str, **fields: Any) -> Template:
        """Per-token event; holes: sequence_number, then the one HOLE field."""
        return Template({"type": kind, "sequence_number": HOLE, **fields}, event=kind)

    async def tokens(self, template: Template, values: list[str]) -> None:
        first = self.seq
        self.seq += len(values)
        await self.out.tokens(template.render_numbered(first + i, value) for i, value in enumerate(values))


async def stream_responses(out: PacedStream, ex: Exchange) -> None:
    ids = _Ids()
    ev = _Events(out)
    await out.open({"x-request-id": new_id("req_")})
    pending = _response(ex, ids, "in_progress", [], None)
    ev.emit("response.created", response=pending)
    ev.emit("response.in_progress", response=pending)

    index = 0
    if ex.reply.reasoning:
        await _stream_reasoning(ev, ex, ids, index)
        index += 1
    if ex.reply.text:
        await _stream_message(ev, ex, ids, index)
        index += 1
    if ex.reply.tool_call is not None:
        await _stream_function(ev, ex, ids, index)

    status = _final_status(ex)
    final = _response(ex, ids, status, _output(ex, ids), _usage(ex))
    ev.emit("response.incomplete" if status == "incomplete" else "response.completed", response=final)
    await out.finish()


async def _stream_reasoning(ev: _Events, ex: Exchange, ids: _Ids, index: int) -> None:
    ev.emit("response.output_item.added", output_index=index, item=_reasoning_item(ids, []))
    if not _summarized(ex):
        ev.emit("response.output_item.done", output_index=index, item=_reasoning_item(ids, []))
        return
    at = {"item_id": ids.reasoning, "output_index": index, "summary_index": 0}
    text = ex.reply.reasoning or ""
    ev.emit("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
    delta = ev.template("response.reasoning_summary_text.delta", **at, delta=HOLE)
    await ev.tokens(delta, ex.reasoning_tokens)
    ev.emit("response.reasoning_summary_text.done", **at, text=text)
    ev.emit("response.reasoning_summary_part.done", **at, part={"type": "summary_text", "text": text})
    summary = [{"type": "summary_text", "text": text}]
    ev.emit("response.output_item.done", output_index=index, item=_reasoning_item(ids, summary))


async def _stream_message(ev: _Events, ex: Exchange, ids: _Ids, index: int) -> None:
    at = {"item_id": ids.message, "output_index": index, "content_index": 0}
    text = ex.reply.text
    item = partial(_message_item, ids)
    ev.emit("response.output_item.added", output_index=index, item=item("in_progress", []))
    ev.emit("response.content_part.added", **at, part=_text_part(""))
    delta = ev.template("response.output_text.delta", **at, delta=HOLE, logprobs=[])
    await ev.tokens(delta, ex.text_tokens)
    ev.emit("response.output_text.done", **at, text=text, logprobs=[])
    ev.emit("response.content_part.done", **at, part=_text_part(text))
    ev.emit("response.output_item.done", output_index=index, item=item(_final_status(ex), [_text_part(text)]))


async def _stream_function(ev: _Events, ex: Exchange, ids: _Ids, index: int) -> None:
    assert ex.reply.tool_call is not None
    at = {"item_id": ids.function, "output_index": index}
    arguments = ex.reply.tool_call.arguments
    ev.emit("response.output_item.added", output_index=index, item=_function_item(ex, ids, "in_progress", ""))
    delta = ev.template("response.function_call_arguments.delta", **at, delta=HOLE)
    await ev.tokens(delta, split_tokens(arguments))
    ev.emit("response.function_call_arguments.done", **at, name=ex.reply.tool_call.name, arguments=arguments)
    ev.emit(
        "response.output_item.done", output_index=index, item=_function_item(ex, ids, "completed", arguments)
    )


RESPONSES = Dialect(
    parse=parse_responses,
    error=partial(openai_error, input_param="input"),
    render=render_responses,
    stream=stream_responses,
)
