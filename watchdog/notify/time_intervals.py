"""Time intervals: when a route is active or muted (``time_intervals:`` in the config).

Alertmanager's model: a named interval is one or more specs, and a moment is
inside it when it is inside any spec; a spec matches when every field it
gives matches (``weekdays``, ``times``, ``days_of_month``, ``months``), read
in the spec's ``location`` (an IANA zone, default UTC). Pure: a moment in,
a boolean out; parsing raises ValueError naming the bad value (the schema has
already checked the shapes, so this is for values a pattern cannot judge).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_TIMES = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

Span = tuple[int, int]  # inclusive bounds


@dataclass(frozen=True)
class IntervalSpec:
    """One spec: empty tuples match everything. Minutes of the day are half-open ``[start, end)``."""

    weekdays: tuple[Span, ...] = ()  # 0 = Monday
    times: tuple[Span, ...] = ()  # minutes since midnight, end exclusive
    days_of_month: tuple[Span, ...] = ()  # 1..31, or -31..-1 counted from the month's end
    months: tuple[Span, ...] = ()  # 1..12
    location: str = "UTC"

    def contains(self, moment: datetime) -> bool:
        """Whether the aware ``moment`` falls inside this spec, read in its location."""
        local = moment.astimezone(ZoneInfo(self.location))
        if self.weekdays and not any(a <= local.weekday() <= b for a, b in self.weekdays):
            return False
        if self.months and not any(a <= local.month <= b for a, b in self.months):
            return False
        if self.days_of_month:
            length = calendar.monthrange(local.year, local.month)[1]
            if not any(_day(a, length) <= local.day <= _day(b, length) for a, b in self.days_of_month):
                return False
        minute = local.hour * 60 + local.minute
        return not self.times or any(a <= minute < b for a, b in self.times)


def _day(day: int, length: int) -> int:
    """A day of the month, negative ones counted from its end (-1 is the last day)."""
    return day if day > 0 else max(length + day + 1, 1)


@dataclass(frozen=True)
class TimeInterval:
    """A named interval: inside when inside any of its specs."""

    name: str
    specs: tuple[IntervalSpec, ...]

    def contains(self, moment: datetime) -> bool:
        return any(spec.contains(moment) for spec in self.specs)


def _named(text: str, names: Sequence[str], what: str) -> int:
    word = text.strip().lower()
    if word in names:
        return names.index(word)
    if word.isdigit() and what == "month" and 1 <= int(word) <= 12:
        return int(word) - 1
    raise ValueError(f"{text!r} is not a {what} (use {names[0]}, ..., {names[-1]}, or a range like {names[0]}:{names[2]})")


def _range(text: str, parse: Any) -> Span:
    first, _, last = str(text).partition(":")
    a = parse(first)
    b = parse(last) if last else a
    return a, b


def parse_weekdays(values: Sequence[str]) -> tuple[Span, ...]:
    """``["monday:friday", "sunday"]`` as weekday spans (0 = Monday); ValueError for an unknown day or a backward range."""
    spans = tuple(_range(v, lambda t: _named(t, WEEKDAYS, "weekday")) for v in values)
    for (a, b), text in zip(spans, values, strict=True):
        if a > b:
            raise ValueError(f"{text!r} runs backwards: write it as two ranges (e.g. saturday:sunday)")
    return spans


def parse_months(values: Sequence[str | int]) -> tuple[Span, ...]:
    """``["january:march", "12"]`` as month spans (1..12)."""
    spans = tuple((a + 1, b + 1) for a, b in (_range(str(v), lambda t: _named(t, MONTHS, "month")) for v in values))
    for (a, b), text in zip(spans, values, strict=True):
        if a > b:
            raise ValueError(f"{text!r} runs backwards: write it as two ranges (e.g. november:december and january:february)")
    return spans


def _day_number(text: str) -> int:
    try:
        day = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the month (1..31, or -1 for the last day)") from None
    if day == 0 or not -31 <= day <= 31:
        raise ValueError(f"{text!r} is not a day of the month (1..31, or -1 for the last day)")
    return day


def parse_days_of_month(values: Sequence[str | int]) -> tuple[Span, ...]:
    """``["1:7", "-1"]`` as day spans; negative days count from the month's end."""
    spans = tuple(_range(str(v).replace(" ", ""), _day_number) for v in values)
    for (a, b), text in zip(spans, values, strict=True):
        if (a > 0) == (b > 0) and a > b:
            raise ValueError(f"{text!r} runs backwards")
    return spans


def parse_times(values: Sequence[str]) -> tuple[Span, ...]:
    """``["09:00-18:00"]`` as minute spans, end exclusive; ``24:00`` ends at midnight."""
    spans: list[Span] = []
    for text in values:
        found = _TIMES.match(str(text))
        if not found:
            raise ValueError(f"{text!r} is not a time range (use HH:MM-HH:MM, e.g. 09:00-18:00)")
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
            raise ValueError(f"{text!r} is not a time range: hours 00..23 (24:00 only as an end), minutes 00..59")
        if start >= end:
            raise ValueError(f"{text!r} ends before it starts: a range across midnight is two ranges "
                             "(22:00-24:00 and 00:00-06:00)")
        spans.append((start, end))
    return tuple(spans)


def parse_location(name: str) -> str:
    """``name`` when it is an IANA time zone, else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (an IANA name such as Europe/Berlin or UTC)") from None
    return name


def parse_spec(raw: Mapping[str, Any]) -> IntervalSpec:
    """One spec from validated YAML; ValueError (prefixed with the key) for a value the schema cannot judge."""
    def field(key: str, parse: Any) -> Any:
        try:
            return parse(raw[key]) if key in raw else ()
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None

    location = raw.get("location", "UTC")
    try:
        location = parse_location(location)
    except ValueError as exc:
        raise ValueError(f"location: {exc}") from None
    return IntervalSpec(weekdays=field("weekdays", parse_weekdays), times=field("times", parse_times),
                        days_of_month=field("days_of_month", parse_days_of_month), months=field("months", parse_months),
                        location=location)


def parse_interval(name: str, raw: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> TimeInterval:
    """A named interval from a spec or a list of specs; ValueError naming the key (``[1].times: ...``)."""
    specs = [raw] if isinstance(raw, Mapping) else list(raw)
    parsed = []
    for index, spec in enumerate(specs):
        try:
            parsed.append(parse_spec(spec))
        except ValueError as exc:
            raise ValueError(f"[{index}].{exc}" if not isinstance(raw, Mapping) else str(exc)) from None
    return TimeInterval(name=name, specs=tuple(parsed))
