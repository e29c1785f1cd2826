"""An OpenAI-compatible server (vLLM, Ollama ...) configured as PARLEY_PROVIDER_<NAME>_BASE_URL."""

from __future__ import annotations

import pytest
from letta_client import NotFoundError

from .helpers import assistant_text, send


def test_handle_of_a_compatible_provider(client, fake_llm):
    local = client.agents.create(model="localai/qwen3-8b")
    try:
        assert local.llm_config.model == "qwen3-8b"
        assert local.llm_config.model_endpoint_type == "openai"
        assert local.llm_config.model_endpoint == fake_llm.openai_base_url
        assert local.llm_config.provider_name == "localai"
        conversation = client.conversations.create(agent_id=local.id)
        assert assistant_text(send(client, conversation.id, "say from a local model")) == "from a local model"
    finally:
        client.agents.delete(local.id)


def test_llm_config_with_an_endpoint(client, fake_llm):
    direct = client.agents.create(
        llm_config={
            "model": "served-model",
            "model_endpoint_type": "openai",
            "model_endpoint": fake_llm.openai_base_url,
            "context_window": 8192,
        }
    )
    try:
        conversation = client.conversations.create(agent_id=direct.id)
        assert assistant_text(send(client, conversation.id, "echo via endpoint")) == "via endpoint"
    finally:
        client.agents.delete(direct.id)


def test_unconfigured_provider_is_not_found(client):
    with pytest.raises(NotFoundError, match="localai"):
        client.agents.create(model="nosuch/model")
