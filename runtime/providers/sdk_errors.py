"""Turning an official SDK's exception into a ``ProviderError``.

The openai and anthropic SDKs share their exception names (both are Stainless-generated), so one
function serves both; it is handed the SDK module whose classes to test against.
"""

from __future__ import annotations

from types import ModuleType

from .base import ProviderError, ProviderErrorKind

_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "prompt is too long", "context window")


def provider_error_from(exc: BaseException, sdk: ModuleType, provider: str) -> ProviderError:
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{provider} request timed out", "timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{provider} connection failed: {exc}", "connection")
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
    return ProviderError(f"{provider} call failed: {type(exc).__name__}: {exc}", "other")


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
