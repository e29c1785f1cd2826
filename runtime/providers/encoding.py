"""Encoding a ``ModelRequest`` for its provider, without importing any provider SDK."""

from __future__ import annotations

from .anthropic_format import encode as encode_anthropic
from .base import EncodedRequest, MessageCache, ModelRequest, ProviderError
from .openai_format import encode as encode_openai

_ENCODERS = {"openai": encode_openai, "anthropic": encode_anthropic}


def encode(request: ModelRequest, cache: MessageCache | None = None) -> EncodedRequest:
    encoder = _ENCODERS.get(request.provider)
    if encoder is None:
        raise ProviderError(f"unknown provider {request.provider!r}", "not_found")
    return encoder(request, cache)
