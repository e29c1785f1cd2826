"""What a client asks of one turn, independent of the surface it came through."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .message import Part, TextPart
from .providers.base import ToolSchema


class InputMessage(BaseModel):
    role: Literal["user", "system", "assistant", "tool"] = "user"
    text: str = ""
    # Typed parts for inputs that are more than text (an OpenAI client echoing a function call, or
    # sending a function's output); ``text`` is used when there are none.
    parts: list[Part] | None = None
    otid: str | None = None
    name: str | None = None
    sender_id: str | None = None

    def message_parts(self) -> list[Part]:
        return list(self.parts) if self.parts is not None else [TextPart(text=self.text)]


class TurnRequest(BaseModel):
    messages: list[InputMessage]
    max_steps: int = 50
    stream_tokens: bool = False
    background: bool = False
    # Recorded on the run so any reader can render it the way the request asked.
    request_config: dict[str, Any] = Field(default_factory=dict)
    run_metadata: dict[str, Any] = Field(default_factory=dict)
    # Per-request overrides (the OpenAI surface sets the model, instructions and tools per call).
    model: str | None = None  # a model handle instead of the agent's (or conversation's) model
    instructions: str | None = None  # when set, the whole system prompt for this turn, not stored
    client_tools: list[ToolSchema] = Field(default_factory=list)  # the client runs these itself
    max_tokens: int | None = None
    temperature: float | None = None
    idempotency_key: str | None = None
    # The first step must call a tool: any ("required"), or the one named (OpenAI ``tool_choice``).
    tool_required: bool = False
    forced_tool: str | None = None
