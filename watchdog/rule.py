"""The typed form of a rule file: common keys here, type options in ``ruletypes``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


DEFAULT_EVERY = timedelta(minutes=1)
DEFAULT_REPEAT_EVERY = timedelta(hours=4)
# How late events may arrive and still be counted by a search rule's incremental window (see ruletypes/increments).
DEFAULT_SETTLE = timedelta(minutes=2)
DEFAULT_SEVERITY = Severity.WARNING
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class Schedule:
    """``{every: 1m}`` or ``{cron: '*/5 * * * *', timezone: UTC}``."""

    every: timedelta | None = None
    cron: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of every or cron")
        if self.every is not None and self.every <= timedelta(0):
            raise ValueError(f"every must be positive, not {self.every}")

    def describe(self) -> str:
        from watchdog.durations import format_duration

        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron '{self.cron}' {self.timezone}"


DEFAULT_SCHEDULE = Schedule(every=DEFAULT_EVERY)


@dataclass(frozen=True)
class NotifyTarget:
    """Where a rule's notifications go; ``enabled=False`` records state only."""

    enabled: bool = True
    channel: str | None = None
    mention: str | None = None


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``options`` is the frozen options object of its type."""

    name: str
    type: str
    path: str
    options: Any
    description: str = ""
    schedule: Schedule = DEFAULT_SCHEDULE
    severity: Severity = DEFAULT_SEVERITY
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    repeat_every: timedelta = DEFAULT_REPEAT_EVERY
    notify: NotifyTarget = NotifyTarget()
    labels: dict[str, str] = field(default_factory=dict)
    runbook_url: str | None = None
    message: str | None = None  # template of firing notifications
    resolved_message: str | None = None  # template of resolutions (default: the rule type's resolved text)
    enabled: bool = True
    depends_on: tuple[str, ...] = ()  # rule names or rule:group patterns (see ``dependencies.Ref``)
    depends_on_settle: timedelta | None = None  # None: two of its own evaluations (``dependencies.DEFAULT_SETTLE``)
    settle: timedelta = DEFAULT_SETTLE  # search rules: how late an event may arrive and still count

    @property
    def source(self) -> str:
        """The name of the config source this rule reads."""
        return str(self.options.source)
