"""Helpers for end-to-end tests: send a message and read what came back."""

from __future__ import annotations

from typing import Any


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
