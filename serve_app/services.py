"""What route handlers share inside one Serve replica: settings, the store, the conversation client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends

from actors.conversation_client import ConversationClient
from actors.lifecycle import LifecycleWatch, ServerState
from runtime.limits import InputLimits
from runtime.settings import Settings
from runtime.store import Store, open_store


@dataclass
class Services:
    settings: Settings
    store: Store
    conversations: ConversationClient
    lifecycle: LifecycleWatch
    built_in_tools_ready: bool = False  # the built-in tools are in the store (checked once)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        return cls(
            settings,
            open_store(settings.resolved_store_url),
            ConversationClient(settings),
            LifecycleWatch(settings),
        )

    @cached_property
    def limits(self) -> InputLimits:
        return InputLimits.of(self.settings)


_current: Services | None = None


def install(services: Services) -> None:
    global _current
    _current = services


async def get_services() -> Services:
    """FastAPI dependency; the replica installs its services when it starts.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread
    hop on every request."""
    if _current is None:
        raise RuntimeError("Parley services are not started in this process")
    return _current


def api_key() -> str | None:
    """The key every request must present, or None when auth is off (or not started yet)."""
    if _current is None or _current.settings.api_key is None:
        return None
    return _current.settings.api_key.get_secret_value()


def server_state() -> ServerState:
    """The server's state as this replica last heard it; ``starting`` before its services are."""
    if _current is None:
        return ServerState.starting
    _current.lifecycle.start()  # idempotent; here for a replica whose constructor had no loop
    return _current.lifecycle.state


def max_request_bytes() -> int | None:
    """The largest request body accepted, or None before the replica's services are started."""
    return None if _current is None else _current.settings.max_request_bytes


ServicesDep = Annotated[Services, Depends(get_services)]
