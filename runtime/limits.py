"""Input limits, shared by the Letta and the OpenAI surface: each limit and its check live here once.

A request over a limit fails before anything is stored or sent to a model, with a ``LimitExceeded``
(422 on the Letta surface, 400 on the OpenAI one) whose message names the field. The sizes that an
operator may want to move are settings (``PARLEY_MAX_*``); the rest are fixed by the APIs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument, LimitExceeded, ValidationFailed
from .message import ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from .settings import Settings
from .turn import InputMessage

# OpenAI's metadata (conversations and responses): at most 16 pairs of short strings.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
# Page sizes: Letta lists take 1..1000, OpenAI lists 1..100; anything else is rejected.
LETTA_MAX_PAGE = 1000
OPENAI_MAX_PAGE = 100
# OpenAI's conversations.items.create takes at most 20 items at a time.
MAX_ITEMS_PER_ADD = 20
# Nesting of a JSON request body. Free-form fields (metadata, JSON schemas ...) are stored as JSON,
# and the store's JSON reader stops at 200 levels: a deeper value could be written but not read.
MAX_JSON_DEPTH = 64


def utf8_size(text: str) -> int:
    # "surrogatepass": JSON may spell a lone surrogate (\ud800), which plain UTF-8 cannot encode.
    return len(text.encode("utf-8", "surrogatepass"))


def message_size(message: InputMessage) -> int:
    """Bytes of content in one input message: its text, or every text its parts carry."""
    if message.parts is None:
        return utf8_size(message.text)
    size = 0
    for part in message.parts:
        if isinstance(part, TextPart | ReasoningPart):
            size += utf8_size(part.text)
        elif isinstance(part, ToolCallPart):
            size += utf8_size(part.name) + utf8_size(part.arguments)
        elif isinstance(part, ToolReturnPart):
            size += utf8_size(part.content)
    return size


@dataclass(frozen=True)
class InputLimits:
    """The configurable limits, as one replica's settings set them."""

    max_message_bytes: int
    max_messages: int
    max_tool_source_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> InputLimits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_messages=settings.max_messages_per_request,
            max_tool_source_bytes=settings.max_tool_source_bytes,
        )

    def check_count(self, count: int, field: str) -> None:
        if count > self.max_messages:
            raise LimitExceeded(
                f"{field}: at most {self.max_messages} messages per request, got {count}", field
            )

    def check_message(self, message: InputMessage, field: str) -> None:
        self._check_size(message_size(message), field)

    def check_text(self, text: str | None, field: str) -> None:
        """Text that the model reads as one message (e.g. a response's ``instructions``)."""
        if text:
            self._check_size(utf8_size(text), field)

    def _check_size(self, size: int, field: str) -> None:
        if size > self.max_message_bytes:
            raise LimitExceeded(
                f"{field}: {size} bytes of content exceed the limit of {self.max_message_bytes} bytes "
                "per message",
                field,
            )

    def check_tool_source(self, source: str | None, field: str = "source_code") -> None:
        if source is None:
            return
        size = utf8_size(source)
        if size > self.max_tool_source_bytes:
            raise LimitExceeded(
                f"{field}: {size} bytes of source code exceed the limit of {self.max_tool_source_bytes} bytes",
                field,
            )


def _invalid(message: str, param: str) -> InvalidArgument:
    error = InvalidArgument(message)
    error.param = param  # type: ignore[attr-defined]
    return error


def check_metadata(metadata: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI-style metadata: an object of at most 16 string pairs, keys ≤ 64 and values ≤ 512
    characters. ``None`` is no metadata."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise _invalid(f"Invalid '{param}': expected an object of string keys and values.", param)
    if len(metadata) > MAX_METADATA_PAIRS:
        raise LimitExceeded(
            f"Invalid '{param}': at most {MAX_METADATA_PAIRS} key-value pairs, got {len(metadata)}.", param
        )
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise _invalid(f"Invalid '{param}': keys must be strings.", param)
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise LimitExceeded(
                f"Invalid '{param}': key {key[:20]!r}... is longer than {MAX_METADATA_KEY_CHARS} characters.",
                param,
            )
        if not isinstance(value, str):
            raise _invalid(f"Invalid '{param}.{key}': values must be strings.", f"{param}.{key}")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise LimitExceeded(
                f"Invalid '{param}.{key}': values are at most {MAX_METADATA_VALUE_CHARS} characters.",
                f"{param}.{key}",
            )
    return dict(metadata)


def check_json(value: Any) -> None:
    """A parsed JSON request body: nested at most ``MAX_JSON_DEPTH`` levels, and only text that is
    valid Unicode (JSON can spell half a surrogate pair, ``\\ud800``, which no store can encode).
    The error names the top-level field it is under."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "body")]
    while stack:
        node, depth, field = stack.pop()
        if isinstance(node, str):
            _check_unicode(node, field)
            continue
        if depth >= MAX_JSON_DEPTH and isinstance(node, dict | list) and node:
            raise LimitExceeded(f"{field}: nested more than {MAX_JSON_DEPTH} levels deep", field)
        if isinstance(node, dict):
            for key, item in node.items():
                _check_unicode(key, field)
                stack.append((item, depth + 1, key if depth == 0 else field))
        elif isinstance(node, list):
            stack.extend((item, depth + 1, field) for item in node)


def _check_unicode(text: str, field: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailed(
            f"{field}: invalid Unicode at character {exc.start}: a lone UTF-16 surrogate "
            f"({text[exc.start]!r})",
            field,
        ) from None
