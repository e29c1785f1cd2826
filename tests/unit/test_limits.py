"""``runtime.limits``: the input limits both surfaces share, and the checks of tool schemas."""

from __future__ import annotations

import json

import pytest

from runtime.errors import InvalidArgument, LimitExceeded, ValidationFailed
from runtime.limits import MAX_JSON_DEPTH, InputLimits, check_json, check_metadata, message_size
from runtime.message import TextPart, ToolCallPart, ToolReturnPart
from runtime.settings import Settings
from runtime.tools.schema import given_function
from runtime.turn import InputMessage

LIMITS = InputLimits(max_message_bytes=10, max_messages=2, max_tool_source_bytes=20)


def test_limits_come_from_the_settings() -> None:
    settings = Settings(max_message_bytes=5, max_messages_per_request=7, max_tool_source_bytes=9)
    assert InputLimits.of(settings) == InputLimits(5, 7, 9)


def test_message_size_counts_utf8_bytes_of_every_part() -> None:
    assert message_size(InputMessage(text="héllo")) == 6
    parts = [
        TextPart(text="ab"),
        ToolCallPart(id="c1", name="fn", arguments="{}"),
        ToolReturnPart(tool_call_id="c1", name="fn", content="xyz"),
    ]
    assert message_size(InputMessage(role="assistant", parts=parts)) == 2 + 4 + 3
    assert message_size(InputMessage(text="\ud800")) == 3  # counted, not a crash


def test_message_limits_name_the_field() -> None:
    LIMITS.check_message(InputMessage(text="x" * 10), "input[0]")
    with pytest.raises(LimitExceeded, match=r"input\[3\]: 11 bytes") as caught:
        LIMITS.check_message(InputMessage(text="x" * 11), "input[3]")
    assert caught.value.param == "input[3]"
    with pytest.raises(LimitExceeded, match="messages: at most 2 messages per request, got 3"):
        LIMITS.check_count(3, "messages")
    LIMITS.check_text(None, "instructions")
    with pytest.raises(LimitExceeded, match="instructions"):
        LIMITS.check_text("é" * 6, "instructions")


def test_tool_source_limit() -> None:
    LIMITS.check_tool_source(None)
    LIMITS.check_tool_source("x" * 20)
    with pytest.raises(LimitExceeded, match="source_code: 21 bytes of source code exceed the limit of 20"):
        LIMITS.check_tool_source("x" * 21)


def test_metadata_limits() -> None:
    assert check_metadata(None) == {}
    exact = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert check_metadata(exact) == exact
    with pytest.raises(LimitExceeded, match="at most 16"):
        check_metadata({str(i): "v" for i in range(17)})
    with pytest.raises(LimitExceeded, match="longer than 64"):
        check_metadata({"k" * 65: "v"})
    with pytest.raises(LimitExceeded) as caught:
        check_metadata({"k": "v" * 513})
    assert caught.value.param == "metadata.k"
    with pytest.raises(InvalidArgument, match="values must be strings"):
        check_metadata({"k": 1})
    with pytest.raises(InvalidArgument, match="expected an object"):
        check_metadata(["k"])


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_check_json_bounds_nesting_under_the_field_it_is_in() -> None:
    check_json({"metadata": _nested(MAX_JSON_DEPTH - 1)})
    with pytest.raises(LimitExceeded, match="metadata: nested more than") as caught:
        check_json({"metadata": _nested(MAX_JSON_DEPTH)})
    assert caught.value.param == "metadata"


def test_check_json_refuses_half_a_surrogate_pair_in_keys_and_values() -> None:
    check_json(json.loads('{"text": "\\ud83d\\ude00 fine", "list": ["é"]}'))
    for raw, field in (
        ('{"input": [{"content": "a\\ud800"}]}', "input"),
        ('{"meta": {"\\udc00": "v"}}', "meta"),
        ('{"\\udc00": 1}', "body"),
    ):
        with pytest.raises(ValidationFailed, match="lone UTF-16 surrogate") as caught:
            check_json(json.loads(raw))
        assert caught.value.param == field


def test_given_function_checks_what_a_provider_needs() -> None:
    schema = given_function("f", None, None, "tools[0]")
    assert schema.parameters == {"type": "object", "properties": {}}
    assert given_function("f", "Does f.", {"type": "object"}, "tools[0]").description == "Does f."
    for args, param in (
        (("", None, None), "tools[0].name"),
        (("f", 5, None), "tools[0].description"),
        (("f", None, "text"), "tools[0].parameters"),
        (("f", None, {"type": "array"}), "tools[0].parameters"),
        (("f", None, {"type": "object", "properties": []}), "tools[0].parameters.properties"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            given_function(*args, "tools[0]")
        assert caught.value.param == param
