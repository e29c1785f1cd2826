"""What a run emits, in order, independent of any wire format.

A run's event log is the single source for every reader: the HTTP response of the request that
started it, a resumed stream, a second follower. Each surface renders these events its own way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from .message import Message
from .run import Run, StopReason, Usage

# The error type of a run ended by an exception of its own (a bug, a store failure), not the model's.
INTERNAL_ERROR = "internal_error"


class _Event(BaseModel):
    seq: int = 0  # assigned by the RunLog: 1, 2, 3, ... per run


class RunStarted(_Event):
    kind: Literal["started"] = "started"
    run_id: str
    # The run's ``created_at``, so a reader can describe the run as created without reading its
    # row. None in a log written before it was added: readers then read the row.
    created_at: datetime | None = None


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
    """How a run ended. When ``completed_at`` is set, this is the run's own end and ``record_on``
    gives exactly the run row the runner stored for it; a log closed by someone else (a run cut
    short by a crash, a replay rebuilt from the store: ``closing_stop``) or written before the field
    was added leaves it None, and a reader that needs the row reads it."""

    kind: Literal["stopped"] = "stopped"
    run_id: str
    stop_reason: StopReason
    usage: Usage
    error: RunError | None = None
    completed_at: datetime | None = None

    def record_on(self, run: Run) -> None:
        """Make ``run`` ended as this event says: the one place the runner's row and a reader's
        copy of it are both made from, so they cannot disagree."""
        run.status = self.stop_reason.run_status
        run.stop_reason = self.stop_reason
        run.usage = self.usage
        run.completed_at = self.completed_at
        if self.error is not None:
            run.metadata = {**run.metadata, "error": self.error.model_dump()}

    @property
    def announced_all(self) -> bool:
        """Whether every message the run stored went out as a ``MessageDone`` before this event.
        Not so for a run cancelled or ended by its own exception: either can land while a message's
        store write is under way (on the store's thread), which then completes with the message
        stored but never announced. A model or tool error ends the run between messages."""
        if self.stop_reason is StopReason.cancelled:
            return False
        return not (self.error is not None and self.error.error_type == INTERNAL_ERROR)


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
