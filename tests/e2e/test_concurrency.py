"""One run at a time per conversation: 409 for an overlapping send, and the flag always released."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from letta_client import APIStatusError, BadRequestError, ConflictError

from .helpers import assistant_text, of_type, race_two, send

SLOW = "[[latency=2]] say slow reply"


class Background:
    """Run a send on a thread; ``started`` is set once its first chunk (the ping) has arrived."""

    def __init__(self, client, conversation_id: str, text: str) -> None:
        self.started = threading.Event()
        self.chunks: list = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(client, conversation_id, text), daemon=True)
        self.thread.start()

    def _run(self, client, conversation_id: str, text: str) -> None:
        try:
            for chunk in client.conversations.messages.create(conversation_id, input=text):
                self.chunks.append(chunk)
                self.started.set()
        except BaseException as exc:
            self.error = exc
            self.started.set()

    def join(self) -> list:
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.chunks


def test_overlapping_send_gets_409_at_once(client, conversation, server):
    first = Background(client, conversation.id, SLOW)
    assert first.started.wait(20)
    began = time.monotonic()
    with pytest.raises(ConflictError) as caught:
        send(client, conversation.id, "me too")
    assert time.monotonic() - began < 1.0, "the conflict must not wait for the running send"
    error = caught.value
    assert error.response.headers["x-should-retry"] == "false"
    assert "CONVERSATION_BUSY" in str(error)
    assert error.body["run_id"] == first.chunks[0].run_id
    assert assistant_text(first.join()) == "slow reply"


def test_exactly_one_of_two_racing_sends_succeeds(client, conversation):
    assert race_two(lambda: send(client, conversation.id, "[[latency=0.5]] say raced")) == ["409", "ok"]


def test_flag_is_released_before_done(client, conversation):
    # Back-to-back sends with no pause: each finds the conversation free (no retry hides a 409,
    # because the server says x-should-retry: false).
    for i in range(5):
        assert assistant_text(send(client, conversation.id, f"echo {i}")) == str(i)


def test_stream_follows_active_run_and_400_when_idle(client, conversation):
    with pytest.raises(BadRequestError, match="No active runs found"):
        list(client.conversations.messages.stream(conversation.id))
    first = Background(client, conversation.id, SLOW)
    assert first.started.wait(20)
    followed = list(client.conversations.messages.stream(conversation.id))
    assert [c.message_type for c in followed][-3:] == ["assistant_message", "stop_reason", "usage_statistics"]
    assert assistant_text(followed) == "slow reply"
    assert assistant_text(first.join()) == "slow reply"
    with pytest.raises(BadRequestError, match="No active runs found"):
        list(client.conversations.messages.stream(conversation.id))


def test_provider_error_ends_run_and_frees_conversation(client, conversation):
    chunks: list = []
    with pytest.raises(APIStatusError) as caught:
        for chunk in client.conversations.messages.create(conversation.id, input="x" * 200_000):
            chunks.append(chunk)
    assert [c.message_type for c in chunks][-2:] == ["stop_reason", "usage_statistics"]
    assert chunks[-2].stop_reason == "error"
    error = caught.value.body
    assert error["message_type"] == "error_message"
    assert "maximum context length" in error["message"]
    assert error["error_type"] == "llm_context_length"
    # The refused turn kept its input; the conversation is free for the next send.
    assert assistant_text(send(client, conversation.id, "say recovered")) == "recovered"
    listed = client.conversations.messages.list(conversation.id, order="asc").items
    assert [m.message_type for m in listed] == [
        "system_message",
        "user_message",
        "user_message",
        "assistant_message",
    ]


def test_provider_5xx_ends_run_cleanly(client, conversation):
    with pytest.raises(APIStatusError) as caught:
        send(client, conversation.id, "[[status=500]] fail please")
    assert "500" in caught.value.body["message"]
    assert assistant_text(send(client, conversation.id, "say fine again")) == "fine again"


def test_client_disconnect_releases_the_conversation(client, conversation):
    stream = client.conversations.messages.create(conversation.id, input="[[latency=30]] say too slow")
    first = next(iter(stream))
    assert first.message_type == "ping"
    stream.close()  # the client goes away mid-run
    deadline = time.monotonic() + 10
    while True:
        try:
            chunks = send(client, conversation.id, "say after disconnect")
            break
        except ConflictError:
            assert time.monotonic() < deadline, "the conversation stayed busy after the client left"
            time.sleep(0.1)
    assert assistant_text(chunks) == "after disconnect"


def test_cancel_stops_a_token_stream_mid_reply(client, conversation):
    """Cancelled while its tokens are flowing (past the first batch, so over the stream channel),
    a streamed reply stops within a second, with stop reason cancelled, and the conversation is
    free at once. The reply would take 10 s."""
    stream = client.conversations.messages.create(
        conversation.id, input="[[token_delay=0.05]] count to 200", stream_tokens=True
    )
    chunks: list = []
    cancelled_at: float | None = None
    for chunk in stream:
        chunks.append(chunk)
        if cancelled_at is None and len(of_type(chunks, "assistant_message")) >= 5:
            cancelled_at = time.monotonic()
            assert dict(client.conversations.cancel(conversation.id)) == {chunk.run_id: "cancelled"}
    assert cancelled_at is not None
    stopped_after = time.monotonic() - cancelled_at
    assert stopped_after < 1.0, f"the stream ended {stopped_after:.2f} s after the cancel was asked"
    assert of_type(chunks, "stop_reason")[0].stop_reason == "cancelled"
    assert len(assistant_text(chunks).split()) < 100
    assert assistant_text(send(client, conversation.id, "say free")) == "free"


def test_cancel_active_run(client, conversation, server):
    first = Background(client, conversation.id, "[[latency=30]] say never")
    assert first.started.wait(20)
    cancelled = client.conversations.cancel(conversation.id)
    run_id = first.chunks[0].run_id
    assert cancelled == {run_id: "cancelled"} or dict(cancelled) == {run_id: "cancelled"}
    chunks = first.join()
    assert of_type(chunks, "stop_reason")[0].stop_reason == "cancelled"
    assert assistant_text(send(client, conversation.id, "say free")) == "free"
    response = httpx.post(f"{server.url}/v1/conversations/{conversation.id}/cancel", json={}, timeout=10)
    assert response.status_code == 409
