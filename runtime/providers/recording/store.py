"""Recordings on disk: an SQLite index and one readable JSON file per response.

Layout of a recordings directory::

    index.sqlite            one row per recording: hash, endpoint, model, streamed, status, ...
    responses/<hash>.json   the request (as sent, credentials never included) and its response

A JSON file is written whole to a temporary name and renamed into place before its index row is
written, so a reader that finds a row always finds a complete file. Several processes (provider
actors) may write to one directory: SQLite serialises their index writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

FORMAT = 1
REDACTED = "***"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    hash TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    streamed INTEGER NOT NULL,
    status INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    duration REAL NOT NULL,
    recorded_at TEXT NOT NULL,
    file TEXT NOT NULL
)
"""


class Chunk(BaseModel):
    """A piece of a streamed body as it arrived: ``t`` seconds after the request was sent. Text when
    it is UTF-8 (SSE always is), else ``base64``."""

    t: float
    text: str | None = None
    base64: str | None = None


class Recording(BaseModel):
    """One request and the response it got. ``body`` is the whole body of an answer that was not
    streamed (parsed JSON, or text); ``chunks`` that of a stream (an SSE response)."""

    format: int = FORMAT
    hash: str
    method: str
    endpoint: str
    model: str | None = None
    recorded_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    request: Any = None  # the request body as sent
    status: int
    content_type: str | None = None
    headers_after: float = 0.0  # seconds from sending the request to the response's headers
    body: Any = None
    chunks: list[Chunk] | None = None

    @property
    def streamed(self) -> bool:
        return self.chunks is not None

    @property
    def duration(self) -> float:
        return self.chunks[-1].t if self.chunks else self.headers_after


class IndexRow(BaseModel):
    hash: str
    method: str
    endpoint: str
    model: str | None
    streamed: bool
    status: int
    chunks: int
    duration: float
    recorded_at: str


class RecordingStore:
    """The recordings under ``directory`` (created on first write)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self._index = self.directory / "index.sqlite"
        self._responses = self.directory / "responses"

    def file_of(self, request_hash: str) -> Path:
        return self._responses / f"{request_hash}.json"

    def get(self, request_hash: str) -> Recording | None:
        """The recording of ``request_hash``, or None when the index has no complete one."""
        if not self._index.exists():
            return None
        with self._connect() as db:
            row = db.execute("SELECT file FROM recordings WHERE hash = ?", (request_hash,)).fetchone()
        if row is None:
            return None
        path = self.directory / row[0]
        try:
            return Recording.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def put(self, recording: Recording, secrets: Iterable[str] = ()) -> Path:
        """Write ``recording`` (replacing one of the same hash), with every one of ``secrets``
        replaced by ``***`` wherever it appears."""
        text = _redacted(recording.model_dump_json(indent=2), secrets)
        path = self.file_of(recording.hash)
        self._responses.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self._responses, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text + "\n")
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    recording.hash,
                    recording.method,
                    recording.endpoint,
                    recording.model,
                    int(recording.streamed),
                    recording.status,
                    len(recording.chunks or ()),
                    recording.duration,
                    recording.recorded_at,
                    str(path.relative_to(self.directory)),
                ),
            )
        return path

    def rows(self) -> list[IndexRow]:
        """Every indexed recording, oldest first."""
        if not self._index.exists():
            return []
        with self._connect() as db:
            found = db.execute(
                "SELECT hash, method, endpoint, model, streamed, status, chunks, duration, recorded_at"
                " FROM recordings ORDER BY recorded_at, hash"
            ).fetchall()
        names = IndexRow.model_fields.keys()
        return [IndexRow.model_validate(dict(zip(names, row, strict=True))) for row in found]

    def find(self, prefix: str) -> list[str]:
        """The hashes that start with ``prefix``."""
        return [row.hash for row in self.rows() if row.hash.startswith(prefix)]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self._index, timeout=30)) as db:
            db.execute(_SCHEMA)
            with db:  # one transaction, committed on leaving
                yield db


def _redacted(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so that a key containing another is replaced whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, REDACTED)
    return text
