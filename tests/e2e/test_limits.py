"""Input limits on both surfaces: a clear 4xx naming the field, never a 500 or a hang.

Letta answers ``{"detail": ...}`` (422 for a field over a limit), OpenAI ``{"error": {...}}`` with
``param`` (400). The raw cases (a body too large, half a surrogate pair) go through httpx, since
the SDKs cannot send them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from letta_client import NotFoundError, UnprocessableEntityError

from runtime.limits import MAX_JSON_DEPTH
from runtime.settings import Settings

DEFAULTS = Settings()
OVER_MESSAGE = "x" * (DEFAULTS.max_message_bytes + 1)
TOOL_SOURCE = '''
def limited_tool(text: str) -> str:
    """Echo text.

    Args:
        text (str): What to echo.
    """
    return text
'''


@pytest.fixture(scope="module")
def oai(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


# --- Letta ------------------------------------------------------------------------------------------
def test_a_message_over_the_size_limit_is_a_422_naming_it(client, agent) -> None:
    with pytest.raises(UnprocessableEntityError, match=r"messages\[1\]\.content: .* exceed the limit"):
        client.agents.messages.create(
            agent.id,
            messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": OVER_MESSAGE}],
        )
    with pytest.raises(UnprocessableEntityError, match="input: "):
        client.agents.messages.create(agent.id, input=OVER_MESSAGE)


def test_too_many_messages_is_a_422(client, conversation) -> None:
    messages = [{"role": "user", "content": "hi"}] * (DEFAULTS.max_messages_per_request + 1)
    with pytest.raises(UnprocessableEntityError, match="messages: at most"):
        list(client.conversations.messages.create(conversation.id, messages=messages))


def test_tool_source_over_the_limit_is_a_422(client) -> None:
    padding = "#" * DEFAULTS.max_tool_source_bytes
    with pytest.raises(UnprocessableEntityError, match=r"source_code: .* exceed the limit"):
        client.tools.create(source_code=padding + TOOL_SOURCE)


def test_page_limits_are_bounded(client, agent) -> None:
    for bad in (0, 1001):
        with pytest.raises(UnprocessableEntityError, match="limit"):
            client.agents.list(limit=bad)
        with pytest.raises(UnprocessableEntityError, match="limit"):
            client.agents.messages.list(agent.id, limit=bad)
    assert client.agents.list(limit=1000).items


def test_malformed_ids_are_422_and_unknown_ones_404(client) -> None:
    with pytest.raises(UnprocessableEntityError, match="agent_id"):
        client.agents.retrieve("agent-123")
    with pytest.raises(NotFoundError):
        client.agents.retrieve("agent-00000000-0000-4000-8000-00000000abcd")


def test_null_name_or_system_leaves_the_agent_as_it_was(client, agent, http) -> None:
    """Found by fuzzing: a PATCH with ``"system": null`` stored an agent that could not be read back."""
    answer = http.patch(f"/v1/agents/{agent.id}", json={"name": None, "system": None})
    assert answer.status_code == 200, answer.text
    again = client.agents.retrieve(agent.id)
    assert (again.name, again.system) == (agent.name, agent.system)


def test_a_block_value_over_its_limit_is_a_422(client) -> None:
    with pytest.raises(UnprocessableEntityError, match=r"memory_blocks\[0\]\.value"):
        client.agents.create(
            model="openai/gpt-4o-mini", memory_blocks=[{"label": "tiny", "value": "abc", "limit": 1}]
        )


def test_a_tool_schema_a_provider_could_not_take_is_a_422(client) -> None:
    """Found by fuzzing: such a tool was stored, and every later send of its agents was a 500."""
    for schema, field in (
        ({"name": "bad_parameters", "parameters": "text"}, "json_schema.parameters"),
        ({"name": "bad_description", "description": 5}, "json_schema.description"),
    ):
        with pytest.raises(UnprocessableEntityError, match=field):
            client.tools.create(source_code=TOOL_SOURCE, json_schema=schema)


# --- OpenAI -----------------------------------------------------------------------------------------
def _bad_request(call, param: str) -> str:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.param == param, caught.value.body
    return caught.value.message


def test_openai_input_limits(oai) -> None:
    _bad_request(lambda: oai.responses.create(input=OVER_MESSAGE), "input")
    _bad_request(
        lambda: oai.responses.create(
            input=[{"role": "user", "content": "hi"}, {"role": "user", "content": OVER_MESSAGE}]
        ),
        "input[1]",
    )
    _bad_request(lambda: oai.responses.create(input="hi", instructions=OVER_MESSAGE), "instructions")
    too_many = [{"role": "user", "content": "hi"}] * (DEFAULTS.max_messages_per_request + 1)
    _bad_request(lambda: oai.responses.create(input=too_many), "input")
    _bad_request(
        lambda: oai.conversations.create(items=[{"role": "user", "content": OVER_MESSAGE}]), "items[0]"
    )


def test_openai_metadata_limits_on_responses_and_conversations(oai) -> None:
    too_many = {f"k{i}": "v" for i in range(17)}
    for create in (
        lambda metadata: oai.responses.create(input="hi", metadata=metadata),
        lambda metadata: oai.conversations.create(metadata=metadata),
    ):
        assert "16" in _bad_request(lambda create=create: create(too_many), "metadata")
        _bad_request(lambda create=create: create({"k" * 65: "v"}), "metadata")
        _bad_request(lambda create=create: create({"k": "v" * 513}), "metadata.k")
    exact = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert oai.conversations.create(metadata=exact).metadata == exact


def test_openai_tool_schemas_are_checked(oai) -> None:
    """Found by fuzzing: a function tool whose parameters were not an object was a 500."""
    tool = {"type": "function", "name": "f", "parameters": "text", "strict": None}
    _bad_request(lambda: oai.responses.create(input="hi", tools=[tool]), "tools[0].parameters")


def test_openai_page_limit_and_ids(oai) -> None:
    conversation = oai.conversations.create()
    _bad_request(lambda: oai.conversations.items.list(conversation.id, limit=101), "limit")
    _bad_request(lambda: oai.conversations.retrieve("conv_123"), "conversation_id")
    with pytest.raises(openai.NotFoundError):
        oai.conversations.retrieve("conv_" + "a" * 48)


# --- raw bodies ------------------------------------------------------------------------------------
def test_a_body_over_the_request_limit_is_a_413_in_each_shape(http, agent) -> None:
    body = b'{"input": "' + b"x" * DEFAULTS.max_request_bytes + b'"}'
    headers = {"content-type": "application/json"}
    letta = http.post(f"/v1/agents/{agent.id}/messages", content=body, headers=headers)
    assert letta.status_code == 413 and "too large" in letta.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield body

    openai_answer = http.post("/openai/v1/responses", content=chunked(), headers=headers)
    assert openai_answer.status_code == 413 and "too large" in openai_answer.json()["error"]["message"]


def test_half_a_surrogate_pair_is_refused_not_a_500(http, agent) -> None:
    headers = {"content-type": "application/json"}
    letta = http.post(
        f"/v1/agents/{agent.id}/messages",
        content=b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
        headers=headers,
    )
    assert letta.status_code == 422 and "surrogate" in letta.json()["detail"], letta.text
    answer = http.post("/openai/v1/conversations", content=b'{"metadata": {"k": "\\udc00"}}', headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "metadata", answer.text
    # a whole pair is an ordinary character
    fine = http.post(
        "/openai/v1/conversations", content=b'{"metadata": {"k": "\\ud83d\\ude00"}}', headers=headers
    )
    assert fine.status_code == 200 and fine.json()["metadata"] == {"k": "\U0001f600"}


def test_json_nested_too_deep_is_refused(http) -> None:
    nested = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    body = '{"model": "openai/gpt-4o-mini", "metadata": {"deep": ' + nested + "}}"
    answer = http.post("/v1/agents/", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["detail"].startswith("metadata: nested"), answer.text


def test_unknown_routes_on_the_openai_surface_answer_in_its_shape(http) -> None:
    answer = http.get("/openai/v1/no-such-route")
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tools/%0A"),
        ("GET", "/v1/conversations/%0A"),
        ("GET", "/v1/health%0A"),
        ("POST", "/openai/v1/conversations%0A"),
    ],
)
def test_a_path_ending_in_a_line_feed_is_an_unknown_route(http, method: str, path: str) -> None:
    """Found by fuzzing: Python's ``$`` matches before a final newline, so ``/v1/tools/%0A`` was
    served by the collection route (200 with the list) and a POST could create a conversation."""
    unknown = "/openai/v1/no-such-route" if path.startswith("/openai/") else "/v1/no-such-route"
    answer = http.request(method, path, json={})
    expected = http.request(method, unknown, json={})
    assert (answer.status_code, answer.json()) == (404, expected.json())


def test_the_hidden_agent_of_the_openai_surface_is_not_on_the_letta_surface(oai, client) -> None:
    """It owns every OpenAI conversation: a Letta client must not be able to read or delete it."""
    from serve_app.openai.home import HOME_AGENT_ID

    oai.conversations.create()  # the hidden agent exists from here on
    with pytest.raises(NotFoundError):
        client.agents.retrieve(HOME_AGENT_ID)
    with pytest.raises(NotFoundError):
        client.agents.delete(HOME_AGENT_ID)
    assert oai.conversations.create().object == "conversation"
