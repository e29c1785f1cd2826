"""`[[name=value]]` directives that let a test steer one request from inside its prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Only known names are directives; anything else in double brackets stays text.
_DIRECTIVE = re.compile(
    r"\[\[\s*(latency|token_delay|status|cut|hang|fail_first|reset|stall_after|stall|retry_after)"
    r"\s*(?:=\s*([^\]]*?)\s*)?\]\]\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Directives:
    latency: float | None = None  # seconds before the first byte, overrides --latency
    token_delay: float | None = None  # seconds between streamed tokens, overrides --token-delay
    status: int | None = None  # answer with this provider-style HTTP error instead
    # `[[status=500,502,503]]`: a burst, the Nth failing attempt gets the Nth status (the last one
    # repeats); `status` is then the first of them.
    statuses: tuple[int, ...] = ()
    cut: int | None = None  # drop the connection after this many streamed tokens
    hang: bool = False  # never answer; wait until the client goes away
    # Abort the connection with a TCP reset: `[[reset]]` before any response (not even headers),
    # `[[reset=K]]` after K streamed tokens (0: right after the stream opened, before any token).
    reset: bool = False
    reset_after: int | None = None
    # `[[stall=S]]`: the stream opens, then goes silent for S seconds before its first token (or
    # after `[[stall_after=K]]` tokens), then carries on as if nothing happened.
    stall: float | None = None
    stall_after: int = 0
    retry_after: str | None = None  # the `retry-after` header of an error answer (429: "1")
    # Only the first N requests carrying this same prompt get the faults above (latency, status,
    # cut, hang, reset, stall), so a client's retries get through; with no other fault given,
    # those N fail with 503.
    fail_first: int | None = None

    @property
    def has_fault(self) -> bool:
        return (
            self.latency is not None
            or self.status is not None
            or self.cut is not None
            or self.hang
            or self.reset
            or self.stall is not None
        )

    def status_for_attempt(self, attempt: int) -> int | None:
        """The error status of the `attempt`th (1-based) failing request."""
        burst = self.statuses or ((self.status,) if self.status is not None else ())
        if not burst:
            return None
        return burst[min(max(attempt, 1), len(burst)) - 1]

    def without_faults(self) -> Directives:
        """These directives for an attempt past `fail_first`: only the non-fault ones remain."""
        return Directives(token_delay=self.token_delay, retry_after=self.retry_after)


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
        found.update(_parse(name, raw))
    if not found and not _DIRECTIVE.search(text):
        return NO_DIRECTIVES, text
    return Directives(**found), _DIRECTIVE.sub("", text).strip()  # type: ignore[arg-type]


def _parse(name: str, raw: str) -> dict[str, object]:
    """The fields one directive sets; nothing for a malformed value."""
    try:
        if name == "hang":
            return {"hang": True}
        if name == "reset":
            if not raw:
                return {"reset": True}
            after = int(raw)
            return {"reset": True, "reset_after": after} if after >= 0 else {}
        if name in ("latency", "token_delay", "stall", "retry_after"):
            seconds = float(raw)
            if seconds < 0:
                return {}
            return {name: raw} if name == "retry_after" else {name: seconds}
        if name == "status":
            statuses = tuple(int(part) for part in raw.split(","))
            if not statuses or not all(400 <= s <= 599 for s in statuses):
                return {}
            return {"status": statuses[0], "statuses": statuses if len(statuses) > 1 else ()}
        number = int(raw)
    except ValueError:
        return {}
    return {name: number} if number >= 0 else {}  # cut, fail_first, stall_after
