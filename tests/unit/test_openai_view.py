"""``serve_app.openai``: ids, items, Response objects and the Responses stream, checked against the
wire spec's invariants and, where the installed ``openai`` package allows, its own types and its
``responses.stream()`` state machine."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import TypeAdapter

from runtime import ids as our_ids
from runtime.errors import InvalidArgument, NotFound
from runtime.events import Delta, Done, MessageDone, Ping, RunEvent, RunStarted, Stopped
from runtime.message import Message, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from runtime.run import Run, RunStatus, StopReason, Usage
from serve_app.openai import ids
from serve_app.openai.items import items_of, page, parse_input
from serve_app.openai.responses import created_response, response_object
from serve_app.openai.stream import ResponseStream, sse

# Building the SDK stream-event union validator takes a few seconds the first time.
pytestmark = pytest.mark.timeout(30)

openai = pytest.importorskip("openai")

responses_types = pytest.importorskip("openai.types.responses")
conversations_types = pytest.importorskip("openai.types.conversations")
stream_state = pytest.importorskip("openai.lib.streaming.responses")

STREAM_EVENT = TypeAdapter(responses_types.ResponseStreamEvent)
CONVERSATION_ITEM = TypeAdapter(conversations_types.ConversationItem)

AGENT_ID = "agent-11111111-2222-4333-8444-555555555555"
CONV_ID = "conv-22222222-3333-4444-8555-666666666666"
RUN_ID = "run-33333333-4444-4555-8666-777777777777"
MODEL = "openai/gpt-4o-mini"
LIFECYCLE = {
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.completed",
    "response.failed",
    "response.incomplete",
}
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


def message(role: str, *parts: Any) -> Message:
    return Message(role=role, parts=list(parts), agent_id=AGENT_ID, conversation_id=CONV_ID, run_id=RUN_ID)  # type: ignore[arg-type]


def assistant_turn() -> Message:
    return message(
        "assistant",
        ReasoningPart(text="Thinking it over."),
        TextPart(text="Let me check."),
        ToolCallPart(id="call_a", name="lookup", arguments='{"q": "a"}'),
        ToolCallPart(id="call_b", name="fetch", arguments='{"url": "b"}'),
    )


def make_run(status: RunStatus, stop_reason: StopReason | None = None, **fields: Any) -> Run:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    terminal = status.terminal
    return Run(
        id=RUN_ID,
        agent_id=AGENT_ID,
        conversation_id=CONV_ID,
        status=status,
        stop_reason=stop_reason,
        created_at=created,
        completed_at=datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC) if terminal else None,
        usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, step_count=1),
        **fields,
    )


def wire(value: Any) -> Any:
    """What a client gets after JSON encoding."""
    return json.loads(json.dumps(value))


# --- ids -------------------------------------------------------------------------------------------
def test_conversation_and_response_ids_round_trip() -> None:
    conv = ids.to_openai_conversation(CONV_ID)
    assert conv.startswith("conv_") and len(conv) == 5 + 48 and conv.endswith("0" * 16)
    assert ids.from_openai_conversation(conv) == CONV_ID
    resp = ids.to_openai_response(RUN_ID)
    assert resp.startswith("resp_") and len(resp) == 5 + 48
    assert ids.from_openai_response(resp) == RUN_ID
    fresh = our_ids.new_id(our_ids.CONVERSATION)
    assert ids.from_openai_conversation(ids.to_openai_conversation(fresh)) == fresh


@pytest.mark.parametrize(
    "value", ["", "conv_", "conv-123", "conv_" + "A" * 48, "conv_" + "0" * 47, "resp_" + "0" * 48]
)
def test_malformed_conversation_id_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ids.from_openai_conversation(value)
    assert caught.value.param == "conversation_id"  # type: ignore[attr-defined]
    assert "Expected an ID that begins with 'conv_'" in caught.value.message


def test_malformed_response_id_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ids.from_openai_response("resp-" + "0" * 48)
    assert caught.value.param == "response_id"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "digits",
    [
        uuid.uuid4().hex + "0" * 15 + "1",  # the padding is not ours
        uuid.uuid1().hex + "0" * 16,  # not a uuid4
        "f" * 48,
    ],
)
def test_well_formed_foreign_ids_are_not_found(digits: str) -> None:
    with pytest.raises(NotFound, match="Conversation"):
        ids.from_openai_conversation("conv_" + digits)
    with pytest.raises(NotFound, match="Response"):
        ids.from_openai_response("resp_" + digits)


def test_wrong_kind_of_our_id_is_a_bug() -> None:
    with pytest.raises(ValueError):
        ids.to_openai_conversation(RUN_ID)


def test_item_ids() -> None:
    message_id = our_ids.new_id(our_ids.MESSAGE)
    hex32 = uuid.UUID(message_id.split("-", 1)[1]).hex
    assert ids.item_id(message_id, 0, "message") == f"msg_{hex32}{0:016x}"
    assert ids.item_id(message_id, 3, "function_call") == f"fc_{hex32}{3:016x}"
    assert ids.item_id(message_id, 1, "function_call_output").startswith("fco_")
    assert ids.item_id(message_id, 2, "reasoning").startswith("rs_")
    for kind in ("message", "function_call", "function_call_output", "reasoning"):
        assert ids.parse_item_id(ids.item_id(message_id, 300, kind)) == (message_id, 300)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["", "msg_", "item_" + "0" * 48, "msg_" + uuid.uuid1().hex + "0" * 16, "msg_xyz"]
)
def test_unparseable_item_ids_are_not_found(value: str) -> None:
    with pytest.raises(NotFound, match="Conversation item"):
        ids.parse_item_id(value)


# --- items_of --------------------------------------------------------------------------------------
def test_user_and_system_messages_are_one_item_each() -> None:
    user = message("user", TextPart(text="Hello"), TextPart(text="there"))
    [item] = items_of(user)
    assert item == {
        "type": "message",
        "id": ids.item_id(user.id, 0, "message"),
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Hello"}, {"type": "input_text", "text": "there"}],
    }
    [system] = items_of(message("system", TextPart(text="Be brief.")))
    assert system["role"] == "system" and system["content"] == [{"type": "input_text", "text": "Be brief."}]
    CONVERSATION_ITEM.validate_python(item)


def test_assistant_message_is_one_item_per_part() -> None:
    turn = assistant_turn()
    items = items_of(turn)
    assert [i["type"] for i in items] == ["reasoning", "message", "function_call", "function_call"]
    assert [i["id"] for i in items] == [
        ids.item_id(turn.id, 0, "reasoning"),
        ids.item_id(turn.id, 1, "message"),
        ids.item_id(turn.id, 2, "function_call"),
        ids.item_id(turn.id, 3, "function_call"),
    ]
    assert items[0]["summary"] == [{"type": "summary_text", "text": "Thinking it over."}]
    assert items[1]["role"] == "assistant"
    assert items[1]["content"] == [
        {"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}
    ]
    assert items[2] == {
        "type": "function_call",
        "id": ids.item_id(turn.id, 2, "function_call"),
        "call_id": "call_a",
        "name": "lookup",
        "arguments": '{"q": "a"}',
        "status": "completed",
    }
    assert all(i["status"] == "completed" for i in items)
    for item in items:
        CONVERSATION_ITEM.validate_python(item)


def test_empty_assistant_text_is_skipped_without_shifting_ids() -> None:
    turn = message("assistant", TextPart(text=""), ToolCallPart(id="call_x", name="f", arguments="{}"))
    [call] = items_of(turn)
    assert call["id"] == ids.item_id(turn.id, 1, "function_call")


def test_tool_message_items() -> None:
    tool = message("tool", ToolReturnPart(tool_call_id="call_a", name="lookup", content="42"))
    [item] = items_of(tool)
    assert item == {
        "type": "function_call_output",
        "id": ids.item_id(tool.id, 0, "function_call_output"),
        "call_id": "call_a",
        "output": "42",
        "status": "completed",
    }
    CONVERSATION_ITEM.validate_python(item)


def test_page() -> None:
    assert page([], has_more=False) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    items = items_of(assistant_turn())
    listed = page(items, has_more=True)
    assert (
        listed["first_id"] == items[0]["id"] and listed["last_id"] == items[-1]["id"] and listed["has_more"]
    )


# --- parse_input -----------------------------------------------------------------------------------
def test_a_string_is_one_user_message() -> None:
    [m] = parse_input("Hi there")
    assert m.role == "user" and m.text == "Hi there"
    assert m.message_parts() == [TextPart(text="Hi there")]


def test_easy_messages_and_developer_role() -> None:
    parsed = parse_input(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
        ]
    )
    assert [(m.role, m.text) for m in parsed] == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "ab"),
    ]
    assert parsed[3].message_parts() == [TextPart(text="a"), TextPart(text="b")]


def test_full_message_with_extra_and_null_fields() -> None:
    [m] = parse_input(
        [
            {
                "type": "message",
                "id": "msg_abc",
                "status": "completed",
                "role": "assistant",
                "phase": None,
                "content": [
                    {"type": "output_text", "text": "Sure", "annotations": [], "logprobs": None},
                    {"type": "refusal", "refusal": ", but no."},
                ],
            }
        ]
    )
    assert m.role == "assistant" and m.message_parts() == [TextPart(text="Sure, but no.")]


def test_our_own_output_echoed_back_is_one_assistant_turn() -> None:
    turn = assistant_turn()
    echoed = [{**item, "extra": None} for item in wire(items_of(turn))]
    [m] = parse_input(echoed)
    assert m.role == "assistant"
    assert m.message_parts() == turn.parts


def test_sdk_serialised_output_is_accepted() -> None:
    """``input += response.output`` sends the SDK's models back, every optional field as null."""
    turn = assistant_turn()
    obj = response_object(
        make_run(RunStatus.completed, StopReason.end_turn),
        model=MODEL,
        output=[turn],
        conversation_id=None,
        request={},
    )
    response = responses_types.Response.model_validate(wire(obj))
    echoed = [item.model_dump(mode="json") for item in response.output]
    assert any(v is None for item in echoed for v in item.values())
    [m] = parse_input(echoed)
    assert m.message_parts() == turn.parts


