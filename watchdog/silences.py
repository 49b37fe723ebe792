"""What ``watchdog silence`` accepts: a target (``RULE`` or ``RULE:GROUP``) and a bounded duration.

Pure parsing, no I/O: each function returns a value or raises ValueError with
a message that says what to type instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from watchdog.durations import format_duration, parse_duration

# Longer than this is not a silence but a disabled rule (``enabled: false`` in its file, reviewed like any change).
MAX_SILENCE = timedelta(days=30)
MAX_SILENCE_TEXT = format_duration(MAX_SILENCE)
RULE_NAME = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True)
class Target:
    """A rule, and one of its groups or (``group is None``) all of them."""

    rule: str
    group: str | None

    def __str__(self) -> str:
        return self.rule if self.group is None else f"{self.rule}:{self.group}"


def parse_target(text: str) -> Target:
    """``app-errors`` or ``app-errors:team-a`` (the group is everything after the first colon).

    Raises ValueError when the rule part is not a rule name or the group is empty.
    """
    rule, colon, group = text.partition(":")
    if not RULE_NAME.fullmatch(rule):
        raise ValueError(f"{text!r} does not start with a rule name (lowercase letters, digits, '-' and '_'): "
                         "give RULE or RULE:GROUP, e.g. app-error-rate:team-a")
    if colon and not group:
        raise ValueError(f"{text!r} names no group after ':': give RULE:GROUP, or RULE alone to silence every group")
    return Target(rule, group if colon else None)


def parse_silence_duration(text: str) -> timedelta:
    """A duration for ``--for``: more than zero and at most MAX_SILENCE; raises ValueError otherwise."""
    try:
        length = parse_duration(text)
    except OverflowError:  # more days than a timedelta holds
        raise ValueError(f"--for {text}: at most {MAX_SILENCE_TEXT}") from None
    if length <= timedelta(0):
        raise ValueError(f"--for {text}: a silence must last longer than 0s, e.g. --for 30m")
    if length > MAX_SILENCE:
        raise ValueError(f"--for {text}: at most {MAX_SILENCE_TEXT}; to mute a rule for longer, "
                         "set `enabled: false` in its file")
    return length
