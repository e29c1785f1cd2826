"""Stored messages and their typed parts.

One stored ``Message`` is what one LLM turn produced (or one user input, one tool result). The Letta
view expands it into several wire messages (reasoning, assistant text, tool call); the OpenAI view
into items. Neither view is stored: both are derived from these parts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from . import ids
from .clock import utcnow


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ReasoningPart(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    text: str
    signature: str | None = None
    # Letta distinguishes reasoning a model emitted natively from inner thoughts in plain text.
    source: Literal["reasoner_model", "non_reasoner_model"] = "reasoner_model"


class ToolCallPart(BaseModel):
    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: str  # JSON text exactly as the model produced it


class ToolReturnPart(BaseModel):
    type: Literal["tool_return"] = "tool_return"
    tool_call_id: str
    name: str
    content: str
    status: Literal["success", "error"] = "success"
    stdout: list[str] | None = None
    stderr: list[str] | None = None


Part = Annotated[TextPart | ReasoningPart | ToolCallPart | ToolReturnPart, Field(discriminator="type")]

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    id: str = Field(default_factory=lambda: ids.new_id(ids.MESSAGE))
    role: Role
    parts: list[Part]
    agent_id: str
    conversation_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    otid: str | None = None  # the client's otid for input messages
    name: str | None = None
    sender_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # Position in the store, assigned on append; absolute cursors compare these.
    position: int | None = None
    # Bumped when a stored message is edited (an OpenAI item removed from it): encodings cached
    # by ``cache_key`` are then stale.
    revision: int = 0

    @property
    def cache_key(self) -> str:
        return self.id if not self.revision else f"{self.id}#{self.revision}"

    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]
