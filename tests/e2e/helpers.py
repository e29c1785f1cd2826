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
    return race(send_once, 2)


def race(send_once: Callable[[], object], count: int) -> list[str]:
    """Start ``count`` identical sends at the same instant, each on its own thread; "ok", "409" or
    the name of any other error for each, sorted."""
    results: list[str] = []
    barrier = threading.Barrier(count)

    def racer() -> None:
        barrier.wait()
        try:
            send_once()
            results.append("ok")
        except ConflictError:
            results.append("409")
        except Exception as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=racer) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(results)


def live_conversations(base_url: str, api_key: str | None = None) -> dict[str, str]:
    """Conversation id -> node id of every live activation (the server's diagnostic route)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    answer = httpx.get(f"{base_url}/v1/_parley/activations", headers=headers, timeout=30)
    answer.raise_for_status()
    listed = [(a["conversation_id"], a["node_id"]) for a in answer.json()["activations"]]
    assert len({c for c, _ in listed}) == len(listed), f"a conversation is live twice: {listed}"
    return dict(listed)
