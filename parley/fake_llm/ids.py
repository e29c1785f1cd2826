"""Random identifiers in each provider's style (chatcmpl-..., msg_..., call_..., ...)."""

from __future__ import annotations

import uuid


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]
