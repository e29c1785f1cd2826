"""Anthropic Messages API: POST /v1/messages (plain and streamed) and /v1/messages/count_tokens."""

from __future__ import annotations

import base64
import hashlib
import json
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
from .failures import anthropic_error, bad_request
from .ids import new_id
from .pipeline import Dialect, Exchange
from .sse import PacedStream, Template, dumps, event_frame
from .tokens import split_tokens, tokens_for_chars

HOLE = Template.HOLE


# ---- request -------------------------------------------------------------------------------


def parse_messages(body: dict[str, Any]) -> Conversation:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required")

    thinking = body.get("thinking")
    limit = body.get("max_tokens")
    conv = Conversation(
        model=model,
        stream=bool(body.get("stream")),
        can_reason=isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"),
        max_tokens=limit if isinstance(limit, int) else None,
    )
    system = text_of(body.get("system"))
    if system:
        conv.turns.append(Turn("system", system))
    chars = len(system)
    call_names: dict[str, str] = {}  # tool_use id -> tool name, to label tool results
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest("messages: each message needs a role of 'user' or 'assistant'")
        chars += _read_message(conv, message, call_names)

    tools = tool_list(body)
    for tool in tools:
        if "name" in tool and "input_schema" in tool:
            conv.tools[tool["name"]] = tool["input_schema"] or {}
    conv.forced_tool = forced_tool(body.get("tool_choice"))
    conv.prompt_chars = chars + schema_chars(tools)
    # Without the interleaved-thinking beta Claude thinks once per turn: not again on a tool result.
    conv.can_reason = conv.can_reason and conv.tool_result is None
    conv.narrates_tool_calls = True
    return conv


def _read_message(conv: Conversation, message: dict[str, Any], call_names: dict[str, str]) -> int:
    """Append the message's turns to `conv`; return its character count."""
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        conv.turns.append(Turn(role, content))
        return len(content)
    if not isinstance(content, list):
        raise BadRequest("messages: content must be a string or a list of content blocks")
    texts: list[str] = []
    chars = 0
    result: ToolResult | None = None
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            call_names[block.get("id", "")] = block.get("name", "")
            chars += len(block.get("name", "")) + len(dumps(block.get("input") or {}))
        elif kind == "tool_result":
            text = text_of(block.get("content"))
            result = ToolResult(call_names.get(block.get("tool_use_id", ""), "unknown"), text)
            conv.turns.append(Turn("tool", text))
            chars += len(text)
        elif kind == "thinking":
            chars += len(block.get("thinking", ""))
    text = "\n".join(texts)
    if texts or result is None:
        conv.turns.append(Turn(role, text))
    # Only the final message decides whether this request answers a tool result.
    conv.tool_result = result if role == "user" else None
    return chars + len(text)


# ---- reply ---------------------------------------------------------------------------------


def signature_for(thinking: str) -> str:
    """Deterministic stand-in for the opaque signature Anthropic attaches to thinking."""
    return base64.b64encode(hashlib.sha256(b"fake-llm:" + thinking.encode()).digest()).decode()


def _stop_reason(ex: Exchange) -> str:
    if ex.truncated:
        return "max_tokens"
    return "tool_use" if ex.reply.tool_call is not None else "end_turn"


def _usage(ex: Exchange, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": ex.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(
    ex: Exchange, msg_id: str, content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": ex.conv.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(ex, output_tokens),
    }


def _headers() -> dict[str, str]:
    return {"request-id": new_id("req_")}


def render_messages(ex: Exchange) -> web.Response:
    reply = ex.reply
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append(
            {"type": "thinking", "thinking": reply.reasoning, "signature": signature_for(reply.reasoning)}
        )
    if reply.text:  # Anthropic puts the text before the tool_use block
        content.append({"type": "text", "text": reply.text})
    if reply.tool_call is not None:
        content.append(
            {
                "type": "tool_use",
                "id": new_id("toolu_"),
                "name": reply.tool_call.name,
                "input": json.loads(reply.tool_call.arguments),
            }
        )
    body = _message(ex, new_id("msg_"), content, _stop_reason(ex), ex.output_tokens)
    return web.Response(body=dumps(body).encode(), content_type="application/json", headers=_headers())


def _block_delta(index: int, delta: dict[str, Any]) -> Template:
    return Template(
        {"type": "content_block_delta", "index": index, "delta": delta}, event="content_block_delta"
    )


async def stream_messages(out: PacedStream, ex: Exchange) -> None:
    reply = ex.reply
    await out.open(_headers())
    start = _message(ex, new_id("msg_"), [], None, 1)
    out.event(event_frame("message_start", {"type": "message_start", "message": start}))
    out.event(event_frame("ping", {"type": "ping"}))

    blocks: list[tuple[dict[str, Any], Template, list[str]]] = []  # (start block, delta template, pieces)
    if reply.reasoning:
        blocks.append(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                _block_delta(len(blocks), {"type": "thinking_delta", "thinking": HOLE}),
                ex.reasoning_tokens,
            )
        )
    if reply.text:
        blocks.append(
            (
                {"type": "text", "text": ""},
                _block_delta(len(blocks), {"type": "text_delta", "text": HOLE}),
                ex.text_tokens,
            )
        )
    if reply.tool_call is not None:
        blocks.append(
            (
                {"type": "tool_use", "id": new_id("toolu_"), "name": reply.tool_call.name, "input": {}},
                _block_delta(len(blocks), {"type": "input_json_delta", "partial_json": HOLE}),
                split_tokens(reply.tool_call.arguments),
            )
        )

    for index, (block, delta, pieces) in enumerate(blocks):
        out.event(
            event_frame(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        await out.tokens(delta.render(piece) for piece in pieces)
        if block["type"] == "thinking":
            signature = {"type": "signature_delta", "signature": signature_for(reply.reasoning or "")}
            out.event(
                event_frame(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": signature}
                )
            )
        out.event(event_frame("content_block_stop", {"type": "content_block_stop", "index": index}))

    out.event(
        event_frame(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(ex), "stop_sequence": None},
                "usage": _usage(ex, ex.output_tokens),
            },
        )
    )
    out.event(event_frame("message_stop", {"type": "message_stop"}))
    await out.finish()


MESSAGES = Dialect(
    parse=parse_messages, error=anthropic_error, render=render_messages, stream=stream_messages
)


async def count_tokens(request: web.Request) -> web.Response:
    """POST /v1/messages/count_tokens: the same estimate the usage numbers use."""
    try:
        body = json.loads(await request.read())
        conv = parse_messages(body if isinstance(body, dict) else {})
    except ValueError:
        return anthropic_error(bad_request("The request body is not valid JSON."))
    except BadRequest as exc:
        return anthropic_error(bad_request(exc.message))
    return web.json_response({"input_tokens": tokens_for_chars(conv.prompt_chars)})
