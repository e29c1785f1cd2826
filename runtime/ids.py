"""Identifier formats shared by every surface.

Letta ids are ``<prefix>-<uuid4>``; an ``otid`` is a bare uuid. Produced messages derive their
otids from the message id so that every Letta message expanded from one stored message can be
told apart by its last hex digit (reasoning ends in 0, the assistant text in 1, ...).
"""

from __future__ import annotations

import hashlib
import re
import uuid

AGENT = "agent"
BLOCK = "block"
CONVERSATION = "conv"
MESSAGE = "message"
RUN = "run"
STEP = "step"
TOOL = "tool"
PING = "ping"

_UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_PATTERNS: dict[str, re.Pattern[str]] = {}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def derived_id(prefix: str, seed: str) -> str:
    """An id in ``new_id``'s format that is the same for the same ``seed`` (a client's idempotency
    key): a retried request finds what the first one created."""
    digest = hashlib.sha256(seed.encode()).digest()
    return f"{prefix}-{uuid.UUID(bytes=digest[:16], version=4)}"


def new_otid() -> str:
    return str(uuid.uuid4())


def is_valid(prefix: str, value: str) -> bool:
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(rf"^{re.escape(prefix)}-{_UUID4}$")
    return pattern.match(value) is not None


def otid_for(message_id: str, index: int) -> str:
    """The otid of the ``index``-th Letta message expanded from stored message ``message_id``."""
    raw = uuid.UUID(message_id.split("-", 1)[1])
    return str(uuid.UUID(int=(raw.int & ~0x7F) | (index & 0x7F)))
