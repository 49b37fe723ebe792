"""The alert lifecycle of one (rule, group): ok -> pending -> firing -> resolved.

Pure: ``step`` takes the previous state, the current finding (or None when
the condition does not hold) and ``now``, and returns the next state with the
transitions and notifications it implies. Silenced groups keep their state
but produce no notification; a resolution is only sent for an alert whose
firing notification was sent. With ``keep_firing_for``, a firing alert whose
condition turns false stays firing (``clear_since`` set, nothing sent) and
resolves once it has been false that long; a breach in between clears
``clear_since``, so a value hovering at the threshold does not flap.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from watchdog.rule import Rule, Severity
from watchdog.ruletypes.base import Finding, Observation

ERROR_NOTIFY_AFTER = 3  # consecutive failed evaluations before an error is notified


class State(str, Enum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class Kind(str, Enum):
    """What a notification says."""

    FIRING = "firing"
    REPEAT = "repeat"
    SEVERITY = "severity"  # severity changed while firing
    RESOLVED = "resolved"
    ERROR = "error"  # the rule keeps failing to evaluate
    RECOVERED = "recovered"  # ... and now evaluates again


@dataclass(frozen=True)
class Policy:
    """The lifecycle parameters of a rule."""

    severity: Severity
    for_: timedelta = timedelta(0)
    repeat_every: timedelta = timedelta(hours=4)
    keep_firing_for: timedelta = timedelta(0)  # a firing alert resolves only after being clear this long

    @classmethod
    def of(cls, rule: Rule) -> Policy:
        """The lifecycle parameters of ``rule``."""
        return cls(severity=rule.severity, for_=rule.for_, repeat_every=rule.repeat_every,
                   keep_firing_for=rule.keep_firing_for)


@dataclass(frozen=True)
class GroupState:
    state: State
    severity: Severity
    since: datetime  # when the current state was entered
    value: float | str | None = None
    summary: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    episode: str = ""  # identifies one firing episode (its Slack thread)
    notified_at: datetime | None = None  # last notification sent for this episode
    firing_since: datetime | None = None
    clear_since: datetime | None = None  # firing, but its condition has been false since then (keep_firing_for)


@dataclass(frozen=True)
class Transition:
    group: str
    at: datetime
    from_: str
    to: str
    value: float | str | None
    severity: Severity


@dataclass(frozen=True)
class Notice:
    """A notification to send (before rendering)."""

    kind: Kind
    group: str
    at: datetime
    severity: Severity
    value: float | str | None
    summary: str
    episode: str
    details: Mapping[str, Any] = field(default_factory=dict)
    since: datetime | None = None


@dataclass(frozen=True)
class Step:
    state: GroupState | None  # None: ok, nothing to keep
    transitions: tuple[Transition, ...] = ()
    notices: tuple[Notice, ...] = ()


def _notice(kind: Kind, group: str, state: GroupState, now: datetime) -> Notice:
    return Notice(kind=kind, group=group, at=now, severity=state.severity, value=state.value, summary=state.summary,
                  episode=state.episode, details=state.details, since=state.firing_since)


def step(policy: Policy, group: str, prev: GroupState | None, finding: Finding | None,
         now: datetime, *, silenced: bool = False, acknowledged: Severity | None = None,
         present: Observation | None = None) -> Step:
    """Advance one group's lifecycle by one evaluation.

    ``acknowledged`` is the severity at which someone acknowledged the current
    episode: it stops repeats until the alert resolves or its severity rises.
    ``present`` is the group's value now when its condition does not hold,
    with its resolution text as summary: a resolution states it (never the
    firing text, never the last firing value).
    """
    if finding is None:
        if prev is None:
            return Step(None)
        if prev.state is State.FIRING and policy.keep_firing_for > timedelta(0):
            # Keep firing (silently) until the condition has been false for keep_firing_for.
            clear_since = prev.clear_since or now
            if now - clear_since < policy.keep_firing_for:
                return Step(replace(prev, clear_since=clear_since))
        value = present.value if present is not None else None
        moved = (Transition(group, now, prev.state.value, "resolved" if prev.state is State.FIRING else State.OK.value,
                            value, prev.severity),)
        if prev.state is State.FIRING and prev.notified_at is not None and not silenced:
            resolved = Notice(kind=Kind.RESOLVED, group=group, at=now, severity=prev.severity, value=value,
                              summary=present.summary if present is not None else "", episode=prev.episode,
                              details=present.details if present is not None else {}, since=prev.firing_since)
            return Step(None, moved, (resolved,))
        return Step(None, moved)

    severity = finding.severity or policy.severity
    current = dict(value=finding.value, summary=finding.summary, details=finding.details, severity=severity)
    if prev is None or prev.state is State.OK:
        prev = GroupState(state=State.OK, severity=severity, since=now)
    if prev.state is State.OK and policy.for_ > timedelta(0):
        pending = replace(prev, state=State.PENDING, since=now, **current)  # type: ignore[arg-type]
        return Step(pending, (Transition(group, now, State.OK.value, State.PENDING.value, finding.value, severity),))
    if prev.state is State.PENDING and now - prev.since < policy.for_:
        return Step(replace(prev, **current))  # type: ignore[arg-type]

    if prev.state is not State.FIRING:
        firing = GroupState(state=State.FIRING, since=now, firing_since=finding.since or now, episode=uuid.uuid4().hex,
                            **current)  # type: ignore[arg-type]
        moved = (Transition(group, now, prev.state.value, State.FIRING.value, finding.value, severity),)
        if silenced:
            return Step(firing, moved)
        return Step(replace(firing, notified_at=now), moved, (_notice(Kind.FIRING, group, firing, now),))

    # Still firing: notify when first unsilenced, on a severity change, or when a repeat is due.
    firing = replace(prev, clear_since=None, **current)  # type: ignore[arg-type]
    if finding.since is not None:  # the source's latest word on when it began (a newer stop, a newer load)
        firing = replace(firing, firing_since=finding.since)
    changed: tuple[Transition, ...] = ()
    if severity != prev.severity:
        changed = (Transition(group, now, f"firing/{prev.severity.value}", f"firing/{severity.value}", finding.value, severity),)
    if silenced:
        return Step(firing, changed)
    if prev.notified_at is None:
        kind: Kind | None = Kind.FIRING
    elif severity != prev.severity:
        kind = Kind.SEVERITY
    elif now - prev.notified_at >= policy.repeat_every and not _covered_by_ack(severity, acknowledged):
        kind = Kind.REPEAT
    else:
        kind = None
    if kind is None:
        return Step(firing, changed)
    return Step(replace(firing, notified_at=now), changed, (_notice(kind, group, firing, now),))


def _covered_by_ack(severity: Severity, acknowledged: Severity | None) -> bool:
    return acknowledged is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[acknowledged]


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True)
class Health:
    """Whether a rule evaluates at all."""

    errors: int = 0  # consecutive failures
    last_error: str | None = None
    error_since: datetime | None = None
    notified: bool = False
    episode: str = ""


def health_step(prev: Health, error: str | None, now: datetime, *, silenced: bool = False) -> tuple[Health, Notice | None]:
    """Count failures; notify once after ERROR_NOTIFY_AFTER in a row, and again when it recovers."""
    if error is None:
        if prev.notified:
            notice = Notice(kind=Kind.RECOVERED, group="", at=now, severity=Severity.WARNING, value=None,
                            summary=f"evaluates again (last error: {prev.last_error})", episode=prev.episode,
                            since=prev.error_since)
            return Health(), (None if silenced else notice)
        return Health(), None
    errors = prev.errors + 1
    health = Health(errors=errors, last_error=error, error_since=prev.error_since or now,
                    notified=prev.notified, episode=prev.episode or uuid.uuid4().hex)
    if errors >= ERROR_NOTIFY_AFTER and not prev.notified and not silenced:
        notice = Notice(kind=Kind.ERROR, group="", at=now, severity=Severity.WARNING, value=None,
                        summary=f"failed {errors} times in a row: {error}", episode=health.episode, since=health.error_since)
        return replace(health, notified=True), notice
    return health, None
