"""Request bodies of the Letta API as ``letta-client`` 1.12.1 sends them.

Unknown keys are accepted and ignored (Letta has many optional fields this server does not act
on), so a client that sends them still works; the fields that matter are validated and a failure
names the field. Scalars are strict, as the OpenAPI document says: ``true`` is not a number and
``1`` is not a boolean.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.limits import InputLimits


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), strict=True)


class CreateBlock(_Body):
    label: str = Field(min_length=1)
    value: str
    limit: int | None = Field(default=None, gt=0)
    description: str | None = None
    read_only: bool = False
    metadata: dict[str, Any] | None = None
    hidden: bool | None = None
    tags: list[str] | None = None


class CreateAgent(_Body):
    name: str | None = Field(default=None, min_length=1)
    agent_type: str | None = None
    system: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    model: str | None = None
    embedding: str | None = None
    llm_config: dict[str, Any] | None = None
    embedding_config: dict[str, Any] | None = None
    model_settings: dict[str, Any] | None = None
    memory_blocks: list[CreateBlock] | None = None
    block_ids: list[str] | None = None
    tool_ids: list[str] | None = None
    tools: list[str] | None = None
    include_base_tools: bool = True
    context_window_limit: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    timezone: str | None = None


class UpdateAgent(_Body):
    name: str | None = Field(default=None, min_length=1)
    system: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    model: str | None = None
    embedding: str | None = None
    llm_config: dict[str, Any] | None = None
    embedding_config: dict[str, Any] | None = None
    model_settings: dict[str, Any] | None = None
    block_ids: list[str] | None = None
    tool_ids: list[str] | None = None
    context_window_limit: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    timezone: str | None = None


class TextContent(_Body):
    type: Literal["text"] = "text"
    text: str


class MessageCreate(_Body):
    role: Literal["user", "system", "assistant"]
    content: str | list[TextContent]
    otid: str | None = None
    name: str | None = None
    sender_id: str | None = None
    type: Literal["message"] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class SendMessages(_Body):
    """``LettaRequest`` / ``LettaStreamingRequest``: what a send carries."""

    messages: list[MessageCreate] | None = None
    input: str | list[TextContent] | None = None
    max_steps: int = Field(default=50, ge=1, le=1000)
    streaming: bool | None = None
    stream_tokens: bool = False
    background: bool = False
    include_pings: bool = True
    include_return_message_types: list[str] | None = None
    use_assistant_message: bool = True
    assistant_message_tool_name: str | None = None
    assistant_message_tool_kwarg: str | None = None
    agent_id: str | None = None
    callback_url: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> SendMessages:
        if self.messages is not None and self.input is not None:
            raise ValueError("give either 'messages' or 'input', not both")
        if self.messages is None and self.input is None:
            raise ValueError("one of 'messages' or 'input' is required")
        if self.messages is not None and not self.messages:
            raise ValueError("Messages must not be empty")
        return self

    def input_messages(self) -> list[MessageCreate]:
        if self.messages is not None:
            return self.messages
        return [MessageCreate(role="user", content=self.input or "")]

    def check_limits(self, limits: InputLimits) -> None:
        """The number of messages and the size of each (``runtime.limits``), naming the field."""
        if self.messages is None:
            limits.check_text(self.input_messages()[0].text(), "input")
            return
        limits.check_count(len(self.messages), "messages")
        for index, message in enumerate(self.messages):
            limits.check_text(message.text(), f"messages[{index}].content")


class RetrieveStream(_Body):
    run_id: str | None = None
    otid: str | None = None
    starting_after: int = Field(default=0, ge=0)
    include_pings: bool = True
    poll_interval: float | None = None
    batch_size: int | None = None
    agent_id: str | None = None


class CreateConversation(_Body):
    summary: str | None = None
    description: str | None = None
    model: str | None = None
    model_settings: dict[str, Any] | None = None
    context_window_limit: int | None = Field(default=None, gt=0)
    hidden: bool | None = None


class UpdateConversation(_Body):
    summary: str | None = None
    description: str | None = None
    model: str | None = None
    model_settings: dict[str, Any] | None = None
    context_window_limit: int | None = Field(default=None, gt=0)
    archived: bool | None = None


class CancelRuns(_Body):
    run_ids: list[str] | None = None


class UpdateBlock(_Body):
    value: str | None = None
    label: str | None = Field(default=None, min_length=1)
    limit: int | None = Field(default=None, gt=0)
    description: str | None = None
    read_only: bool | None = None
    metadata: dict[str, Any] | None = None
    hidden: bool | None = None
    tags: list[str] | None = None


class ToolFields(_Body):
    """The fields a tool create, upsert or update may carry (all optional on update)."""

    source_code: str | None = None
    json_schema: dict[str, Any] | None = None
    args_json_schema: dict[str, Any] | None = None
    description: str | None = None
    tags: list[str] | None = None
    source_type: str | None = None
    return_char_limit: int | None = Field(default=None, gt=0)
    pip_requirements: list[dict[str, Any]] | None = None
    npm_requirements: list[dict[str, Any]] | None = None
    default_requires_approval: bool | None = None
    enable_parallel_execution: bool | None = None
    metadata: dict[str, Any] | None = Field(default=None, alias="metadata_")


class CreateTool(ToolFields):
    source_code: str = Field(min_length=1)  # type: ignore[assignment]
