"""The one interface every LLM provider adapter implements, and the typed values crossing it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ..errors import ParleyError
from ..message import Message, ReasoningPart, TextPart, ToolCallPart


class ToolSchema(BaseModel):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ModelRequest(BaseModel):
    """One call to a model: everything the adapter needs, nothing about runs or stores."""

    model_config = {"protected_namespaces": ()}

    provider: str  # "openai" | "anthropic"
    model: str
    system: str
    messages: list[Message]  # history after the system message, oldest first
    tools: list[ToolSchema] = Field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: dict[str, Any] | None = None  # Anthropic extended thinking settings
    reasoning_effort: str | None = None  # OpenAI reasoning effort for Responses-API models
    endpoint: str | None = None  # a base URL overriding the provider's default
    # The call must use a tool: any of ``tools`` ("required"), or the one named by ``forced_tool``.
    tool_required: bool = False
    forced_tool: str | None = None


@dataclass
class EncodedRequest:
    """A request already in its provider's wire form: plain data, cheap to send between processes."""

    provider: str
    endpoint: str | None
    body: dict[str, Any]


# Stored message (``Message.cache_key``: id and revision) -> its wire encoding in one format.
MessageCache = dict[str, list[dict[str, Any]]]


def cached_encoding(
    message: Message, cache: MessageCache | None, encode_message: Callable[[Message], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``encode_message(message)``, computed once per stored message revision when a cache is given."""
    if cache is None:
        return encode_message(message)
    encoded = cache.get(message.cache_key)
    if encoded is None:
        encoded = cache[message.cache_key] = encode_message(message)
    return encoded


ResponsePart = TextPart | ReasoningPart | ToolCallPart


class ModelResponse(BaseModel):
    parts: list[ResponsePart]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: Literal["stop", "tool_calls", "length"] = "stop"


DeltaPart = Literal["text", "reasoning", "tool_call"]


@dataclass
class ModelDelta:
    """A fragment of the response being produced; ``index`` is the part it belongs to."""

    part: DeltaPart
    index: int
    text: str = ""
    tool_call_id: str | None = None
    tool_name: str | None = None


# A ``DeltaBatch`` as it crosses between processes (``DeltaBatch.to_wire``): its deltas as plain
# tuples of their fields, in order, and the response.
WireDelta = tuple[DeltaPart, int, str, str | None, str | None]
WireBatch = tuple[tuple[WireDelta, ...], ModelResponse | None]


@dataclass
class DeltaBatch:
    """Deltas coalesced for transport; ``response`` is set on the last batch of a stream."""

    deltas: list[ModelDelta] = field(default_factory=list)
    response: ModelResponse | None = None

    def to_wire(self) -> WireBatch:
        """This batch as tuples: pickling a class's instance looks the class up by name each time,
        and a one-delta batch as these dataclasses took ~6 us to pickle and ~6 to unpickle, as
        tuples ~2 and ~2 (with ``from_wire``), at ~25 batches a second per stream, both ways."""
        deltas = tuple((d.part, d.index, d.text, d.tool_call_id, d.tool_name) for d in self.deltas)
        return deltas, self.response

    @classmethod
    def from_wire(cls, wire: WireBatch) -> DeltaBatch:
        deltas, response = wire
        return cls([ModelDelta(*delta) for delta in deltas], response)


ProviderErrorKind = Literal[
    "context_length",
    "rate_limit",
    "server",
    "timeout",
    "connection",
    "bad_request",
    "auth",
    "not_found",
    "other",
]


class ProviderError(ParleyError):
    """A provider call failed (after Parley's retries, once it leaves the provider layer); the run
    ends with a clear reason.

    ``retry_after`` is the wait the provider asked for (``retry-after`` header), in seconds;
    ``should_retry`` its explicit ``x-should-retry`` verdict, when it gave one.
    """

    def __init__(
        self,
        message: str,
        kind: ProviderErrorKind = "other",
        status: int | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.should_retry = should_retry

    def __reduce__(self):
        return (type(self), (self.message, self.kind, self.status, self.retry_after, self.should_retry))


class Provider(Protocol):
    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        """Deltas as they arrive, then the assembled ``ModelResponse`` as the last item."""
        ...


@runtime_checkable
class BatchingProvider(Provider, Protocol):
    """A provider that hands over token deltas already coalesced (one living in another process)."""

    def stream_batches(self, request: ModelRequest) -> AsyncIterator[DeltaBatch]: ...
