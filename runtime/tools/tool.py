"""``Tool``: a function the model may call, as registered (from Python source) or built in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .. import ids
from ..clock import utcnow
from ..providers.base import ToolSchema

CUSTOM = "custom"
LETTA_CORE = "letta_core"
LETTA_MEMORY_CORE = "letta_memory_core"
BUILT_IN_TYPES = (LETTA_CORE, LETTA_MEMORY_CORE)

DEFAULT_RETURN_CHAR_LIMIT = 50_000
MAX_NAME_LENGTH = 48


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: ids.new_id(ids.TOOL))
    name: str
    description: str = ""
    tool_type: str = CUSTOM
    source_type: str = "python"
    source_code: str | None = None
    json_schema: dict[str, Any]
    args_json_schema: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    return_char_limit: int = DEFAULT_RETURN_CHAR_LIMIT
    pip_requirements: list[dict[str, Any]] | None = None
    npm_requirements: list[dict[str, Any]] | None = None
    default_requires_approval: bool | None = None
    enable_parallel_execution: bool | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def built_in(self) -> bool:
        return self.tool_type in BUILT_IN_TYPES

    def schema_for_model(self) -> ToolSchema:
        return ToolSchema(
            name=self.name,
            description=self.json_schema.get("description", self.description) or "",
            parameters=self.json_schema.get("parameters") or {"type": "object", "properties": {}},
        )
