"""Encoding a ``ModelRequest`` for its provider, without importing any provider SDK."""

from __future__ import annotations

from .anthropic_format import encode as encode_anthropic
from .base import EncodedRequest, MessageCache, ModelRequest, ProviderError
from .openai_format import encode as encode_openai
from .openai_responses_format import encode as encode_openai_responses

_ENCODERS = {
    "openai": encode_openai,
    "openai_responses": encode_openai_responses,
    "anthropic": encode_anthropic,
}


def encode(request: ModelRequest, caches: dict[str, MessageCache] | None = None) -> EncodedRequest:
    """Encode with the request's provider; ``caches`` holds one message cache per provider, since a
    conversation may change models and each wire format encodes the same message differently."""
    encoder = _ENCODERS.get(request.provider)
    if encoder is None:
        raise ProviderError(f"unknown provider {request.provider!r}", "not_found")
    return encoder(request, None if caches is None else caches.setdefault(request.provider, {}))
