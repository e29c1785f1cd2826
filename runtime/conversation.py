"""A conversation: one thread of messages with one agent, served by one ConversationActor.

Every agent also has a *default* conversation (Letta's agent-level messages): a conversation row
whose id is the agent's own id, created with the agent (or, for an agent older than that, the first
time it is used) and never listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import ids
from .clock import utcnow


class Conversation(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str = Field(default_factory=lambda: ids.new_id(ids.CONVERSATION))
    agent_id: str
    summary: str | None = None
    description: str | None = None
    model: str | None = None
    model_settings: dict[str, Any] | None = None
    context_window_limit: int | None = None
    archived: bool = False
    archived_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    last_message_at: datetime | None = None
    # A conversation of its own for one OpenAI response made without one: never listed, and its
    # actor passivates soon after the response (a chain by previous_response_id comes quickly).
    ephemeral: bool = False
    # Ids of the messages the model sees, in order: system first (a Letta conversation has it from
    # its creation; an OpenAI conversation has none).
    in_context_message_ids: list[str] = Field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return self.id == self.agent_id

    @classmethod
    def default_for(cls, agent_id: str) -> Conversation:
        return cls(id=agent_id, agent_id=agent_id)
