"""Runs: one request's processing, from accepted input to a stop reason."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from . import ids
from .clock import utcnow


class RunStatus(StrEnum):
    created = "created"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.completed, RunStatus.failed, RunStatus.cancelled)


class StopReason(StrEnum):
    end_turn = "end_turn"
    max_steps = "max_steps"
    error = "error"
    llm_api_error = "llm_api_error"
    invalid_llm_response = "invalid_llm_response"
    max_tokens_exceeded = "max_tokens_exceeded"
    cancelled = "cancelled"
    requires_approval = "requires_approval"
    context_window_overflow_in_system_prompt = "context_window_overflow_in_system_prompt"

    @property
    def run_status(self) -> RunStatus:
        if self in (StopReason.end_turn, StopReason.max_steps, StopReason.requires_approval):
            return RunStatus.completed
        if self is StopReason.cancelled:
            return RunStatus.cancelled
        return RunStatus.failed


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    step_count: int = 0
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += prompt + completion
        self.step_count += 1


class Run(BaseModel):
    id: str = Field(default_factory=lambda: ids.new_id(ids.RUN))
    agent_id: str
    conversation_id: str | None = None
    status: RunStatus = RunStatus.created
    stop_reason: StopReason | None = None
    background: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    request_config: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    ttft_ns: int | None = None
    total_duration_ns: int | None = None
    # The client's key for this send (Letta: the input's otid or an Idempotency-Key header): a
    # retried send with it follows or replays this run instead of starting another.
    idempotency_key: str | None = None
