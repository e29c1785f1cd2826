"""``--api-key``: every route but health needs the bearer key, through both SDKs, streams included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from letta_client import AuthenticationError, Letta

from parley.processes import FakeLLMProcess, ServerProcess, start_server

from .helpers import assistant_text, send

KEY = "parley-test-key-7f3a9c"


@pytest.fixture(scope="module")
def locked(fake_llm: FakeLLMProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    started = start_server(fake_llm, tmp_path_factory.mktemp("parley-auth"), env={"PARLEY_API_KEY": KEY})
    yield started
    started.stop()


def test_health_is_open_and_everything_else_needs_the_key(locked):
    assert httpx.get(f"{locked.url}/v1/health/", timeout=10).status_code == 200
    for method, path in [
        ("GET", "/v1/agents/"),
        ("POST", "/v1/agents/"),
        ("GET", "/v1/tools/"),
        ("POST", "/v1/runs/run-00000000-0000-4000-8000-000000000000/stream"),
        ("POST", "/v1/conversations/conv-00000000-0000-4000-8000-000000000000/messages"),
        ("POST", "/openai/v1/responses"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            answer = httpx.request(method, f"{locked.url}{path}", headers=headers, json={}, timeout=10)
            assert answer.status_code == 401, (method, path, headers)
            assert KEY not in answer.text


def test_letta_sdk_with_and_without_the_key(locked):
    with Letta(base_url=locked.url, timeout=60) as anonymous, pytest.raises(AuthenticationError):
        anonymous.agents.list()
    with Letta(base_url=locked.url, api_key=KEY, timeout=60) as client:
        agent = client.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
        conversation = client.conversations.create(agent_id=agent.id)
        chunks = send(client, conversation.id, "say authorised", background=True)
        assert assistant_text(chunks) == "authorised"
        replay = list(client.runs.messages.stream(chunks[0].run_id, starting_after=0))
        assert assistant_text(replay) == "authorised"
        client.agents.delete(agent.id)


def test_openai_sdk_with_and_without_the_key(locked):
    wrong = openai.OpenAI(base_url=f"{locked.url}/openai/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.responses.create(model="gpt-4o-mini", input="say no")
    assert caught.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=f"{locked.url}/openai/v1", api_key=KEY, timeout=30)
    events = list(right.responses.create(model="gpt-4o-mini", input="say streamed yes", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "streamed yes"
