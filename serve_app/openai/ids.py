"""Bijections between our ids and OpenAI-looking ids.

Ours are ``<prefix>-<uuid4>``. OpenAI clients (and tests written against Llama Stack) expect
``conv_`` / ``resp_`` followed by 48 lowercase hex characters, so the uuid's 32 hex digits are
padded with 16 zeros. Items have no stored id of their own: one stored message expands to several
items, so an item id is the message's uuid followed by the part's index in those 16 digits.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from runtime import ids
from runtime.errors import InvalidArgument, NotFound

ItemType = Literal["message", "function_call", "function_call_output", "reasoning"]

ITEM_PREFIXES: dict[str, str] = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}
_PAD = "0" * 16
_CONVERSATION = re.compile(r"^conv_[0-9a-f]{48}$")
_RESPONSE = re.compile(r"^resp_[0-9a-f]{48}$")
_ITEM = re.compile(r"^(?:msg|fc|fco|rs)_([0-9a-f]{32})([0-9a-f]{16})$")


def _uuid_of(our_id: str, prefix: str) -> uuid.UUID:
    """The uuid inside one of our ids; a wrong kind of id here is a bug in the caller."""
    if not our_id.startswith(f"{prefix}-"):
        raise ValueError(f"not a {prefix!r} id: {our_id!r}")
    return uuid.UUID(our_id[len(prefix) + 1 :])


def _uuid4_hex(hex32: str) -> uuid.UUID | None:
    """The uuid4 spelled by 32 hex digits, or None: ours are all version 4, RFC 4122 variant."""
    value = uuid.UUID(hex=hex32)
    if value.version != 4 or value.variant != uuid.RFC_4122:
        return None
    return value


def _invalid(param: str, value: str, prefix: str) -> InvalidArgument:
    exc = InvalidArgument(f"Invalid '{param}': {value!r}. Expected an ID that begins with '{prefix}_'.")
    exc.param = param  # type: ignore[attr-defined]
    return exc


def _from_openai(value: str, pattern: re.Pattern[str], param: str, prefix: str) -> uuid.UUID | None:
    """The uuid inside a padded OpenAI id; InvalidArgument when malformed, None when not ours."""
    if not isinstance(value, str) or pattern.match(value) is None:
        raise _invalid(param, value, prefix)
    digits = value[len(prefix) + 1 :]
    if digits[32:] != _PAD:
        return None
    return _uuid4_hex(digits[:32])


# --- conversations ---------------------------------------------------------------------------------
def to_openai_conversation(conversation_id: str) -> str:
    return f"conv_{_uuid_of(conversation_id, ids.CONVERSATION).hex}{_PAD}"


def from_openai_conversation(value: str) -> str:
    found = _from_openai(value, _CONVERSATION, "conversation_id", "conv")
    if found is None:
        raise NotFound(f"Conversation {value!r} not found.")
    return f"{ids.CONVERSATION}-{found}"


# --- responses (our runs) --------------------------------------------------------------------------
def to_openai_response(run_id: str) -> str:
    return f"resp_{_uuid_of(run_id, ids.RUN).hex}{_PAD}"


def from_openai_response(value: str) -> str:
    found = _from_openai(value, _RESPONSE, "response_id", "resp")
    if found is None:
        raise NotFound(f"Response {value!r} not found.")
    return f"{ids.RUN}-{found}"


# --- items -----------------------------------------------------------------------------------------
def item_id(message_id: str, part_index: int, item_type: ItemType) -> str:
    prefix = ITEM_PREFIXES[item_type]
    return f"{prefix}_{_uuid_of(message_id, ids.MESSAGE).hex}{part_index:016x}"


def parse_item_id(value: str) -> tuple[str, int]:
    """(our message id, part index) of an item id; any id we could not have issued is NotFound."""
    match = _ITEM.match(value) if isinstance(value, str) else None
    found = _uuid4_hex(match.group(1)) if match else None
    if match is None or found is None:
        raise NotFound(f"Conversation item {value!r} not found.")
    return f"{ids.MESSAGE}-{found}", int(match.group(2), 16)