def test_function_call_and_output() -> None:
    parsed = parse_input(
        [
            {"role": "user", "content": "Roll two dice"},
            {"type": "function_call", "call_id": "call_1", "name": "roll", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "roll", "arguments": "{}", "id": "fc_x"},
            {"type": "function_call_output", "call_id": "call_1", "output": "4"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "6"}, {"type": "input_text", "text": "!"}],
            },
        ]
    )
    assert [m.role for m in parsed] == ["user", "assistant", "tool", "tool"]
    # Parallel calls of one turn stay one assistant message: chat providers need them together.
    assert parsed[1].message_parts() == [
        ToolCallPart(id="call_1", name="roll", arguments="{}"),
        ToolCallPart(id="call_2", name="roll", arguments="{}"),
    ]
    assert parsed[2].message_parts() == [ToolReturnPart(tool_call_id="call_1", name="roll", content="4")]
    assert parsed[3].message_parts() == [ToolReturnPart(tool_call_id="call_2", name="roll", content="6!")]


def test_a_new_assistant_turn_starts_after_calls() -> None:
    parsed = parse_input(
        [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "again"}]},
            {"role": "assistant", "content": "done"},
        ]
    )
    assert [[p.type for p in m.message_parts()] for m in parsed] == [["tool_call"], ["reasoning", "text"]]


