"""Model handles (``provider/model``) and the configs they stand for."""

from __future__ import annotations

from collections.abc import Mapping

from .agent import EmbeddingConfig, LLMConfig
from .errors import NotFound
from .providers.registry import KNOWN_PROVIDERS

# Context windows by model-name prefix; a client can always lower them with context_window_limit.
_CONTEXT_WINDOWS = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-5", 272_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude", 200_000),
)
DEFAULT_CONTEXT_WINDOW = 128_000

_EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
DEFAULT_EMBEDDING_DIM = 1536


def split_handle(
    handle: str, field: str = "model", compatible: Mapping[str, str] | None = None
) -> tuple[str, str]:
    provider, sep, model = handle.partition("/")
    if not sep or not provider or not model:
        raise NotFound(
            f"{field}: handle {handle!r} not found; expected 'provider/model', e.g. 'openai/gpt-4o-mini'"
        )
    known = [*KNOWN_PROVIDERS, *(compatible or {})]
    if provider not in known:
        raise NotFound(f"{field}: handle {handle!r} not found; known providers are {', '.join(known)}")
    return provider, model


def llm_config_for(
    handle: str,
    context_window_limit: int | None = None,
    max_tokens: int | None = None,
    compatible: Mapping[str, str] | None = None,
) -> LLMConfig:
    """The config a handle stands for; a ``compatible`` provider is spoken to as OpenAI at its URL."""
    provider, model = split_handle(handle, compatible=compatible)
    window = next((w for prefix, w in _CONTEXT_WINDOWS if model.startswith(prefix)), DEFAULT_CONTEXT_WINDOW)
    if context_window_limit:
        window = min(window, context_window_limit)
    endpoint = (compatible or {}).get(provider)
    return LLMConfig(
        model=model,
        model_endpoint_type="openai" if endpoint else provider,
        model_endpoint=endpoint,
        context_window=window,
        handle=handle,
        provider_name=provider,
        max_tokens=max_tokens,
    )


def embedding_config_for(handle: str) -> EmbeddingConfig:
    provider, sep, model = handle.partition("/")
    if not sep or not provider or not model:
        raise NotFound(f"embedding: handle {handle!r} not found; expected 'provider/model'")
    return EmbeddingConfig(
        embedding_model=model,
        embedding_endpoint_type=provider,
        embedding_dim=_EMBEDDING_DIMS.get(model, DEFAULT_EMBEDDING_DIM),
        handle=handle,
    )
