"""Schemathesis fuzzing of every operation in the running server's OpenAPI document.

Each operation gets ``MAX_EXAMPLES`` generated requests (valid per the schema and deliberately
invalid ones), half of them addressed to real resources (an agent, a conversation, a run ...) so
that bodies reach past the id lookups. Every answer must be a documented, non-5xx status with a body
of the documented shape, and come back within a bounded time (a stream that never ends counts as a
hang). ``PARLEY_FUZZ_SEED`` replays a run (its seed is printed), ``PARLEY_FUZZ_EXAMPLES`` digs deeper.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "40"))  # per operation
CONNECT_TIMEOUT = 5.0
REQUEST_SECONDS = 15.0  # a whole request, body included: SSE heartbeats must not keep one alive
FAILURES_SHOWN_PER_OPERATION = 3
TOOL_SOURCE = '''
def fuzz_probe(text: str) -> str:
    """Echo text.

    Args:
        text (str): What to echo.
    """
    return text
'''


def body_negative_data_rejection(ctx: Any, response: Any, case: Any) -> bool | None:
    """A body that breaks the schema must be refused. Only bodies: in a query string or a path a
    number and a string look the same, and a repeated scalar parameter is read as its last value."""
    meta = case.meta
    if meta is None:
        return None
    mutated = {location for location, info in meta.components.items() if info.mode.is_negative}
    if mutated != {ParameterLocation.BODY}:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    body_negative_data_rejection,
]


@dataclass
class Report:
    seed: int
    operations: list[str] = field(default_factory=list)
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # operations with at least one 2xx
    failures: dict[str, list[str]] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")

    def fail(self, label: str, message: str) -> None:
        shown = self.failures.setdefault(label, [])
        if len(shown) < FAILURES_SHOWN_PER_OPERATION:
            shown.append(message)


def _seed(url: str) -> dict[str, dict[str, str]]:
    """Real resources for path parameters, by surface: Letta ids and OpenAI ids."""
    with httpx.Client(base_url=url, timeout=60) as http:

        def ok(response: httpx.Response) -> Any:
            assert response.status_code == 200, response.text
            return response.json()

        tool = ok(http.post("/v1/tools/", json={"source_code": TOOL_SOURCE}))
        agent = ok(
            http.post(
                "/v1/agents/",
                json={
                    "model": "openai/gpt-4o-mini",
                    "memory_blocks": [{"label": "human", "value": "The user is called Ada."}],
                    "tool_ids": [tool["id"]],
                },
            )
        )
        conversation = ok(http.post("/v1/conversations/", params={"agent_id": agent["id"]}, json={}))
        run = ok(
            http.post(
                f"/v1/agents/{agent['id']}/messages/async",
                json={"messages": [{"role": "user", "content": "hello"}]},
            )
        )
        oa_conversation = ok(
            http.post("/openai/v1/conversations", json={"items": [{"role": "user", "content": "hi"}]})
        )
        items = ok(http.get(f"/openai/v1/conversations/{oa_conversation['id']}/items"))
        response = ok(
            http.post(
                "/openai/v1/responses",
                json={
                    "model": "gpt-4o-mini",
                    "input": "hello",
                    "conversation": oa_conversation["id"],
                    "background": True,  # so that it can be streamed again (GET ?stream=true)
                },
            )
        )
    letta = {
        "agent_id": agent["id"],
        "tool_id": tool["id"],
        "block_id": agent["memory"]["blocks"][0]["id"],
        "block_label": "human",
        "conversation_id": conversation["id"],
        "run_id": run["id"],
    }
    openai = {
        "conversation_id": oa_conversation["id"],
        "item_id": items["data"][0]["id"],
        "response_id": response["id"],
    }
    return {"letta": letta, "openai": openai}


def _send(session: requests.Session, kwargs: dict[str, Any]) -> requests.Response:
    """One request with a bound on its whole duration, streamed bodies included."""
    started = time.monotonic()
    response = session.request(**kwargs, stream=True, timeout=(CONNECT_TIMEOUT, REQUEST_SECONDS))
    chunks = []
    try:
        for chunk in response.iter_content(chunk_size=None):
            chunks.append(chunk)
            if time.monotonic() - started > REQUEST_SECONDS:
                raise TimeoutError(f"no end of the response after {REQUEST_SECONDS:.0f}s")
    finally:
        response.close()
    response._content = b"".join(chunks)
    return response


def _templates() -> dict[str, dict[str, Any]]:
    """Valid bodies for the operations whose generated bodies would (almost) never be accepted;
    half of their positive cases lay one over the generated body, so the rest of it gets through."""
    say = {"messages": [{"role": "user", "content": "say fuzz"}]}
    said = {**say, "streaming": False, "stream_tokens": False, "background": False}
    item = {"items": [{"role": "user", "content": "hi"}]}
    return {
        "POST /v1/agents/": {"model": "openai/gpt-4o-mini", "memory_blocks": [{"label": "a", "value": "b"}]},
        "POST /v1/agents/{agent_id}/messages": said,
        "POST /v1/agents/{agent_id}/messages/stream": say,
        "POST /v1/agents/{agent_id}/messages/async": say,
        "POST /v1/conversations/{conversation_id}/messages": say,
        "POST /v1/tools/": {"source_code": TOOL_SOURCE},
        "PUT /v1/tools/": {"source_code": TOOL_SOURCE},
        "POST /openai/v1/conversations": {**item, "metadata": {"topic": "fuzz"}},
        "POST /openai/v1/conversations/{conversation_id}/items": item,
        "POST /openai/v1/responses": {"model": "gpt-4o-mini", "input": "say fuzz"},
    }


@st.composite
def _over_template(draw: st.DrawFn, generated: st.SearchStrategy, template: dict[str, Any]) -> Any:
    case = draw(generated)
    if draw(st.booleans()):
        body = case.body if isinstance(case.body, dict) else {}
        case.body = {**body, **template}
    return case


def _strategies(operation: Any, real_ids: dict[str, str]) -> list[st.SearchStrategy]:
    """Cases with generated ids and with the real resources' ids, valid and invalid ones."""
    path = {p.name: real_ids[p.name] for p in operation.path_parameters if p.name in real_ids}
    query = {p.name: real_ids[p.name] for p in operation.query if p.name == "agent_id"}
    template = _templates().get(operation.label)
    out = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        out.append(operation.as_strategy(generation_mode=mode))
        if path or query or template:
            real = operation.as_strategy(
                generation_mode=mode, path_parameters=path or None, query=query or None
            )
            out.append(_over_template(real, template) if template and mode.is_positive else real)
    return out


