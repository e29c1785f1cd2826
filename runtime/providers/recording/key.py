"""The key of a recording: a hash of the normalised request.

What goes into the hash: the HTTP method, the URL path (``/v1/chat/completions``,
``/v1/responses``, ``/v1/messages`` ...) and the JSON body with its volatile parts left out:

- the host, port and query string of the URL (a recording made against one base URL replays
  against any other; credentials some providers take in the query never count);
- every header (``Authorization``, ``x-api-key``, the SDK's version and retry-count headers);
- the top-level body fields that identify the caller rather than shape the answer: ``user``,
  ``metadata``, ``prompt_cache_key``, ``safety_identifier``;
- inside every string of the body, identifiers and clock readings: UUIDs (Parley's ``agent-``,
  ``conv-``, ``message-`` ... ids), runs of 24 or more hex digits (OpenAI-surface ids) and
  date-times (the "last recompiled" line of a Letta system prompt) become fixed placeholders.

Everything else counts: the model, the messages, the tools, ``stream`` and every sampling setting.
Two requests equal after normalisation share one recording.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

VOLATILE_FIELDS = frozenset({"user", "metadata", "prompt_cache_key", "safety_identifier"})

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{24,}")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
    r"(?:\s?[AaPp][Mm])?(?:\s?(?:UTC|GMT)?(?:[+-]\d{2}:?\d{2}|Z)?)?"
)


def request_key(method: str, path: str, body: Any) -> str:
    """The hex SHA-256 of the normalised request (see the module docstring)."""
    canonical = json.dumps(
        {"method": method.upper(), "path": path, "body": normalised_body(body)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def normalised_body(body: Any) -> Any:
    """``body`` without its volatile fields, with identifiers and clock readings masked."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VOLATILE_FIELDS}
    return _masked(body)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _mask_text(text: str) -> str:
    text = _UUID.sub("<uuid>", text)
    text = _HEX_RUN.sub("<hex>", text)
    return _DATETIME.sub("<datetime>", text)