def test_reasoning_item() -> None:
    [m] = parse_input(
        [
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}],
                "encrypted_content": None,
                "content": None,
            }
        ]
    )
    assert m.role == "assistant" and m.message_parts() == [ReasoningPart(text="a\n\nb")]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([], "input"),
        (42, "input"),
        (["hi"], "input[0]"),
        ([{"type": "item_reference", "id": "msg_1"}], "input[0].type"),
        ([{"id": "msg_1"}], "input[0].type"),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type"),
        ([{"role": "tool", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": 3}], "input[0].content"),
        ([{"role": "user", "content": ["x"]}], "input[0].content[0]"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
                    ],
                }
            ],
            "input[0].content[1].type",
        ),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0].type"),
        (
            [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "x"},
            ],
            "input[1].call_id",
        ),
        ([{"type": "function_call", "call_id": "c", "arguments": "{}"}], "input[0].name"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}], "input[0].arguments"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
        ([{"type": "function_call_output", "call_id": "c", "output": None}], "input[0].output"),
        (
            [
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": "u"}],
                }
            ],
            "input[0].output[0].type",
        ),
        ([{"type": "reasoning", "summary": "x"}], "input[0].summary"),
    ],
)
def test_bad_input_names_the_parameter(value: Any, param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_input(value)
    assert caught.value.param == param  # type: ignore[attr-defined]


def test_unsupported_types_say_so() -> None:
    with pytest.raises(InvalidArgument, match=r"input\[0\]\.type: 'item_reference' is not supported"):
        parse_input([{"type": "item_reference", "id": "msg_1"}])
    with pytest.raises(InvalidArgument) as caught:
        parse_input([{"role": "user", "content": [{"type": "input_image"}]}], field="items")
    assert caught.value.param == "items[0].content[0].type"  # type: ignore[attr-defined]
    assert "'input_image' is not supported" in caught.value.message


# --- response_object -------------------------------------------------------------------------------
def respond(run: Run, output: list[Message] | None = None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("conversation_id", CONV_ID)
    kwargs.setdefault("request", {})
    return response_object(run, model=MODEL, output=output or [], **kwargs)


def test_completed_response() -> None:
    user = message("user", TextPart(text="Hi"))
    reply = message("assistant", TextPart(text="Hello!"))
    obj = respond(make_run(RunStatus.completed, StopReason.end_turn), [user, reply])
    assert obj["id"] == ids.to_openai_response(RUN_ID) and obj["object"] == "response"
    assert obj["status"] == "completed" and obj["model"] == MODEL
    assert obj["created_at"] == int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    assert obj["completed_at"] == obj["created_at"] + 4
    assert obj["output"] == items_of(reply)  # the user's input is not output
    assert obj["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    assert obj["error"] is None and obj["incomplete_details"] is None
    assert obj["conversation"] == {"id": ids.to_openai_conversation(CONV_ID)}
    assert obj["tools"] == [] and obj["tool_choice"] == "auto" and obj["parallel_tool_calls"] is True
    assert obj["metadata"] == {} and obj["store"] is True and obj["text"] == {"format": {"type": "text"}}
    assert obj["truncation"] == "disabled" and obj["service_tier"] == "default" and obj["background"] is False
    parsed = responses_types.Response.model_validate(wire(obj))
    assert parsed.output_text == "Hello!"


def test_tool_outputs_are_output_too() -> None:
    turn = assistant_turn()
    tool = message("tool", ToolReturnPart(tool_call_id="call_a", name="lookup", content="42"))
    obj = respond(make_run(RunStatus.completed, StopReason.end_turn), [turn, tool])
    assert [i["type"] for i in obj["output"]] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
    ]
    responses_types.Response.model_validate(wire(obj))


def test_request_echoes() -> None:
    request = {
        "instructions": "Be brief.",
        "metadata": {"k": "v"},
        "temperature": 0.5,
        "tools": [{"type": "function", "name": "f", "parameters": None, "strict": None}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "store": False,
        "max_output_tokens": None,  # null means the default
        "previous_response_id": "resp_x",
    }
    obj = respond(make_run(RunStatus.completed, StopReason.end_turn), request=request, conversation_id=None)
    for key in (
        "instructions",
        "metadata",
        "temperature",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "store",
    ):
        assert obj[key] == request[key]
    assert obj["max_output_tokens"] is None and obj["previous_response_id"] == "resp_x"
    assert obj["conversation"] is None
    responses_types.Response.model_validate(wire(obj))


@pytest.mark.parametrize(
    ("status", "stop_reason", "expected"),
    [
        (RunStatus.created, None, "in_progress"),
        (RunStatus.running, None, "in_progress"),
        (RunStatus.completed, StopReason.end_turn, "completed"),
        (RunStatus.completed, StopReason.requires_approval, "completed"),
        (RunStatus.failed, StopReason.error, "failed"),
        (RunStatus.failed, StopReason.max_tokens_exceeded, "incomplete"),
        (RunStatus.completed, StopReason.max_tokens_exceeded, "incomplete"),
        (RunStatus.cancelled, StopReason.cancelled, "cancelled"),
    ],
)
def test_statuses(status: RunStatus, stop_reason: StopReason | None, expected: str) -> None:
    obj = respond(make_run(status, stop_reason))
    assert obj["status"] == expected
    assert (obj["usage"] is None) == (expected == "in_progress")
    assert (obj["completed_at"] is None) == (expected == "in_progress")
    assert (obj["incomplete_details"] == {"reason": "max_output_tokens"}) == (expected == "incomplete")
    responses_types.Response.model_validate(wire(obj))


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("llm_rate_limit", "rate_limit_exceeded"),
        ("llm_context_length", "context_length_exceeded"),
        ("llm_server", "server_error"),
        ("internal_error", "server_error"),
    ],
)
def test_errors(error_type: str, code: str) -> None:
    run = make_run(
        RunStatus.failed, StopReason.error, metadata={"error": {"error_type": error_type, "message": "boom"}}
    )
    assert respond(run)["error"] == {"code": code, "message": "boom"}


def test_a_failed_run_without_recorded_error_still_has_one() -> None:
    error = respond(make_run(RunStatus.failed, StopReason.llm_api_error))["error"]
    assert error["code"] == "server_error" and error["message"]


# --- the stream ------------------------------------------------------------------------------------
def snapshot() -> dict[str, Any]:
    return respond(make_run(RunStatus.running))


def final(status: RunStatus, stop_reason: StopReason, output: list[Message]) -> dict[str, Any]:
    return respond(make_run(status, stop_reason), output)


def delta(message_id: str, part: str, text: str, index: int, **kwargs: Any) -> Delta:
    return Delta(run_id=RUN_ID, message_id=message_id, part=part, text=text, index=index, **kwargs)  # type: ignore[arg-type]


def render(events: list[RunEvent], end: dict[str, Any]) -> list[dict[str, Any]]:
    stream = ResponseStream(snapshot())
    out = stream.start()
    for event in events:
        out += stream.feed(event)
    out += stream.finish(end)
    return wire(out)


def check_invariants(events: list[dict[str, Any]]) -> None:
    """Spec §7.4, checked on the raw events."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["output"] == []
    lifecycle = [e for e in events if e["type"] in LIFECYCLE]
    assert len({e["response"]["id"] for e in lifecycle}) == 1
    assert events[-1]["type"] in TERMINAL
    assert sum(e["type"] in TERMINAL for e in events) == 1
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    parts: set[tuple[str, int]] = set()
    for e in events:
        kind, index = e["type"], e.get("output_index")
        if kind == "response.output_item.added":
            assert index not in added, "one output_item.added per output_index"
            assert index == len(added), "output indexes count items in order"
            added[index] = e["item"]
            if e["item"]["type"] == "message":
                assert e["item"]["content"] == []
        elif kind == "response.output_item.done":
            first = added[index]
            assert index not in done
            assert (first["type"], first["id"], first.get("call_id")) == (
                e["item"]["type"],
                e["item"]["id"],
                e["item"].get("call_id"),
            )
            assert e["item"]["status"] == "completed"
            done[index] = e["item"]
        elif index is not None:
            assert index in added and index not in done, f"{kind} outside its item's life"
            assert e["item_id"] == added[index]["id"]
            if kind == "response.content_part.added":
                parts.add((e["item_id"], e["content_index"]))
            if kind == "response.output_text.delta":
                assert (e["item_id"], e["content_index"]) in parts
        elif kind in TERMINAL:
            if kind == "response.completed":
                assert set(done) == set(added), "completed after every output_item.done"


def through_sdk(events: list[dict[str, Any]]) -> Any:
    """Each event validated by the SDK's types and fed to its ``responses.stream()`` state machine;
    returns the final response it assembles (or None without ``response.completed``)."""
    state = stream_state.ResponseStreamState(input_tools=[], text_format=openai.omit)
    completed = None
    for raw in events:
        event = STREAM_EVENT.validate_python(raw)
        for out in state.handle_event(event):
            if out.type == "response.completed":
                completed = out.response
    return completed


def done_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "response.output_item.done"]


def test_token_stream_of_reasoning_and_text() -> None:
    reply = message("assistant", ReasoningPart(text="Hmm, let me think."), TextPart(text="Hello there!"))
    events = render(
        [
            RunStarted(run_id=RUN_ID),
            delta(reply.id, "reasoning", "Hmm, ", 0),
            delta(reply.id, "reasoning", "let me think.", 0),
            Ping(run_id=RUN_ID),
            delta(reply.id, "text", "Hello", 1),
            delta(reply.id, "text", " there!", 1),
            MessageDone(message=reply, streamed=True),
            Stopped(run_id=RUN_ID, stop_reason=StopReason.end_turn, usage=Usage()),
        ],
        final(RunStatus.completed, StopReason.end_turn, [reply]),
    )
    check_invariants(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert done_items(events) == items_of(reply)
    assert events[8]["logprobs"] == [] and events[4]["summary_index"] == 0
    assert events[13]["text"] == "Hello there!"
    response = through_sdk(events)
    assert response.output_text == "Hello there!"


def test_step_stream_of_a_tool_loop() -> None:
    turn = assistant_turn()
    returns = [
        message("tool", ToolReturnPart(tool_call_id="call_a", name="lookup", content="1")),
        message("tool", ToolReturnPart(tool_call_id="call_b", name="fetch", content="2")),
    ]
    answer = message("assistant", TextPart(text="Both done."))
    user = message("user", TextPart(text="Go"))
    events = render(
        [MessageDone(message=user), MessageDone(message=turn)]
        + [MessageDone(message=m) for m in returns]
        + [MessageDone(message=answer)],
        final(RunStatus.completed, StopReason.end_turn, [user, turn, *returns, answer]),
    )
    check_invariants(events)
    expected = items_of(turn) + items_of(returns[0]) + items_of(returns[1]) + items_of(answer)
    assert done_items(events) == expected
    # Step streaming: each text goes out as one delta, between its added and done events.
    text_deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert text_deltas == ["Let me check.", "Both done."]
    args = [e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"]
    assert args == ['{"q": "a"}', '{"url": "b"}']
    response = through_sdk(events)
    assert response.output_text == "Let me check.Both done."
    assert [item.id for item in response.output] == [item["id"] for item in expected]


def test_function_call_argument_deltas() -> None:
    turn = message(
        "assistant", TextPart(text=""), ToolCallPart(id="call_9", name="roll", arguments='{"sides": 6}')
    )
    events = render(
        [
            delta(turn.id, "text", "", 0),  # an empty text that never becomes an item
            delta(turn.id, "tool_call", "", 1, tool_call_id="call_9", tool_name="roll"),
            delta(turn.id, "tool_call", '{"sides"', 1, tool_call_id="call_9", tool_name="roll"),
            delta(turn.id, "tool_call", ": 6}", 1, tool_call_id="call_9", tool_name="roll"),
            MessageDone(message=turn, streamed=True),
        ],
        final(RunStatus.completed, StopReason.requires_approval, [turn]),
    )
    check_invariants(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added == {
        "id": ids.item_id(turn.id, 1, "function_call"),
        "type": "function_call",
        "call_id": "call_9",
        "name": "roll",
        "arguments": "",
        "status": "in_progress",
    }
    assert events[5]["arguments"] == '{"sides": 6}'
    response = through_sdk(events)
    [call] = response.output
    assert (call.call_id, call.name, call.arguments) == ("call_9", "roll", '{"sides": 6}')


def test_the_checks_catch_a_missing_content_part() -> None:
    """The harness itself: without ``content_part.added`` both our checks and the SDK fail."""
    reply = message("assistant", TextPart(text="Hi"))
    events = render(
        [delta(reply.id, "text", "Hi", 0), MessageDone(message=reply, streamed=True)],
        final(RunStatus.completed, StopReason.end_turn, [reply]),
    )
    broken = [e for e in events if e["type"] != "response.content_part.added"]
    for i, e in enumerate(broken):
        e["sequence_number"] = i
    with pytest.raises(AssertionError):
        check_invariants(broken)
    with pytest.raises((IndexError, RuntimeError)):
        through_sdk(broken)


def test_a_part_without_deltas_is_still_announced() -> None:
    reply = message("assistant", ReasoningPart(text="quiet thought"), TextPart(text="Hi!"))
    events = render(
        [delta(reply.id, "text", "Hi", 1), MessageDone(message=reply, streamed=True)],
        final(RunStatus.completed, StopReason.end_turn, [reply]),
    )
    check_invariants(events)
    assert {i["id"] for i in done_items(events)} == {i["id"] for i in items_of(reply)}
    # The stored text finishes what the deltas started.
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hi", "!"]
    through_sdk(events)


@pytest.mark.parametrize(
    ("status", "stop_reason", "terminal"),
    [
        (RunStatus.failed, StopReason.error, "response.failed"),
        (RunStatus.cancelled, StopReason.cancelled, "response.failed"),
        (RunStatus.failed, StopReason.max_tokens_exceeded, "response.incomplete"),
    ],
)
def test_a_stream_cut_short_closes_its_items(
    status: RunStatus, stop_reason: StopReason, terminal: str
) -> None:
    message_id = our_ids.new_id(our_ids.MESSAGE)
    events = render(
        [delta(message_id, "reasoning", "Thinking", 0), delta(message_id, "text", "Half a sent", 1)],
        final(status, stop_reason, []),
    )
    check_invariants(events)
    assert events[-1]["type"] == terminal
    assert events[-1]["response"]["status"] == (
        "cancelled" if status is RunStatus.cancelled else terminal.split(".")[1]
    )
    assert [i["type"] for i in done_items(events)] == ["reasoning", "message"]
    assert done_items(events)[1]["content"][0]["text"] == "Half a sent"
    assert through_sdk(events) is None


def test_the_start_snapshot_is_the_response_as_created() -> None:
    reply = message("assistant", TextPart(text="Hello!"))
    finished = make_run(
        RunStatus.failed, StopReason.max_tokens_exceeded, metadata={"error": {"message": "x"}}
    )
    assert respond(finished, [reply])["usage"] is not None
    snapshot_now = created_response(finished, model=MODEL, conversation_id=CONV_ID, request={})
    assert snapshot_now == created_response(
        make_run(RunStatus.created), model=MODEL, conversation_id=CONV_ID, request={}
    )
    assert snapshot_now["status"] == "in_progress" and snapshot_now["output"] == []
    assert snapshot_now["usage"] is None and snapshot_now["error"] is None
    assert snapshot_now["completed_at"] is None and snapshot_now["incomplete_details"] is None
    assert snapshot_now["created_at"] == respond(finished)["created_at"]
    stream = ResponseStream(snapshot_now)
    created, in_progress = stream.start()
    assert created["response"] == snapshot_now and in_progress["response"] is created["response"]
    assert stream.feed(Ping(run_id=RUN_ID)) == []


@pytest.mark.parametrize(
    "progressed", [{"status": "completed"}, {"output": [{"type": "message"}]}, {"usage": {"total_tokens": 1}}]
)
def test_a_stream_refuses_to_start_from_a_progressed_snapshot(progressed: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="as created"):
        ResponseStream({**snapshot(), **progressed})


def test_sse_frame() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "delta": "héllo"}
    frame = sse(event)
    head, data, end = frame.decode().split("\n", 2)
    assert head == "event: response.output_text.delta"
    assert data.startswith("data: ") and json.loads(data[6:]) == event
    assert ", " not in data and '": ' not in data and "héllo" in data  # compact, not ASCII-escaped
    assert end == "\n"


# --- the start of a stream, whatever the run has done by then ----------------------------------------
class _Store:
    """The two reads the stream makes, answered with the run as it is "now"."""

    def __init__(self, run: Run, messages: list[Message]) -> None:
        self.run = run
        self.messages = messages

    async def get_run(self, run_id: str) -> Run | None:
        return self.run if run_id == self.run.id else None

    async def list_run_messages(self, run_id: str, page: Any) -> list[Message]:
        return [m for m in self.messages if m.run_id == run_id]


def _streamed_turn(first_read: RunStatus) -> list[dict[str, Any]]:
    """The events of one streamed response whose run was ``first_read`` when the stream first read
    it from the store: ``completed`` is the order a fast provider (an instant replay) can give, the
    run finished, with output and usage, before ``response.created`` was rendered."""
    from actors.conversation_client import RunStream
    from serve_app.openai.response_routes import _all_events

    reply = message("assistant", TextPart(text="Heron.")).model_copy(
        update={"id": "message-44444444-5555-4666-8777-888888888888", "step_id": "step-1"}
    )
    echo = {"model": MODEL, "conversation": None, "store": True}
    done = make_run(RunStatus.completed, StopReason.end_turn, request_config={"openai": echo})
    store = _Store(done, [message("user", TextPart(text="Word?")), reply])
    if first_read is not RunStatus.completed:
        store.run = make_run(first_read, request_config={"openai": echo})
    events: list[RunEvent] = [
        RunStarted(run_id=RUN_ID),
        delta(reply.id, "text", "Heron.", 0),
        MessageDone(message=reply, streamed=True),
        Stopped(run_id=RUN_ID, stop_reason=StopReason.end_turn, usage=done.usage),
        Done(run_id=RUN_ID),
    ]

    async def collect() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for event in _all_events(SimpleNamespace(store=store), RunStream.of(events), RUN_ID):  # type: ignore[arg-type]
            out.append(event)
            store.run = done  # by the time the stream reads the run again, it has finished
        return out

    return wire(asyncio.run(collect()))


@pytest.mark.parametrize("first_read", [RunStatus.created, RunStatus.running, RunStatus.completed])
def test_response_created_describes_the_response_as_created(first_read: RunStatus) -> None:
    events = _streamed_turn(first_read)
    check_invariants(events)
    created, in_progress = events[0], events[1]
    assert (created["type"], in_progress["type"]) == ("response.created", "response.in_progress")
    for start in (created, in_progress):
        response = start["response"]
        assert response["status"] == "in_progress" and response["output"] == []
        assert response["usage"] is None and response["error"] is None
        assert response["completed_at"] is None and response["incomplete_details"] is None
    # What a client sees does not depend on how far the run got before the stream first read it.
    assert events == _streamed_turn(RunStatus.running)
    assert (
        events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"]["total_tokens"] == 15
    )
