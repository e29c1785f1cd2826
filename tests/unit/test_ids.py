"""``runtime.ids``: id formats and the otids derived from a message id."""

from __future__ import annotations

import uuid

import pytest

from runtime import ids

pytestmark = pytest.mark.timeout(5)

MESSAGE_ID = "message-0b3c5d7e-9f12-4a34-b567-89abcdef12fa"


@pytest.mark.parametrize("prefix", [ids.AGENT, ids.BLOCK, ids.CONVERSATION, ids.MESSAGE, ids.RUN, ids.STEP])
def test_new_id_is_valid_for_its_prefix(prefix: str) -> None:
    value = ids.new_id(prefix)
    assert value.startswith(f"{prefix}-")
    assert ids.is_valid(prefix, value)


def test_new_otid_is_a_bare_uuid4() -> None:
    otid = ids.new_otid()
    assert uuid.UUID(otid).version == 4
    assert str(uuid.UUID(otid)) == otid


@pytest.mark.parametrize(
    "value",
    [
        "agent-0b3c5d7e-9f12-4a34-b567-89abcdef1234",  # another prefix
        "message-0b3c5d7e9f124a34b56789abcdef1234",  # no dashes
        "message-0B3C5D7E-9F12-4A34-B567-89ABCDEF1234",  # upper case
        "message-0b3c5d7e-9f12-1a34-b567-89abcdef1234",  # uuid version 1
        "message-0b3c5d7e-9f12-4a34-c567-89abcdef1234",  # wrong variant
        "message-0b3c5d7e-9f12-4a34-b567-89abcdef1234x",  # trailing garbage
        " message-0b3c5d7e-9f12-4a34-b567-89abcdef1234",  # leading space
        "0b3c5d7e-9f12-4a34-b567-89abcdef1234",  # bare uuid
        "message-",
        "",
    ],
)
def test_is_valid_rejects(value: str) -> None:
    assert not ids.is_valid(ids.MESSAGE, value)


def test_is_valid_accepts_canonical_lowercase() -> None:
    assert ids.is_valid(ids.MESSAGE, "message-0b3c5d7e-9f12-4a34-b567-89abcdef1234")
    assert ids.is_valid(ids.CONVERSATION, "conv-0b3c5d7e-9f12-4a34-8567-89abcdef1234")
    assert not ids.is_valid(ids.CONVERSATION, "conversation-0b3c5d7e-9f12-4a34-8567-89abcdef1234")


@pytest.mark.parametrize("index", range(16))
def test_otid_last_hex_digit_is_the_index(index: int) -> None:
    otid = ids.otid_for(MESSAGE_ID, index)
    assert otid[-1] == f"{index:x}"


@pytest.mark.parametrize("index", [0, 1, 2, 7, 15, 16, 100, 127])
def test_otid_keeps_the_rest_of_the_message_uuid(index: int) -> None:
    raw = MESSAGE_ID.removeprefix("message-")
    otid = ids.otid_for(MESSAGE_ID, index)
    # Only the low 7 bits (the last two hex digits at most) carry the index.
    assert otid[:-2] == raw[:-2]
    assert uuid.UUID(otid).int >> 7 == uuid.UUID(raw).int >> 7
    # Version and variant bits are untouched: still a canonical uuid4.
    assert ids.is_valid(ids.MESSAGE, f"message-{otid}")


def test_otids_are_deterministic_and_distinct_per_index() -> None:
    otids = [ids.otid_for(MESSAGE_ID, i) for i in range(128)]
    assert otids == [ids.otid_for(MESSAGE_ID, i) for i in range(128)]
    assert len(set(otids)) == 128


def test_otids_of_different_messages_differ() -> None:
    a, b = ids.new_id(ids.MESSAGE), ids.new_id(ids.MESSAGE)
    assert ids.otid_for(a, 0) != ids.otid_for(b, 0)
