"""Turning an official SDK's exception into a ``ProviderError``.

The openai and anthropic SDKs share their exception names (both are Stainless-generated), so one
function serves both; it is handed the SDK module whose classes to test against.

Transport failures are told apart by what is at the bottom of the exception chain, not by the
SDK's class alone: through the aiohttp transport a connection reset before any response surfaces
as the SDK's ``APITimeoutError`` (aiohttp's connection errors map to httpx's ``ConnectTimeout``),
and a stream broken mid-way surfaces as the SDK's error (openai) or as a bare transport error
(anthropic).
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Iterator, Mapping
from types import ModuleType

from .base import ProviderError, ProviderErrorKind

log = logging.getLogger(__name__)

_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "prompt is too long", "context window")


def as_provider_error(
    exc: Exception, sdk: ModuleType, provider: str, timeout: float | None = None
) -> ProviderError:
    """The ``ProviderError`` for an SDK or transport exception; anything else (a bug of ours) is
    raised again as it is. ``timeout`` is the client's timeout, for the message of a timeout.

    A ``ProviderError`` raised under the SDK, by our own transport (a replay with no recording),
    is that error itself: the SDK's wrapping of it as a connection error would have it retried."""
    own = next((e for e in _chain(exc) if isinstance(e, ProviderError)), None)
    if own is not None:
        return own
    if isinstance(exc, sdk.APIError) or is_transport_error(exc):
        return provider_error_from(exc, sdk, provider, timeout)
    raise exc


def provider_error_from(
    exc: BaseException, sdk: ModuleType, provider: str, timeout: float | None = None
) -> ProviderError:
    # The SDK's own message; the cause (a transport error) goes to the server log, never to clients.
    log.warning("%s call failed: %s: %s (cause: %r)", provider, type(exc).__name__, exc, exc.__cause__)
    if isinstance(exc, sdk.APIStatusError):
        return _status_error(exc, provider)
    transport = _transport_failure(exc, timeout)
    if transport is not None:
        kind, reason = transport
        what = "request timed out" if kind == "timeout" else "connection failed"
        return ProviderError(f"{provider} {what}: {reason}", kind)
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{provider} request timed out{_cause(exc)}", "timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{provider} connection failed{_cause(exc)}", "connection")
    if is_transport_error(exc):
        # Raised by the transport itself mid-stream, past the SDK's wrapping (a cut connection).
        return ProviderError(f"{provider} connection broke off: {type(exc).__name__}: {exc}", "connection")
    return ProviderError(f"{provider} call failed: {type(exc).__name__}: {exc}", "other")


def _status_error(exc: BaseException, provider: str) -> ProviderError:
    status: int = exc.status_code  # type: ignore[attr-defined]
    detail = _detail(exc)
    kind: ProviderErrorKind
    if status == 400 and any(h in detail.lower() for h in _CONTEXT_HINTS):
        kind = "context_length"
    elif status in (401, 403):
        kind = "auth"
    elif status == 404:
        kind = "not_found"
    elif status == 429:
        kind = "rate_limit"
    elif status >= 500:
        kind = "server"
    else:
        kind = "bad_request"
    response = getattr(exc, "response", None)
    headers: Mapping[str, str] = getattr(response, "headers", None) or {}
    should_retry = {"true": True, "false": False}.get(str(headers.get("x-should-retry", "")).lower())
    return ProviderError(
        f"{provider} API error {status}: {detail}",
        kind,
        status,
        retry_after=retry_after_seconds(headers),
        should_retry=should_retry,
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``retry-after`` in seconds or as an
    HTTP date; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            continue
        return max(seconds, 0.0) if not math.isnan(seconds) else None
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# Transport exception classes of httpx (and its vendored copies) and aiohttp, by name, so this
# module needs neither installed.
_TRANSPORT_NAMES = {"TransportError", "NetworkError", "ClientError", "ClientPayloadError"}
# A response whose body stopped short: the peer closed (or reset) the connection mid-way.
_CUT_OFF_NAMES = {"ClientPayloadError", "TransferEncodingError", "ContentLengthError", "IncompleteRead"}


def is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSPORT_NAMES for cls in type(exc).__mro__)


def _transport_failure(exc: BaseException, timeout: float | None) -> tuple[ProviderErrorKind, str] | None:
    """What went wrong on the wire, in words, from the exception chain; None when nothing in it
    says (the SDK's class is all there is to go by)."""
    chain = list(_chain(exc))
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection", "the provider refused the connection"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "connection", "the provider reset the connection"
    if names & _CUT_OFF_NAMES:
        return "connection", "the provider's response broke off before it was complete"
    if "ServerDisconnectedError" in names:
        return "connection", "the provider closed the connection without answering"
    if any(isinstance(e, ConnectionError) for e in chain):
        return "connection", f"{type(chain[-1]).__name__}: {chain[-1]}"
    if any(isinstance(e, TimeoutError) for e in chain):
        seconds = f" for {timeout:g} s" if timeout else ""
        return "timeout", f"no data from the provider{seconds}"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _detail(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            parts = [str(inner.get("message") or "")]
            if inner.get("code"):
                parts.append(f"(code: {inner['code']})")
            text = " ".join(p for p in parts if p)
            if text:
                return text
    return getattr(exc, "message", None) or str(exc)


def _cause(exc: BaseException) -> str:
    """The transport error under an SDK connection error, e.g. ``: ConnectError: refused``."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None and (cause.__cause__ or cause.__context__) is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    return f" ({type(cause).__name__}: {cause})" if cause is not None else ""
