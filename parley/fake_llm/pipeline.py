"""The request path every provider endpoint shares: parse, steer, fail or reply."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from .conversation import BadRequest, Conversation
from .directives import Directives, extract_directives
from .failures import Failure, bad_request, context_too_long, failure_for_status
from .options import OPTIONS_KEY, FakeLLMOptions
from .recorded_timing import CallTiming
from .script import Reply, decide
from .sse import PacedStream, StreamCut, drop_connection, reset_connection
from .tokens import estimate_tokens, split_tokens, tokens_for_chars

HANG_POLL_SECONDS = 0.05
TRANSIENT_MEMORY = 10_000  # prompts whose `fail_first` attempts are counted
_attempts: OrderedDict[str, int] = OrderedDict()  # prompt -> requests seen (one fake, one process)


@dataclass(slots=True)
class Exchange:
    """Everything a dialect needs to render one reply."""

    body: dict[str, Any]  # the raw request, for fields a dialect echoes back
    conv: Conversation
    reply: Reply
    text_tokens: list[str]
    reasoning_tokens: list[str]
    prompt_tokens: int
    output_tokens: int
    truncated: bool  # the reply hit the request's max tokens


@dataclass(frozen=True, slots=True)
class Dialect:
    """One wire protocol: how to read a request and how to write replies and errors."""

    parse: Callable[[dict[str, Any]], Conversation]  # raises BadRequest
    error: Callable[[Failure], web.Response]
    render: Callable[[Exchange], web.Response]  # the non-streamed reply
    stream: Callable[[PacedStream, Exchange], Awaitable[None]]  # opens and writes the stream


def make_handler(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _serve(request, dialect)

    return handle


async def _serve(request: web.Request, dialect: Dialect) -> web.StreamResponse:
    options = request.app[OPTIONS_KEY]
    try:
        body, conv = _parse(await request.read(), dialect)
    except BadRequest as exc:
        return dialect.error(bad_request(exc.message, exc.param))

    directives, text = extract_directives(conv.final_text)
    attempt = 0  # this request's number among those carrying this prompt, where that matters
    if directives.fail_first is not None or directives.statuses:
        attempt = _count_attempt(conv.final_text)
    if directives.fail_first is not None:
        if attempt > directives.fail_first:
            directives = directives.without_faults()  # past the transient fault: a normal reply
        elif not directives.has_fault:
            directives = replace(directives, status=503)
    if directives.hang:
        await _wait_for_disconnect(request)
        return web.Response()  # nobody is listening any more
    recorded = options.timings.take() if options.timings is not None else None
    latency = options.latency if recorded is None else recorded.first_byte
    latency = latency if directives.latency is None else directives.latency
    if latency > 0:
        await asyncio.sleep(latency)
    if directives.reset and directives.reset_after is None:
        # The whole request arrived; the connection dies without a byte of answer.
        reset_connection(request)
        return web.Response()  # nobody is listening any more
    failure = _failure(conv, directives, options, attempt)
    if failure is not None:
        return dialect.error(failure)

    exchange = _exchange(body, conv, decide(conv, text))
    if not conv.stream:
        if directives.cut is not None:  # a non-streamed reply can only be cut before it starts
            drop_connection(request)
        elif directives.reset_after is not None:
            reset_connection(request)
        elif directives.stall:  # nothing to stall in the middle of: a late answer
            await asyncio.sleep(directives.stall)
        return dialect.render(exchange)

    delay: float | CallTiming = options.token_delay if recorded is None else recorded
    delay = delay if directives.token_delay is None else directives.token_delay
    out = PacedStream(
        request, delay, directives.cut, directives.reset_after, directives.stall, directives.stall_after
    )
    try:
        await dialect.stream(out, exchange)
    except (StreamCut, ConnectionError):
        pass  # cut on purpose, or the client went away: nothing more to say
    return out.response


def _parse(raw: bytes, dialect: Dialect) -> tuple[dict[str, Any], Conversation]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        return body, dialect.parse(body)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        # A field of the wrong shape deep inside the body: the providers answer 400, not 500.
        raise BadRequest(f"Invalid request body: {exc!r}") from None


def _failure(
    conv: Conversation, directives: Directives, options: FakeLLMOptions, attempt: int
) -> Failure | None:
    status = directives.status_for_attempt(attempt)
    if status is not None:
        return failure_for_status(status, directives.retry_after)
    prompt_tokens = tokens_for_chars(conv.prompt_chars)
    if prompt_tokens > options.max_context_tokens:
        return context_too_long(prompt_tokens, options.max_context_tokens)
    return None


def _count_attempt(prompt: str) -> int:
    seen = _attempts.pop(prompt, 0) + 1
    _attempts[prompt] = seen
    while len(_attempts) > TRANSIENT_MEMORY:
        _attempts.popitem(last=False)
    return seen


def _exchange(body: dict[str, Any], conv: Conversation, reply: Reply) -> Exchange:
    text_tokens = split_tokens(reply.text)
    truncated = conv.max_tokens is not None and len(text_tokens) > conv.max_tokens
    if truncated:
        # Out of tokens mid-text: the tool call that would have followed never happens.
        text_tokens = text_tokens[: max(1, conv.max_tokens or 1)]
        reply = Reply("".join(text_tokens), reply.reasoning, None)
    reasoning_tokens = split_tokens(reply.reasoning) if reply.reasoning else []
    output = len(text_tokens) + len(reasoning_tokens)
    if reply.tool_call is not None:
        output += estimate_tokens(reply.tool_call.name + reply.tool_call.arguments)
    return Exchange(
        body=body,
        conv=conv,
        reply=reply,
        text_tokens=text_tokens,
        reasoning_tokens=reasoning_tokens,
        prompt_tokens=tokens_for_chars(conv.prompt_chars),
        output_tokens=max(1, output),
        truncated=truncated,
    )


async def _wait_for_disconnect(request: web.Request) -> None:
    # aiohttp does not cancel handlers when the peer leaves, so poll the transport.
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(HANG_POLL_SECONDS)
