"""Small helpers shared by the rule types' option parsers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watchdog.durations import parse_duration
from watchdog.ruletypes.base import OptionsError, Path


def duration(data: Mapping[str, Any], key: str, default: timedelta | None = None, path: Path = ()) -> timedelta:
    """``data[key]`` as a timedelta (the schema has checked its form)."""
    if key not in data:
        if default is None:
            raise OptionsError(path + (key,), f"missing required key '{key}'")
        return default
    return parse_duration(str(data[key]))


def optional_duration(data: Mapping[str, Any], key: str) -> timedelta | None:
    return parse_duration(str(data[key])) if key in data else None


def timezone(name: str, path: Path) -> ZoneInfo:
    """The zone called ``name``; raises OptionsError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise OptionsError(path, f"unknown time zone '{name}' (use an IANA name such as UTC or Europe/Berlin)") from None
