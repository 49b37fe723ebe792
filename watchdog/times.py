"""Moments as text: ISO 8601 in UTC with a Z, as in every JSON output and the state store."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_text(moment: datetime | None) -> str | None:
    """``2026-11-28T02:15:00Z`` (milliseconds only when present); None stays None."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))
