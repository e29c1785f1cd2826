"""One place that says what "now" is, in UTC, so stored times compare and render the same everywhere."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
