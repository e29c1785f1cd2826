"""Persistent state behind one interface: ``Store``. SQLite is the embedded default."""

from .base import Page, Store, open_store

__all__ = ["Page", "Store", "open_store"]
