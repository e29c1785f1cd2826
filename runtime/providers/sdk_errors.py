"""Turning an official SDK's exception into a ``ProviderError``.

The openai and anthropic SDKs share their exception names (both are Stainless-generated), so one
function serves both; it is handed the SDK module whose classes to test against.
"""

from __future__ import annotations

import logging
from types import ModuleType

from .base import ProviderError, ProviderErrorKind

log = logging.getLogger(__name__)

_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "prompt is too long", "context window")


def as_provider_error(exc: Exception, sdk: ModuleType, provider: str) -> ProviderError:
    """The ``ProviderError`` for an SDK or transport exception; anything else (a bug of ours) is
    raised again as it is."""
    if isinstance(exc, sdk.APIError) or is_transport_error(exc):
        return provider_error_from(exc, sdk, provider)
    raise exc


def provider_error_from(exc: BaseException, sdk: ModuleType, provider: str) -> ProviderError:
    # The SDK's own message; the cause (a transport error) goes to the server log, never to clients.
    log.warning("%s call failed: %s: %s (cause: %r)", provider, type(exc).__name__, exc, exc.__cause__)
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{provider} request timed out{_cause(exc)}", "timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{provider} connection failed{_cause(exc)}", "connection")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
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
        return ProviderError(f"{provider} API error {status}: {detail}", kind, status)
    if is_transport_error(exc):
        # Raised by the transport itself mid-stream, past the SDK's wrapping (a cut connection).
        return ProviderError(f"{provider} connection broke off: {type(exc).__name__}: {exc}", "connection")
    return ProviderError(f"{provider} call failed: {type(exc).__name__}: {exc}", "other")


# Transport exception classes of httpx (and its vendored copies) and aiohttp, by name, so this
# module needs neither installed.
_TRANSPORT_NAMES = {"TransportError", "NetworkError", "ClientError", "ClientPayloadError"}


def is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSPORT_NAMES for cls in type(exc).__mro__)


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
