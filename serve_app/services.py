"""What route handlers share inside one Serve replica: settings, the store, the directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from actors.directory import Directory
from runtime.settings import Settings
from runtime.store import Store, open_store


@dataclass
class Services:
    settings: Settings
    store: Store
    directory: Directory

    @classmethod
    def start(cls, settings: Settings) -> Services:
        return cls(settings, open_store(settings.resolved_store_url), Directory(settings))


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


ServicesDep = Annotated[Services, Depends(get_services)]
