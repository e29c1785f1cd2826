"""OpenAI Responses API adapter, for OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...).

Chat completions hides a reasoning model's thinking; the Responses API hands out a summary of it,
which becomes a ``ReasoningPart``. Client, keys and transport are ``OpenAIProvider``'s; like it,
calls go through the SDK's generic ``post`` with a body already in wire form.

Parts come in the order their kind first appears in the output (in practice reasoning, then text,
then tool calls), with every reasoning summary in one part and all text in another: the stream
numbers its deltas by the same rule, so each delta's ``index`` is its part in the final response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.responses import Response, ResponseStreamEvent

from ..message import ReasoningPart, TextPart, ToolCallPart
from .base import (
    EncodedRequest,
    ModelDelta,
    ModelResponse,
    ProviderError,
    ProviderErrorKind,
    ResponsePart,
)
from .openai import OpenAIProvider
from .openai_responses_format import encode
from .sdk_errors import as_provider_error

REASONING_SEPARATOR = "\n\n"  # between reasoning summaries joined into one part
# Error codes of a failed response; anything else is the server's fault.
_ERROR_KINDS: dict[str, ProviderErrorKind] = {
    "context_length_exceeded": "context_length",
    "rate_limit_exceeded": "rate_limit",
    "invalid_prompt": "bad_request",
}


class OpenAIResponsesProvider(OpenAIProvider):
    encode = staticmethod(encode)

    async def send(self, encoded: EncodedRequest) -> ModelResponse:
        try:
            response = await self._client(encoded.endpoint).post(
                "/responses", body=encoded.body, cast_to=Response
            )
        except Exception as exc:
            raise as_provider_error(exc, openai, "openai", self._timeout) from None
        return model_response(response)

    async def stream_encoded(self, encoded: EncodedRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        assembly = _StreamAssembly()
        try:
            stream = await self._client(encoded.endpoint).post(
                "/responses",
                body={**encoded.body, "stream": True},
                cast_to=Response,
                stream=True,
                stream_cls=openai.AsyncStream[ResponseStreamEvent],
            )
            async for event in stream:
                for delta in assembly.feed(event):
                    yield delta
        except Exception as exc:
            raise as_provider_error(exc, openai, "openai", self._timeout) from None
        yield assembly.response()


def model_response(response: Response) -> ModelResponse:
    """The ``ModelResponse`` of a finished response; a failed one raises ``ProviderError``."""
    if response.status == "failed" or response.error is not None:
        raise _failed(response)
    parts = _Parts()
    for item in response.output:
        parts.add_item(item)
    usage = response.usage
    return ModelResponse(
        parts=parts.parts,
        prompt_tokens=usage.input_tokens if usage else 0,
        completion_tokens=usage.output_tokens if usage else 0,
        finish=_finish(response, parts.parts),
    )


def _finish(response: Response, parts: list[ResponsePart]) -> Any:
    details = response.incomplete_details
    # Out of tokens wins over tool calls: a cut-off call's arguments are not usable.
    if response.status == "incomplete" and details is not None and details.reason == "max_output_tokens":
        return "length"
    if any(isinstance(p, ToolCallPart) for p in parts):
        return "tool_calls"
    return "stop"


class _Parts:
    """Response parts in first-appearance order: one reasoning part, one text part, the calls."""

    def __init__(self) -> None:
        self.parts: list[ResponsePart] = []
        self._reasoning: int | None = None
        self._text: int | None = None

    def add_item(self, item: Any) -> None:
        """One output item of a finished response."""
        if item.type == "reasoning":
            for summary in item.summary:
                self.add_reasoning(summary.text, new_summary=True)
        elif item.type == "message":
            for content in item.content:
                if content.type == "output_text":
                    self.add_text(content.text)
        elif item.type == "function_call":
            index = self.add_call(item.call_id, item.name)
            self.add_arguments(index, item.arguments or "{}")  # as the chat adapter does

    def add_reasoning(self, text: str, new_summary: bool) -> tuple[int, str] | None:
        """Append to the reasoning part; returns its index and what was added (a new summary gets a
        separator first), or None when there was nothing to add."""
        if not text:
            return None
        if self._reasoning is None:
            self._reasoning = len(self.parts)
            self.parts.append(ReasoningPart(text="", source="reasoner_model"))
        part = self.parts[self._reasoning]
        assert isinstance(part, ReasoningPart)
        if new_summary and part.text:
            text = REASONING_SEPARATOR + text
        part.text += text
        return self._reasoning, text

    def add_text(self, text: str) -> int | None:
        if not text:
            return None
        if self._text is None:
            self._text = len(self.parts)
            self.parts.append(TextPart(text=""))
        part = self.parts[self._text]
        assert isinstance(part, TextPart)
        part.text += text
        return self._text

    def add_call(self, call_id: str, name: str) -> int:
        self.parts.append(ToolCallPart(id=call_id, name=name, arguments=""))
        return len(self.parts) - 1

    def add_arguments(self, index: int, fragment: str) -> ToolCallPart:
        part = self.parts[index]
        assert isinstance(part, ToolCallPart)
        part.arguments += fragment
        return part


class _StreamAssembly:
    """Turns stream events into deltas, keeping the parts so far for a stream that never finishes."""

    def __init__(self) -> None:
        self.parts = _Parts()
        self.calls: dict[str, int] = {}  # function_call item id -> part index
        self.summary: tuple[str, int] | None = None  # (item id, summary index) being streamed
        self.final: Response | None = None

    def feed(self, event: Any) -> list[ModelDelta]:
        kind = getattr(event, "type", None)
        if kind == "response.reasoning_summary_text.delta":
            return self._reasoning(event)
        if kind == "response.output_text.delta":
            index = self.parts.add_text(event.delta)
            return [] if index is None else [ModelDelta("text", index, event.delta)]
        if kind == "response.output_item.added" and event.item.type == "function_call":
            return self._call_added(event.item)
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event.item_id, event.delta)
        if kind == "response.function_call_arguments.done":
            return self._arguments_done(event.item_id, event.arguments)
        if kind in ("response.completed", "response.incomplete"):
            self.final = event.response
        elif kind == "response.failed":
            raise _failed(event.response)
        elif kind == "error":
            raise _failure(event.code, event.message)
        return []

    def _reasoning(self, event: Any) -> list[ModelDelta]:
        key = (event.item_id, event.summary_index)
        added = self.parts.add_reasoning(event.delta, new_summary=key != self.summary)
        self.summary = key
        if added is None:
            return []
        index, text = added
        return [ModelDelta("reasoning", index, text)]

    def _call_added(self, item: Any) -> list[ModelDelta]:
        # A delta right away, empty or not, so listeners learn the tool's name before its arguments.
        self.calls[item.id] = self.parts.add_call(item.call_id, item.name)
        return self._arguments(item.id, item.arguments or "")

    def _arguments(self, item_id: str, fragment: str) -> list[ModelDelta]:
        index = self.calls.get(item_id)
        if index is None:
            return []  # arguments of an item we never saw start: nothing to attach them to
        part = self.parts.add_arguments(index, fragment)
        return [ModelDelta("tool_call", index, fragment, tool_call_id=part.id, tool_name=part.name)]

    def _arguments_done(self, item_id: str, arguments: str) -> list[ModelDelta]:
        """Whatever of the final arguments the deltas did not carry (all of it, if none came)."""
        index = self.calls.get(item_id)
        if index is None:
            return []
        part = self.parts.parts[index]
        assert isinstance(part, ToolCallPart)
        if len(arguments) > len(part.arguments) and arguments.startswith(part.arguments):
            return self._arguments(item_id, arguments[len(part.arguments) :])
        return []

    def response(self) -> ModelResponse:
        if self.final is not None:
            return model_response(self.final)
        # The stream ended without its final event: what arrived is all there is.
        parts = self.parts.parts
        for part in parts:
            if isinstance(part, ToolCallPart) and not part.arguments:
                part.arguments = "{}"
        finish = "tool_calls" if any(isinstance(p, ToolCallPart) for p in parts) else "stop"
        return ModelResponse(parts=parts, finish=finish)


def _failed(response: Response) -> ProviderError:
    error = response.error
    if error is None:
        return ProviderError(f"openai response {response.status or 'failed'} without an error", "server")
    return _failure(error.code, error.message)


def _failure(code: str | None, message: str | None) -> ProviderError:
    kind = _ERROR_KINDS.get(code or "", "server")
    detail = message or "the response failed"
    if code:
        detail += f" (code: {code})"
    return ProviderError(f"openai API error: {detail}", kind)
