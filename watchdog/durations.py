"""Durations as users write them: ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_FULL = re.compile(DURATION_PATTERN)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# Longer than any sensible window, age or interval (a yearly job plus slack), far from
# where date arithmetic overflows; the JSON Schemas say the same (x-max-duration).
MAX_DURATION_TEXT = "400d"
MAX_DURATION = timedelta(days=400)
_MAX_TEXT = 40


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` such as ``1h30m`` into a timedelta.

    Raises ValueError naming the text when it is not a duration or is longer
    than MAX_DURATION.
    """
    text = text.strip()
    if len(text) > _MAX_TEXT or not _FULL.match(text):
        raise ValueError(f"{text[:_MAX_TEXT]!r} is not a duration (use e.g. 30s, 5m, 2h, 1d or 1h30m)")
    milliseconds = sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text))
    if milliseconds > MAX_DURATION // timedelta(milliseconds=1):
        raise ValueError(f"{text!r} is too long: at most {MAX_DURATION_TEXT}")
    return timedelta(milliseconds=milliseconds)


def bounds_problem(text: str, minimum: str | None = None, maximum: str | None = None) -> str | None:
    """What is wrong with duration ``text`` given the bounds (duration texts), or None when it is fine.

    Texts that are not durations give None: their form is checked elsewhere
    (the schema's pattern).
    """
    text = text.strip()
    if not _FULL.match(text):
        return None
    if len(text) > _MAX_TEXT:
        return f"{text[:20]!r}... is too long: at most {maximum or MAX_DURATION_TEXT}"
    milliseconds = sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text))
    if maximum is not None and milliseconds > parse_duration(maximum) // timedelta(milliseconds=1):
        return f"{text!r} is too long: at most {maximum}"
    if minimum is not None and milliseconds < parse_duration(minimum) // timedelta(milliseconds=1):
        return f"{text!r} is too short: at least {minimum}"
    return None


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
