"""Agents and the memory blocks they share across all of their conversations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import ids
from .clock import utcnow

DEFAULT_BLOCK_LIMIT = 100_000

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, stateful assistant. Your memory blocks below hold what you know about "
    "yourself and the user; keep them in mind and answer concisely."
)


class LLMConfig(BaseModel):
    """How to reach the model. Unknown keys a client sends are kept and returned unchanged."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    model_endpoint_type: str
    context_window: int
    handle: str | None = None
    model_endpoint: str | None = None
    provider_name: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    enable_reasoner: bool | None = None
    max_reasoning_tokens: int | None = None


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    embedding_model: str
    embedding_endpoint_type: str
    embedding_dim: int
    handle: str | None = None
    embedding_endpoint: str | None = None
    embedding_chunk_size: int | None = 300


class Block(BaseModel):
    """A labelled piece of core memory, compiled into the system message of each conversation."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: ids.new_id(ids.BLOCK))
    label: str
    value: str
    limit: int = DEFAULT_BLOCK_LIMIT
    description: str | None = None
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] | None = None
    hidden: bool | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Agent(BaseModel):
    """An agent's own settings; its blocks live in the store beside it (``block_ids``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str = Field(default_factory=lambda: ids.new_id(ids.AGENT))
    name: str
    agent_type: str = "letta_v1_agent"
    system: str = DEFAULT_SYSTEM_PROMPT
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    model: str | None = None
    embedding: str | None = None
    llm_config: LLMConfig
    embedding_config: EmbeddingConfig | None = None
    model_settings: dict[str, Any] | None = None
    block_ids: list[str] = Field(default_factory=list)
    tool_ids: list[str] = Field(default_factory=list)
    timezone: str | None = "UTC"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    last_run_completion: datetime | None = None
    last_stop_reason: str | None = None
    hidden: bool | None = None  # not listed (the agent that OpenAI-surface conversations belong to)
