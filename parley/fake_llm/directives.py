"""`[[name=value]]` directives that let a test steer one request from inside its prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Only known names are directives; anything else in double brackets stays text.
_DIRECTIVE = re.compile(
    r"\[\[\s*(latency|token_delay|status|cut|hang|fail_first)\s*(?:=\s*([^\]]*?)\s*)?\]\]\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Directives:
    latency: float | None = None  # seconds before the first byte, overrides --latency
    token_delay: float | None = None  # seconds between streamed tokens, overrides --token-delay
    status: int | None = None  # answer with this provider-style HTTP error instead
    cut: int | None = None  # drop the connection after this many streamed tokens
    hang: bool = False  # never answer; wait until the client goes away
    # With `status`: only the first N requests carrying this same prompt fail (a transient fault,
    # so a client's retries get through); without `status`, they fail with 503.
    fail_first: int | None = None


NO_DIRECTIVES = Directives()


def extract_directives(text: str) -> tuple[Directives, str]:
    """Return the directives found in `text` and the text with them removed.

    Malformed values (e.g. `[[latency=soon]]`) are removed but ignored.
    """
    if "[[" not in text:  # the common case costs one substring scan
        return NO_DIRECTIVES, text
    found: dict[str, object] = {}
    for match in _DIRECTIVE.finditer(text):
        name, raw = match.group(1).lower(), (match.group(2) or "").strip()
        value = _parse_value(name, raw)
        if value is not None:
            found[name] = value
    if not found and not _DIRECTIVE.search(text):
        return NO_DIRECTIVES, text
    return Directives(**found), _DIRECTIVE.sub("", text).strip()  # type: ignore[arg-type]


def _parse_value(name: str, raw: str) -> float | int | bool | None:
    try:
        if name == "hang":
            return True
        if name in ("latency", "token_delay"):
            seconds = float(raw)
            return seconds if seconds >= 0 else None
        number = int(raw)
    except ValueError:
        return None
    if name == "status":
        return number if 400 <= number <= 599 else None
    return number if number >= 0 else None  # cut, fail_first
