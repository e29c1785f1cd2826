"""The OpenAI Conversations + Responses API under ``/openai/v1``, driven through the official ``openai`` SDK.

The provider is the fake LLM: "say X" replies X, "Remember the word: X" / "What word did I ask you to
remember?" give two-turn memory, "call NAME with {json}" asks for a function call when NAME is offered,
and ``[[latency=N]]`` / ``[[status=N]]`` steer one provider request.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from .openai_helpers import (
    CALL_WEATHER,
    MODEL,
    RECALL,
    WEATHER_TOOL,
    BackgroundStream,
    assert_openai_error_body,
    assert_sequence_numbers,
    items_asc,
    message_text,
    missing_conversation_id,
    race,
    summarize,
    unique_word,
)

CONV_ID = re.compile(r"conv_[0-9a-f]{48}")


@pytest.fixture(scope="module")
def oai(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="parley", timeout=30) as client:
        yield client


# ---- conversations -----------------------------------------------------------------------------


def test_conversation_seed_script(oai):
    """Create with metadata and items, retrieve, update, items create/list/retrieve/delete, delete."""
    conv = oai.conversations.create(
        metadata={"topic": "weather", "owner": "ada"},
        items=[
            {"type": "message", "role": "user", "content": "Hello there"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi Ada"}]},
        ],
    )
    assert CONV_ID.fullmatch(conv.id)
    assert conv.object == "conversation"
    assert conv.metadata == {"topic": "weather", "owner": "ada"}
    assert isinstance(conv.created_at, int) and conv.created_at > 1_600_000_000

    got = oai.conversations.retrieve(conv.id)
    assert (got.id, got.object, got.created_at, got.metadata) == (
        conv.id,
        "conversation",
        conv.created_at,
        conv.metadata,
    )

    # update replaces the metadata wholesale; created_at is unchanged
    updated = oai.conversations.update(conv.id, metadata={"topic": "forecast"})
    assert (updated.id, updated.created_at, updated.metadata) == (
        conv.id,
        conv.created_at,
        {"topic": "forecast"},
    )
    assert oai.conversations.retrieve(conv.id).metadata == {"topic": "forecast"}

    # The initial items, content always a list of parts.
    initial = items_asc(oai, conv.id)
    assert summarize(initial) == [("message", "user", "Hello there"), ("message", "assistant", "Hi Ada")]
    assert [[p.type for p in item.content] for item in initial] == [["input_text"], ["output_text"]]
    for item in initial:
        assert item.id.startswith("msg_")
        assert item.status == "completed"

    # A batch of every basic item type comes back in request order with ids and status filled in.
    created = oai.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {
                "type": "function_call",
                "call_id": "call_seed1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_seed1", "output": "Sunny, 21 C"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking it over."}]},
            {"role": "assistant", "content": "It is sunny in Paris."},
        ],
    )
    data = created.data
    assert [item.type for item in data] == [
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "message",
    ]
    assert created.has_more is False
    assert created.first_id == data[0].id and created.last_id == data[-1].id
    assert all(item.id for item in data) and len({item.id for item in data}) == len(data)
    assert all(item.status == "completed" for item in data)
    user, call, output, reasoning, assistant = data
    assert (user.role, [(p.type, p.text) for p in user.content]) == ("user", [("input_text", "Weather?")])
    assert (call.call_id, call.name, call.arguments) == ("call_seed1", "get_weather", '{"city": "Paris"}')
    assert (output.call_id, output.output) == ("call_seed1", "Sunny, 21 C")
    assert [(s.type, s.text) for s in reasoning.summary] == [("summary_text", "Thinking it over.")]
    assert assistant.role == "assistant"
    assert [(p.type, p.text) for p in assistant.content] == [("output_text", "It is sunny in Paris.")]

    everything = items_asc(oai, conv.id)
    assert [item.id for item in everything] == [item.id for item in initial + data]

    # Default order is desc.
    newest_first = oai.conversations.items.list(conv.id)
    assert [item.id for item in newest_first.data] == [item.id for item in everything][::-1]
    assert newest_first.has_more is False

    # retrieve one of each kind
    for item in (user, call, output, reasoning, assistant):
        again = oai.conversations.items.retrieve(item.id, conversation_id=conv.id)
        assert (again.id, again.type) == (item.id, item.type)
    assert oai.conversations.items.retrieve(call.id, conversation_id=conv.id).arguments == call.arguments

    # Deleting an item returns the Conversation.
    after_delete = oai.conversations.items.delete(output.id, conversation_id=conv.id)
    assert (after_delete.id, after_delete.object) == (conv.id, "conversation")
    assert [item.id for item in items_asc(oai, conv.id)] == [i.id for i in everything if i.id != output.id]
    with pytest.raises(openai.NotFoundError):
        oai.conversations.items.retrieve(output.id, conversation_id=conv.id)

    deleted = oai.conversations.delete(conv.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (conv.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError) as caught:
        oai.conversations.retrieve(conv.id)
    assert_openai_error_body(caught.value)
    with pytest.raises(openai.NotFoundError):
        oai.conversations.items.list(conv.id)


def test_items_list_pagination(oai):
    conv = oai.conversations.create(
        items=[{"type": "message", "role": "user", "content": f"echo item {i}"} for i in range(7)]
    )
    everything = items_asc(oai, conv.id)
    assert [message_text(item) for item in everything] == [f"echo item {i}" for i in range(7)]
    ids = [item.id for item in everything]

    # Walk forward three at a time with `after`.
    first = oai.conversations.items.list(conv.id, order="asc", limit=3)
    assert [item.id for item in first.data] == ids[:3]
    assert (first.first_id, first.last_id, first.has_more) == (ids[0], ids[2], True)
    second = oai.conversations.items.list(conv.id, order="asc", limit=3, after=first.last_id)
    assert [item.id for item in second.data] == ids[3:6]
    assert (second.first_id, second.last_id, second.has_more) == (ids[3], ids[5], True)
    third = oai.conversations.items.list(conv.id, order="asc", limit=3, after=second.last_id)
    assert [item.id for item in third.data] == ids[6:]
    assert third.has_more is False

    # `after` follows the requested order: in desc it means "older than".
    newest = oai.conversations.items.list(conv.id, limit=2)
    assert [item.id for item in newest.data] == ids[::-1][:2]
    assert newest.has_more is True
    older = oai.conversations.items.list(conv.id, limit=2, after=newest.last_id)
    assert [item.id for item in older.data] == ids[::-1][2:4]

    # SDK auto-pagination terminates and sees each item once.
    assert [item.id for item in oai.conversations.items.list(conv.id, order="asc", limit=2)] == ids
    assert [item.id for item in oai.conversations.items.list(conv.id, limit=2)] == ids[::-1]


def test_empty_and_cleared_metadata_is_an_empty_object(oai):
    conv = oai.conversations.create()
    assert CONV_ID.fullmatch(conv.id)
    assert conv.metadata == {}
    assert oai.conversations.retrieve(conv.id).metadata == {}
    assert items_asc(oai, conv.id) == []
    assert oai.conversations.update(conv.id, metadata={"a": "b"}).metadata == {"a": "b"}
    assert oai.conversations.update(conv.id, metadata=None).metadata == {}
    assert oai.conversations.retrieve(conv.id).metadata == {}


BAD_METADATA: dict[str, Any] = {
    "17-pairs": {f"key{i}": "value" for i in range(17)},
    "65-char-key": {"k" * 65: "value"},
    "513-char-value": {"key": "v" * 513},
    "non-string-value": {"key": 1},
}


@pytest.mark.parametrize("how", ["create", "update"])
@pytest.mark.parametrize("metadata", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_metadata_limits_are_enforced(oai, how, metadata):
    conv = oai.conversations.create(metadata={"kept": "yes"})
    with pytest.raises(openai.BadRequestError) as caught:
        if how == "create":
            oai.conversations.create(metadata=metadata)
        else:
            oai.conversations.update(conv.id, metadata=metadata)
    assert caught.value.status_code == 400
    body = assert_openai_error_body(caught.value)
    assert body["type"] == "invalid_request_error"
    assert body["param"] and body["param"].startswith("metadata")
    assert oai.conversations.retrieve(conv.id).metadata == {"kept": "yes"}


def test_metadata_at_the_limits_is_accepted(oai):
    metadata = {f"{i:02d}".ljust(64, "k"): "v" * 512 for i in range(16)}
    conv = oai.conversations.create(metadata=metadata)
    assert conv.metadata == metadata
    assert oai.conversations.retrieve(conv.id).metadata == metadata
    assert oai.conversations.update(conv.id, metadata=metadata).metadata == metadata


# ---- responses inside a conversation ------------------------------------------------------------


@pytest.mark.parametrize("form", ["string", "object"])
def test_two_turn_memory_through_conversation(oai, form):
    conv = oai.conversations.create()
    ref: Any = conv.id if form == "string" else {"id": conv.id}
    word = unique_word()

    first = oai.responses.create(model=MODEL, conversation=ref, input=f"Remember the word: {word}")
    assert first.status == "completed"
    assert first.output_text == f"Okay, I will remember the word {word}."
    assert first.conversation is not None and first.conversation.id == conv.id

    second = oai.responses.create(
        model=MODEL, conversation=ref, input=RECALL, instructions="Answer in one short sentence."
    )
    assert second.status == "completed"
    assert second.output_text == f"The word is {word}."
    assert second.conversation.id == conv.id

    # Input and output items are appended in order; instructions are not.
    items = items_asc(oai, conv.id)
    assert summarize(items) == [
        ("message", "user", f"Remember the word: {word}"),
        ("message", "assistant", f"Okay, I will remember the word {word}."),
        ("message", "user", RECALL),
        ("message", "assistant", f"The word is {word}."),
    ]
    assert [[p.type for p in item.content] for item in items] == [["input_text"], ["output_text"]] * 2
    assert [items[1].id, items[3].id] == [first.output[0].id, second.output[0].id]
    assert all(item.status == "completed" for item in items)


def test_conversation_items_are_the_model_context(oai):
    old, new = unique_word(), unique_word()
    conv = oai.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": f"Remember the word: {old}"},
            {"type": "message", "role": "assistant", "content": f"Okay, I will remember the word {old}."},
        ]
    )
    assert oai.responses.create(model=MODEL, conversation=conv.id, input=RECALL).output_text == (
        f"The word is {old}."
    )

    # Items added by hand between turns are context for the next turn too.
    oai.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "user", "content": f"Remember the word: {new}"},
            {"type": "message", "role": "assistant", "content": f"Okay, I will remember the word {new}."},
        ],
    )
    assert oai.responses.create(model=MODEL, conversation=conv.id, input=RECALL).output_text == (
        f"The word is {new}."
    )
    assert [text for *_, text in summarize(items_asc(oai, conv.id))] == [
        f"Remember the word: {old}",
        f"Okay, I will remember the word {old}.",
        RECALL,
        f"The word is {old}.",
        f"Remember the word: {new}",
        f"Okay, I will remember the word {new}.",
        RECALL,
        f"The word is {new}.",
    ]


def test_previous_response_id_chains_memory(oai):
    word = unique_word()
    first = oai.responses.create(model=MODEL, input=f"Remember the word: {word}")
    assert first.output_text == f"Okay, I will remember the word {word}."
    assert first.conversation is None

    second = oai.responses.create(model=MODEL, previous_response_id=first.id, input=RECALL)
    assert second.status == "completed"
    assert second.output_text == f"The word is {word}."
    assert second.previous_response_id == first.id

    # The chain is followed further back than one response.
    third = oai.responses.create(model=MODEL, previous_response_id=second.id, input=RECALL)
    assert third.output_text == f"The word is {word}."

    # Without a chain there is no memory.
    assert oai.responses.create(model=MODEL, input=RECALL).output_text == "I don't know any word."


def test_conversation_and_previous_response_id_together_is_400(oai):
    conv = oai.conversations.create()
    earlier = oai.responses.create(model=MODEL, input="say earlier")
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(
            model=MODEL, conversation=conv.id, previous_response_id=earlier.id, input="say both"
        )
    body = assert_openai_error_body(caught.value)
    assert body["type"] == "invalid_request_error"
    assert body["param"]
    assert items_asc(oai, conv.id) == []


def test_unknown_conversation_is_404(oai):
    missing = missing_conversation_id()
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(model=MODEL, conversation=missing, input="say nothing")
    assert caught.value.status_code == 404
    assert_openai_error_body(caught.value)

    # The lookup happens before streaming starts: still a plain HTTP error.
    with pytest.raises(openai.NotFoundError) as caught:
        list(
            oai.responses.create(model=MODEL, conversation={"id": missing}, input="say nothing", stream=True)
        )
    assert_openai_error_body(caught.value)

    for call in (
        lambda: oai.conversations.retrieve(missing),
        lambda: oai.conversations.update(missing, metadata={"a": "b"}),
        lambda: oai.conversations.delete(missing),
        lambda: oai.conversations.items.list(missing),
        lambda: oai.conversations.items.create(missing, items=[{"role": "user", "content": "hi"}]),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert_openai_error_body(caught.value)


def test_unknown_previous_response_id_is_404(oai):
    missing = "resp_" + "0" * 48
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(model=MODEL, previous_response_id=missing, input="say nothing")
    assert_openai_error_body(caught.value)
    with pytest.raises(openai.NotFoundError):
        list(
            oai.responses.create(model=MODEL, previous_response_id=missing, input="say nothing", stream=True)
        )
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(missing)


def test_overlapping_response_gets_409_at_once(oai):
    conv = oai.conversations.create()
    first = BackgroundStream(oai, model=MODEL, conversation=conv.id, input="[[latency=3]] say slow reply")
    assert first.created.wait(20)
    assert first.error is None, first.error
    assert first.events[0].type == "response.created"

    began = time.monotonic()
    with pytest.raises(openai.ConflictError) as caught:
        oai.responses.create(model=MODEL, conversation=conv.id, input="say me too")
    assert time.monotonic() - began < 1.0, "the conflict must be answered at once, without SDK retries"
    assert caught.value.status_code == 409
    assert caught.value.response.headers.get("x-should-retry") == "false"
    assert_openai_error_body(caught.value)

    events = first.join()
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "slow reply"
    # The refused input was not appended; the conversation is free again afterwards.
    assert summarize(items_asc(oai, conv.id)) == [
        ("message", "user", "[[latency=3]] say slow reply"),
        ("message", "assistant", "slow reply"),
    ]
    assert oai.responses.create(model=MODEL, conversation=conv.id, input="say free").output_text == "free"


def test_exactly_one_of_two_racing_responses_succeeds(oai):
    conv = oai.conversations.create()

    def respond() -> None:
        oai.responses.create(model=MODEL, conversation=conv.id, input="[[latency=1]] say raced")

    assert race([respond, respond]) == ["409", "ok"]
    assert summarize(items_asc(oai, conv.id)) == [
        ("message", "user", "[[latency=1]] say raced"),
        ("message", "assistant", "raced"),
    ]


# ---- streaming -----------------------------------------------------------------------------------


def test_stream_event_order_and_output_text(oai):
    events = list(oai.responses.create(model=MODEL, input="count to 5", stream=True))
    types = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert deltas, types
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert_sequence_numbers(events)

    created, in_progress, added, part_added = events[:4]
    text_done, part_done, item_done, completed = events[-4:]
    assert created.response.status == "in_progress"
    assert created.response.output == []
    assert in_progress.response.status == "in_progress"
    assert created.response.id == in_progress.response.id == completed.response.id
    assert created.response.id.startswith("resp_")

    item_id = added.item.id
    assert (added.output_index, added.item.type, added.item.role) == (0, "message", "assistant")
    assert (added.item.status, added.item.content) == ("in_progress", [])
    assert (part_added.item_id, part_added.output_index, part_added.content_index) == (item_id, 0, 0)
    assert (part_added.part.type, part_added.part.text) == ("output_text", "")
    for delta in deltas:
        assert (delta.item_id, delta.output_index, delta.content_index) == (item_id, 0, 0)

    text = "".join(delta.delta for delta in deltas)
    assert text == "1 2 3 4 5"
    assert (text_done.item_id, text_done.text) == (item_id, text)
    assert (part_done.item_id, part_done.part.type, part_done.part.text) == (item_id, "output_text", text)
    assert (item_done.output_index, item_done.item.id, item_done.item.status) == (0, item_id, "completed")
    assert message_text(item_done.item) == text

    final = completed.response
    assert final.status == "completed"
    assert final.output_text == text
    assert [item.id for item in final.output] == [item_id]
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens

    stored = oai.responses.retrieve(final.id)
    assert (stored.status, stored.output_text) == ("completed", text)


def test_stream_helper_returns_the_final_response(oai):
    conv = oai.conversations.create()
    with oai.responses.stream(model=MODEL, input="say streamed hello", conversation=conv.id) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert deltas and deltas[-1].snapshot == "streamed hello"
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.id == events[0].response.id
    assert final.status == "completed"
    assert final.output_text == "streamed hello"
    assert summarize(items_asc(oai, conv.id)) == [
        ("message", "user", "say streamed hello"),
        ("message", "assistant", "streamed hello"),
    ]


def test_stream_helper_with_a_function_call(oai):
    with oai.responses.stream(model=MODEL, input=CALL_WEATHER, tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    n = types.count("response.function_call_arguments.delta")
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * n,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, args_done, item_done = events[2], events[-3], events[-2]
    assert (added.item.type, added.item.name, added.item.arguments) == ("function_call", "get_weather", "")
    assert added.item.call_id
    assert json.loads(args_done.arguments) == {"city": "Paris"}
    assert (item_done.item.id, item_done.item.call_id) == (added.item.id, added.item.call_id)

    assert final.status == "completed"
    assert final.output_text == ""
    assert [(o.type, o.id, o.call_id, o.name) for o in final.output] == [
        ("function_call", added.item.id, added.item.call_id, "get_weather")
    ]
    assert json.loads(final.output[0].arguments) == {"city": "Paris"}


# ---- client-side function calling ----------------------------------------------------------------


CLOCK_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "description": "The current time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize(
    ("model", "choice", "called"),
    [
        (MODEL, "required", "get_weather"),
        (MODEL, {"type": "function", "name": "get_time"}, "get_time"),
        ("anthropic/claude-sonnet-4-5", {"type": "function", "name": "get_time"}, "get_time"),
        ("openai/o4-mini", "required", "get_weather"),
    ],
    ids=["required", "named", "named-anthropic", "required-responses-api"],
)
def test_tool_choice_forces_a_call(oai, model, choice, called):
    # The prompt asks for no tool: only tool_choice makes the model call one.
    response = oai.responses.create(
        model=model, input="say nothing special", tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == [called]
    assert response.tool_choice == choice if isinstance(choice, str) else response.tool_choice.name == called


def test_tool_choice_naming_an_unknown_function_is_a_400(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(
            model=MODEL, input="hi", tools=[WEATHER_TOOL], tool_choice={"type": "function", "name": "nope"}
        )
    assert caught.value.body["param"] == "tool_choice"
    assert "nope" in caught.value.body["message"]


@pytest.mark.parametrize("carry", ["conversation", "previous_response_id", "resend"])
def test_function_call_round_trip(oai, carry):
    conv = oai.conversations.create() if carry == "conversation" else None
    where: dict[str, Any] = {"conversation": conv.id} if conv else {}
    first = oai.responses.create(
        model=MODEL, input=CALL_WEATHER, tools=[WEATHER_TOOL], tool_choice="auto", **where
    )
    assert first.status == "completed"
    assert first.output_text == ""
    assert [item.type for item in first.output] == ["function_call"]
    call = first.output[0]
    assert (call.name, call.status) == ("get_weather", "completed")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_")
    assert call.id.startswith("fc_")
    assert [tool.name for tool in first.tools] == ["get_weather"]

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    if carry == "conversation":
        where = {"conversation": conv.id, "input": [result]}
    elif carry == "previous_response_id":
        where = {"previous_response_id": first.id, "input": [result]}
    else:  # the client resends the whole history, echoing the output items as they came
        where = {"input": [{"role": "user", "content": CALL_WEATHER}, *first.output, result]}
    second = oai.responses.create(model=MODEL, tools=[WEATHER_TOOL], **where)
    assert second.status == "completed"
    assert second.output_text == "Tool get_weather returned: Sunny, 21 C"

    if conv is not None:
        assert summarize(items_asc(oai, conv.id)) == [
            ("message", "user", CALL_WEATHER),
            ("function_call", "get_weather", call.call_id),
            ("function_call_output", call.call_id, "Sunny, 21 C"),
            ("message", "assistant", "Tool get_weather returned: Sunny, 21 C"),
        ]


# ---- stored responses ----------------------------------------------------------------------------


def test_response_retrieve_input_items_and_delete(oai):
    word = unique_word()
    inputs = [
        {"role": "user", "content": f"Remember the word: {word}"},
        {"role": "assistant", "content": f"Okay, I will remember the word {word}."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": RECALL}]},
    ]
    resp = oai.responses.create(
        model=MODEL,
        input=inputs,
        instructions="Answer in one short sentence.",
        metadata={"case": "stored"},
        temperature=0.5,
    )
    assert resp.id.startswith("resp_")
    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.output_text == f"The word is {word}."
    assert resp.output[0].id.startswith("msg_")
    assert (resp.instructions, resp.metadata, resp.temperature) == (
        "Answer in one short sentence.",
        {"case": "stored"},
        0.5,
    )

    got = oai.responses.retrieve(resp.id)
    assert (got.id, got.status, got.output_text, got.metadata) == (
        resp.id,
        "completed",
        resp.output_text,
        {"case": "stored"},
    )
    assert [item.id for item in got.output] == [item.id for item in resp.output]

    # input items: the request input only (no instructions), default order desc
    newest_first = oai.responses.input_items.list(resp.id)
    assert [(item.type, item.role, message_text(item)) for item in newest_first.data] == [
        ("message", "user", RECALL),
        ("message", "assistant", f"Okay, I will remember the word {word}."),
        ("message", "user", f"Remember the word: {word}"),
    ]
    assert [[p.type for p in item.content] for item in newest_first.data] == [
        ["input_text"],
        ["output_text"],
        ["input_text"],
    ]
    assert newest_first.has_more is False
    ids = [item.id for item in newest_first.data]
    assert all(ids) and len(set(ids)) == 3
    assert (newest_first.first_id, newest_first.last_id) == (ids[0], ids[-1])
    oldest_first = oai.responses.input_items.list(resp.id, order="asc")
    assert [item.id for item in oldest_first.data] == ids[::-1]
    page = oai.responses.input_items.list(resp.id, order="asc", limit=2)
    assert ([item.id for item in page.data], page.has_more) == (ids[::-1][:2], True)
    rest = oai.responses.input_items.list(resp.id, order="asc", limit=2, after=page.data[-1].id)
    assert ([item.id for item in rest.data], rest.has_more) == (ids[:1], False)
    assert [item.id for item in oai.responses.input_items.list(resp.id, limit=1)] == ids

    assert oai.responses.delete(resp.id) is None
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.retrieve(resp.id)
    assert_openai_error_body(caught.value)
    with pytest.raises(openai.NotFoundError):
        oai.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.delete(resp.id)


def test_store_false_is_not_retrievable(oai):
    resp = oai.responses.create(model=MODEL, input="say ephemeral", store=False)
    assert (resp.status, resp.output_text) == ("completed", "ephemeral")
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(resp.id)


def test_bare_model_name(oai):
    resp = oai.responses.create(model="gpt-4o-mini", input="say bare model")
    assert (resp.status, resp.output_text) == ("completed", "bare model")
    assert "gpt-4o-mini" in resp.model


def test_max_output_tokens_cuts_the_reply(oai):
    resp = oai.responses.create(model=MODEL, input="count to 100", max_output_tokens=16)
    assert resp.max_output_tokens == 16
    assert resp.output_text.split() == [str(i) for i in range(1, 17)]
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"


def test_response_parameter_validation(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model=MODEL, input="say never", temperature=5)
    body = assert_openai_error_body(caught.value)
    assert (body["type"], body["param"]) == ("invalid_request_error", "temperature")

    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model=MODEL, input="say never", metadata=BAD_METADATA["17-pairs"])
    body = assert_openai_error_body(caught.value)
    assert body["type"] == "invalid_request_error"
    assert body["param"] and body["param"].startswith("metadata")


# ---- provider errors ---------------------------------------------------------------------------


def test_provider_error_fails_the_response(oai):
    conv = oai.conversations.create()
    failed = oai.responses.create(model=MODEL, conversation=conv.id, input="[[status=500]] say never")
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.message
    assert failed.output_text == ""
    assert not [item for item in items_asc(oai, conv.id) if getattr(item, "role", None) == "assistant"]

    # The conversation stays usable.
    ok = oai.responses.create(model=MODEL, conversation=conv.id, input="say recovered")
    assert (ok.status, ok.output_text) == ("completed", "recovered")
    assert summarize(items_asc(oai, conv.id))[-2:] == [
        ("message", "user", "say recovered"),
        ("message", "assistant", "recovered"),
    ]


def test_provider_error_ends_the_stream_with_response_failed(oai):
    events = list(oai.responses.create(model=MODEL, input="[[status=500]] say never", stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.failed"
    assert "response.completed" not in types
    assert_sequence_numbers(events)
    failed = events[-1].response
    assert failed.id == events[0].response.id
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.message


def test_store_false_reads_a_conversation_without_adding_to_it(oai):
    conversation = oai.conversations.create(items=[{"role": "user", "content": "Remember the word: KIWI"}])
    resp = oai.responses.create(
        model=MODEL, input="What word did I ask you to remember?", conversation=conversation.id, store=False
    )
    assert resp.output_text == "The word is KIWI."
    listed = oai.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in listed] == ["message"]  # only the item it was created with


def test_background_response_can_be_polled_and_cancelled(oai):
    done = oai.responses.create(model=MODEL, input="say in the background", background=True)
    assert done.status in ("in_progress", "completed") and done.background is True
    deadline = time.monotonic() + 20
    while done.status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
        done = oai.responses.retrieve(done.id)
    assert (done.status, done.output_text) == ("completed", "in the background")

    slow = oai.responses.create(model=MODEL, input="[[latency=30]] say too late", background=True)
    assert slow.status == "in_progress"
    cancelled = oai.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    assert oai.responses.cancel(slow.id).status == "cancelled"  # cancelling again is harmless
    with pytest.raises(openai.ConflictError):
        oai.responses.cancel(done.id)  # a finished response cannot be cancelled


def test_cancel_stops_a_streamed_background_response_mid_reply(oai):
    """A background response cancelled while its text deltas are flowing stops within a second:
    its stream ends with the cancelled snapshot (the SDK has no cancelled event, so it comes as
    ``response.failed``), long before the 10 s reply would have ended."""
    events: list = []
    cancelled_at: float | None = None
    for event in oai.responses.create(
        model=MODEL, input="[[token_delay=0.05]] count to 200", background=True, stream=True
    ):
        events.append(event)
        deltas = [e for e in events if e.type == "response.output_text.delta"]
        if cancelled_at is None and len(deltas) >= 5:
            cancelled_at = time.monotonic()
            assert oai.responses.cancel(events[0].response.id).status == "cancelled"
    assert cancelled_at is not None
    stopped_after = time.monotonic() - cancelled_at
    assert stopped_after < 1.0, f"the stream ended {stopped_after:.2f} s after the cancel was asked"
    assert (events[-1].type, events[-1].response.status) == ("response.failed", "cancelled")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert len(text.split()) < 100


def test_a_background_response_streams_again_from_any_point(oai):
    live = list(
        oai.responses.create(
            model=MODEL, input="[[token_delay=0.05]] count to 6", background=True, stream=True
        )
    )
    response_id = live[0].response.id
    numbers = [e.sequence_number for e in live]
    assert numbers == list(range(len(live)))
    assert live[-1].type == "response.completed"
    # Whole, then from the middle: the same events with the same numbers.
    again = list(oai.responses.retrieve(response_id, stream=True))
    assert [(e.type, e.sequence_number) for e in again] == [(e.type, e.sequence_number) for e in live]
    middle = numbers[len(numbers) // 2]
    rest = list(oai.responses.retrieve(response_id, stream=True, starting_after=middle))
    assert [e.sequence_number for e in rest] == numbers[middle + 1 :]
    text = "".join(e.delta for e in again if e.type == "response.output_text.delta")
    assert text == "1 2 3 4 5 6"


def test_a_background_response_in_progress_is_followed_to_its_end(oai):
    started = oai.responses.create(model=MODEL, input="[[latency=1]] say later", background=True)
    events = list(oai.responses.retrieve(started.id, stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "later"


def test_streaming_a_foreground_response_again_is_a_400(oai):
    done = oai.responses.create(model=MODEL, input="say once")
    with pytest.raises(openai.BadRequestError) as caught:
        list(oai.responses.retrieve(done.id, stream=True))
    assert caught.value.body["param"] == "stream"


def test_seed_conversation_responses_flow(oai):
    """Seed 002's manual script, its responses part: a response in a new conversation, the
    conversation retrieved, two follow-ups listed as items, then a made-up conversation id."""
    conversation = oai.conversations.create()
    response = oai.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "What are the 5 Ds of dodgeball?"}],
        conversation=conversation.id,
    )
    assert response.status == "completed" and response.output_text
    assert oai.conversations.retrieve(conversation.id).id == conversation.id
    for content in (
        "Repeat what you just said but add 'this is my second time saying this'",
        "Repeat what you just said but add 'this is my third time saying this'",
    ):
        followup = oai.responses.create(
            model=MODEL, input=[{"role": "user", "content": content}], conversation=conversation.id
        )
        assert followup.status == "completed"
    conv_items = oai.conversations.items.list(conversation.id)
    roles = [item.role for item in reversed(conv_items.data) if item.type == "message"]
    assert roles == ["user", "assistant"] * 3
    # The seed's made-up id is not `conv_` + 48 hex digits: malformed, so 400 (a well-formed unknown
    # id is 404, test_unknown_conversation_is_404).
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": "say hello"}],
            conversation="conv_zzzzzzzzz5dc81908289d62779d2ac510a2b0b602ef00a44",
        )
