"""What a client asks of one turn, independent of the surface it came through."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class InputMessage(BaseModel):
    role: Literal["user", "system", "assistant"] = "user"
    text: str
    otid: str | None = None
    name: str | None = None
    sender_id: str | None = None


class TurnRequest(BaseModel):
    messages: list[InputMessage]
    max_steps: int = 50
    stream_tokens: bool = False
    background: bool = False
    # Recorded on the run so any reader can render it the way the request asked.
    request_config: dict[str, Any] = Field(default_factory=dict)
    run_metadata: dict[str, Any] = Field(default_factory=dict)
