"""Model handles -> llm_config, including OpenAI-compatible providers."""

from __future__ import annotations

import pytest

from runtime.errors import NotFound
from runtime.handles import llm_config_for, split_handle
from runtime.settings import ProviderCredentials, Settings


def test_openai_and_anthropic_handles() -> None:
    openai = llm_config_for("openai/gpt-4o-mini")
    assert (openai.model, openai.model_endpoint_type, openai.model_endpoint) == (
        "gpt-4o-mini",
        "openai",
        None,
    )
    claude = llm_config_for("anthropic/claude-sonnet-4-5", context_window_limit=1000)
    assert (claude.model_endpoint_type, claude.context_window) == ("anthropic", 1000)


def test_compatible_provider_is_openai_at_its_url() -> None:
    config = llm_config_for("vllm/qwen", compatible={"vllm": "http://gpu:8000/v1"})
    assert (config.model, config.model_endpoint_type, config.model_endpoint) == (
        "qwen",
        "openai",
        "http://gpu:8000/v1",
    )
    assert config.provider_name == "vllm" and config.handle == "vllm/qwen"


@pytest.mark.parametrize("handle", ["vllm/qwen", "no-slash", "/model", "openai/"])
def test_unknown_or_malformed_handles(handle: str) -> None:
    with pytest.raises(NotFound):
        split_handle(handle)


def test_compatible_providers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_PROVIDER_VLLM_BASE_URL", "http://gpu:8000/v1")
    monkeypatch.setenv("PARLEY_PROVIDER_VLLM_API_KEY", "secret")
    monkeypatch.setenv("PARLEY_PROVIDER_OLLAMA_BASE_URL", "http://localhost:11434/v1")
    assert Settings.from_env().compatible_providers == {
        "vllm": "http://gpu:8000/v1",
        "ollama": "http://localhost:11434/v1",
    }
    assert ProviderCredentials.from_env().endpoint_keys == {"http://gpu:8000/v1": "secret"}
    assert "secret" not in repr(ProviderCredentials.from_env())
