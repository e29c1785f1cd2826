"""Helpers for end-to-end tests: send a message and read what came back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from letta_client import ConflictError


def send(client, conversation_id: str, text: str, **kwargs: Any) -> list[Any]:
    """Send one user message to a conversation; return every streamed chunk."""
    return list(
        client.conversations.messages.create(
            conversation_id, messages=[{"role": "user", "content": text}], **kwargs
        )
    )


def of_type(chunks: list[Any], message_type: str) -> list[Any]:
    return [c for c in chunks if c.message_type == message_type]


def assistant_text(chunks: list[Any]) -> str:
    return "".join(c.content for c in of_type(chunks, "assistant_message"))


def race_two(send_once: Callable[[], object]) -> list[str]:
    """Start two identical sends at the same instant; "ok" or "409" for each, sorted."""
    results: list[str] = []
    barrier = threading.Barrier(2)

    def racer() -> None:
        barrier.wait()
        try:
            send_once()
            results.append("ok")
        except ConflictError:
            results.append("409")

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(results)
