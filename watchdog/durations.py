"""Durations as users write them: ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_FULL = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` such as ``1h30m`` into a timedelta.

    Raises ValueError naming the text when it is not a duration.
    """
    text = text.strip()
    if not _FULL.match(text):
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 5m, 2h, 1d or 1h30m)")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_age(delta: timedelta) -> str:
    """A human age: ``9h5m`` (no seconds past an hour), ``25m``, ``40s``."""
    seconds = int(delta.total_seconds())
    if seconds >= 3600 or seconds >= 60:
        seconds -= seconds % 60
    return format_duration(timedelta(seconds=seconds))


def format_duration(delta: timedelta) -> str:
    """The shortest duration text for ``delta``: ``timedelta(minutes=90)`` gives ``1h30m``."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts)
