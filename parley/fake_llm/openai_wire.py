"""OpenAI Chat Completions: POST /v1/chat/completions, plain and streamed."""

from __future__ import annotations

import time
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
from .sse import DONE, PacedStream, Template, data_frame, dumps
from .tokens import split_tokens

_FINGERPRINT = "fp_fake_llm"


# ---- request -------------------------------------------------------------------------------


def parse_chat(body: dict[str, Any]) -> Conversation:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Missing required parameter: 'messages'.", "messages")

    conv = Conversation(model=model, stream=bool(body.get("stream")))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    conv.max_tokens = limit if isinstance(limit, int) else None
    call_names: dict[str, str] = {}  # tool call id -> tool name, to label tool results
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", "messages")
        role = message.get("role")
        text = text_of(message.get("content"))
        chars += len(text)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            call_names[call.get("id", "")] = function.get("name", "")
            chars += len(function.get("name", "")) + len(function.get("arguments", ""))
        if role in ("system", "developer"):
            role = "system"
        elif role not in ("user", "assistant", "tool"):
            raise BadRequest(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'tool', and 'developer'.",
                "messages",
            )
        conv.turns.append(Turn(role, text))
    last = messages[-1]
    if last.get("role") == "tool":
        name = call_names.get(last.get("tool_call_id", ""), "unknown")
        conv.tool_result = ToolResult(name, conv.turns[-1].text)

    tools = tool_list(body)
    for tool in tools:
        function = tool.get("function") or {}
        if "name" in function:
            conv.tools[function["name"]] = function.get("parameters") or {}
    conv.forced_tool = forced_tool(body.get("tool_choice"))
    chars += schema_chars(tools)
    conv.prompt_chars = chars
    return conv


# ---- reply ---------------------------------------------------------------------------------


def _finish_reason(ex: Exchange) -> str:
    if ex.truncated:
        return "length"
    return "tool_calls" if ex.reply.tool_call is not None else "stop"


def _usage(ex: Exchange) -> dict[str, Any]:
    return {
        "prompt_tokens": ex.prompt_tokens,
        "completion_tokens": ex.output_tokens,
        "total_tokens": ex.prompt_tokens + ex.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def render_chat(ex: Exchange) -> web.Response:
    reply = ex.reply
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or None,  # OpenAI sends null content beside a bare tool call
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": new_id("call_"),
                "type": "function",
                "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments},
            }
        ]
    body = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ex.conv.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(ex)}],
        "usage": _usage(ex),
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    return web.Response(
        body=dumps(body).encode(), content_type="application/json", headers={"x-request-id": new_id("req_")}
    )


async def stream_chat(out: PacedStream, ex: Exchange) -> None:
    include_usage = bool((ex.body.get("stream_options") or {}).get("include_usage"))
    base: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": ex.conv.model,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    if include_usage:
        base["usage"] = None  # every chunk but the last carries usage: null

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    await out.open({"x-request-id": new_id("req_")})
    out.event(data_frame(chunk({"role": "assistant", "content": "", "refusal": None})))
    content = Template(chunk({"content": Template.HOLE}))
    await out.tokens(content.render(token) for token in ex.text_tokens)

    call = ex.reply.tool_call
    if call is not None:
        out.event(
            data_frame(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": new_id("call_"),
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
        )
        fragment = Template(chunk({"tool_calls": [{"index": 0, "function": {"arguments": Template.HOLE}}]}))
        await out.tokens(fragment.render(piece) for piece in split_tokens(call.arguments))

    out.event(data_frame(chunk({}, _finish_reason(ex))))
    if include_usage:
        out.event(data_frame({**base, "choices": [], "usage": _usage(ex)}))
    out.event(DONE)
    await out.finish()


CHAT = Dialect(parse=parse_chat, error=openai_error, render=render_chat, stream=stream_chat)
