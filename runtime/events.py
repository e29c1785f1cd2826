"""What a run emits, in order, independent of any wire format.

A run's event log is the single source for every reader: the HTTP response of the request that
started it, a resumed stream, a second follower. Each surface renders these events its own way.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from .message import Message
from .run import StopReason, Usage


class _Event(BaseModel):
    seq: int = 0  # assigned by the RunLog: 1, 2, 3, ... per run


class RunStarted(_Event):
    kind: Literal["started"] = "started"
    run_id: str


class Ping(_Event):
    kind: Literal["ping"] = "ping"
    run_id: str


class MessageDone(_Event):
    """A complete stored message (step streaming, and the final form under token streaming)."""

    kind: Literal["message"] = "message"
    message: Message
    # True when the message's text already went out as deltas (token streaming).
    streamed: bool = False


class Delta(_Event):
    """A fragment of a message still being produced (token streaming)."""

    kind: Literal["delta"] = "delta"
    run_id: str
    message_id: str
    part: Literal["text", "reasoning", "tool_call"]
    text: str = ""
    tool_call_id: str | None = None
    tool_name: str | None = None
    # Index of the part within the message: the Letta view numbers otids with it.
    index: int = 0


class RunError(BaseModel):
    error_type: str
    message: str
    detail: str | None = None


class Stopped(_Event):
    kind: Literal["stopped"] = "stopped"
    run_id: str
    stop_reason: StopReason
    usage: Usage
    error: RunError | None = None


class Done(_Event):
    """Last event of every run: readers stop after it."""

    kind: Literal["done"] = "done"
    run_id: str


RunEvent = Annotated[RunStarted | Ping | MessageDone | Delta | Stopped | Done, Field(discriminator="kind")]


_BATCH = TypeAdapter(list[RunEvent])


def encode_batch(events: list[RunEvent]) -> bytes:
    """A batch of events as JSON bytes: what crosses between processes (pydantic-core encodes and
    decodes it ~7x faster than pickling the models)."""
    return _BATCH.dump_json(events)


def decode_batch(data: bytes) -> list[RunEvent]:
    return _BATCH.validate_json(data)