def _fuzz_operation(
    operation: Any, real_ids: dict[str, str], url: str, session: requests.Session, report: Report
) -> None:
    label = operation.label
    strategies = _strategies(operation, real_ids)
    report.operations.append(label)

    @seed(report.seed)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is reported as found
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        report.cases += 1
        kwargs = case.as_transport_kwargs(base_url=url)
        started = time.monotonic()
        try:
            response = _send(session, kwargs)
        except (requests.Timeout, TimeoutError) as exc:
            report.fail(label, f"hang: {exc}\n{case.as_curl_command()}")
            return
        except requests.RequestException as exc:
            report.fail(label, f"{type(exc).__name__}: {exc}\n{case.as_curl_command()}")
            return
        elapsed = time.monotonic() - started
        if elapsed > report.slowest[0]:
            report.slowest = (elapsed, label)
        report.by_status[response.status_code] = report.by_status.get(response.status_code, 0) + 1
        if response.status_code < 300:
            report.answered.add(label)
        try:
            case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": url})
        except FailureGroup as exc:  # the failed checks, with a curl command to reproduce the case
            report.fail(label, str(exc))

    run()


def _ordered(operations: list[Any]) -> list[Any]:
    """Updates late and deletes last (the deepest paths first, the agent at the very end), so the
    real resources stay as they were for the other operations."""

    def rank(op: Any) -> tuple[int, int, bool, bool]:
        method = op.method.upper()
        phase = 2 if method == "DELETE" else 1 if method in ("PATCH", "PUT") else 0
        owner = "/conversations/" in op.path or op.path.startswith("/v1/agents/")
        return phase, -op.path.count("/"), owner, op.path.startswith("/v1/agents/")

    return sorted(operations, key=rank)


def fuzz(url: str, select: Callable[[Any], bool] = lambda op: True) -> Report:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    seeds = _seed(url)
    report = Report(seed=int(os.environ.get("PARLEY_FUZZ_SEED") or random.randrange(2**32)))
    operations = [result.ok() for result in schema.get_all_operations()]
    with requests.Session() as session:
        for operation in _ordered([op for op in operations if select(op)]):
            surface = "openai" if operation.path.startswith("/openai/") else "letta"
            _fuzz_operation(operation, seeds[surface], url, session, report)
    return report


def test_openapi_document_lists_both_surfaces(server) -> None:
    """Both surfaces' routes are in the document, each with its client errors (4XX) described."""
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    paths = document["paths"]
    for expected in (
        "/v1/agents/",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/runs/{run_id}",
        "/v1/tools/",
        "/openai/v1/conversations",
        "/openai/v1/conversations/{conversation_id}/items",
        "/openai/v1/responses",
        "/openai/v1/responses/{response_id}/input_items",
    ):
        assert expected in paths, expected
    for path, operations in paths.items():
        if path.startswith("/v1/health"):
            continue
        shape = "OpenAIError" if path.startswith("/openai/") else "LettaError"
        for method, operation in operations.items():
            error = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert error["$ref"].endswith(shape), (method, path)


@pytest.mark.timeout(300)
def test_fuzz_every_operation(server) -> None:
    started = time.monotonic()
    report = fuzz(server.url)
    seconds = time.monotonic() - started
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(report.by_status.items()))
    print(
        f"\nschemathesis: {report.cases} cases on {len(report.operations)} operations in {seconds:.1f}s "
        f"({statuses}); {len(report.answered)} operations answered 2xx at least once; slowest "
        f"{report.slowest[0]:.2f}s on {report.slowest[1]}; PARLEY_FUZZ_SEED={report.seed}"
    )
    assert any(label.startswith("POST /openai/v1/responses") for label in report.operations)
    assert any(label.startswith("POST /v1/agents/") for label in report.operations)
    problems = [f"{label}:\n" + "\n---\n".join(found) for label, found in report.failures.items()]
    assert not problems, "\n\n".join(problems)
