"""The end-to-end tier's fixtures: a real fake-LLM process and a real ``parley serve`` process on
free ports. Every test here is marked ``e2e``; ``-m "not e2e"`` (or ``pytest tests/unit``) is the
quick loop, and the slow, crash, cluster and fuzz tests carry their own marks too.

End-to-end tests drive the server only through the official SDKs over HTTP. The server runs with
a short passivation time so that idle conversations passivate and activate again during the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from parley.processes import FakeLLMProcess, ServerProcess, start_fake_llm, start_redis, start_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)


IDLE_SECONDS = 3.0
TOOL_TIMEOUT_SECONDS = 4.0


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLMProcess]:
    fake = start_fake_llm()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def store_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``PARLEY_TEST_STORE=redis`` runs the session's server on a private redis-server; by default
    it uses the embedded SQLite store."""
    if os.environ.get("PARLEY_TEST_STORE", "sqlite") != "redis":
        yield {}
        return
    redis_server = start_redis(tmp_path_factory.mktemp("redis"))
    yield {"PARLEY_STORE_URL": redis_server.url}
    redis_server.stop()


@pytest.fixture(scope="session")
def server(
    fake_llm: FakeLLMProcess, store_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(
        fake_llm,
        tmp_path_factory.mktemp("parley-data"),
        env={
            **store_env,
            "PARLEY_CONVERSATION_IDLE_SECONDS": str(IDLE_SECONDS),
            "PARLEY_KEEPALIVE_SECONDS": "20",
            "PARLEY_TOOL_TIMEOUT_SECONDS": str(TOOL_TIMEOUT_SECONDS),
            # An OpenAI-compatible provider (as vLLM or Ollama would be), served by the same fake.
            "PARLEY_PROVIDER_LOCALAI_BASE_URL": fake_llm.openai_base_url,
            "PARLEY_PROVIDER_LOCALAI_API_KEY": "local-key",
        },
    )
    yield started
    started.stop()


@pytest.fixture
def client(server: ServerProcess):
    from letta_client import Letta

    with Letta(base_url=server.url) as letta:
        yield letta


@pytest.fixture
def agent(client):
    created = client.agents.create(
        name="test-agent",
        model="openai/gpt-4o-mini",
        embedding="openai/text-embedding-3-small",
        memory_blocks=[
            {"label": "persona", "value": "I am Parley's test assistant."},
            {"label": "human", "value": "The user is called Ada."},
        ],
        tags=["test"],
    )
    yield created
    try:
        client.agents.delete(created.id)
    except Exception:
        pass


@pytest.fixture
def conversation(client, agent):
    return client.conversations.create(agent_id=agent.id)
