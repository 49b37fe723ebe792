"""Routing: which receivers a notification reaches, and why (``routes:`` in the config).

Routes are data, tried in order, Alertmanager style: a route matches when
every matcher does (``rule``, ``type``, ``severity``, ``labels.NAME``; a value
is exact, or a regular expression after ``~`` that must match the whole
value); the first match wins unless it says ``continue: true``; no match goes
to ``slack`` (``console`` without a Slack block). A matching route outside its
``active_time_intervals`` or inside one of its ``mute_time_intervals`` is
muted: it still ends the walk (unless ``continue``), and what it would have
sent is held back (recorded, never sent, never replayed).

Pure: ``Router.route`` takes the alert's attributes and the moment and
returns a ``Routing`` with a trace in words, which ``watchdog routes``,
``test-rule`` and the engine all use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from watchdog.durations import parse_duration
from watchdog.notify.time_intervals import TimeInterval

LABEL_PREFIX = "labels."
# What PagerDuty is told about: an alert that starts, changes severity, ends, or is acknowledged; a repeat would
# only re-trigger what is open, and remediation steps and Slack's follow-ups are thread talk.
PAGED_KINDS = frozenset({"firing", "severity", "resolved", "error", "recovered", "acknowledged"})
# Kinds only the receiver that made them understands (the Slack notifier's own follow-ups).
SLACK_ONLY_KINDS = frozenset({"update"})
ACK_KIND = "acknowledged"  # an acknowledgement in Slack, passed on to the pagers that were triggered
# What a receiver told about an episode is told later whatever the routes say now: what was opened is closed
# (a PagerDuty incident resolved), and a severity change reaches whoever heard the first one.
CONTINUED_KINDS = frozenset({"severity", "resolved", "recovered"})


@dataclass(frozen=True)
class Matcher:
    """``key: value``: exact, or ``~regex`` matching the whole value."""

    key: str
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, key: str, value: Any) -> Matcher:
        """A matcher; ValueError for a regular expression that does not compile."""
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text.startswith("~"):
            try:
                return cls(key, text, re.compile(text[1:]))
            except re.error as exc:
                raise ValueError(f"{text!r} is not a regular expression: {exc}") from None
        return cls(key, text)

    def matches(self, facts: AlertFacts) -> bool:
        value = facts.get(self.key)
        if value is None:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return value == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class AlertFacts:
    """What routes can match on."""

    rule: str
    type: str = ""
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        if key.startswith(LABEL_PREFIX):
            value = self.labels.get(key[len(LABEL_PREFIX):])
            return None if value is None else str(value)
        return {"rule": self.rule, "type": self.type, "severity": self.severity}.get(key)

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> AlertFacts:
        """The facts of a stored notification payload (see ``notify.render``)."""
        labels = payload.get("labels") or {}
        return cls(rule=str(payload.get("rule") or ""), type=str(payload.get("type") or ""),
                   severity=str(payload.get("severity") or "warning"),
                   labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {})


@dataclass(frozen=True)
class Route:
    number: int  # 1-based, as `watchdog routes` shows it
    receivers: tuple[str, ...]
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    group_wait: timedelta | None = None  # held this long for grouping (default: the receiver's)
    repeat_every: timedelta | None = None  # repeats to this route's receivers at least this far apart
    active_time_intervals: tuple[str, ...] = ()
    mute_time_intervals: tuple[str, ...] = ()

    def describe(self) -> str:
        match = ", ".join(str(m) for m in self.matchers) or "everything"
        return f"route {self.number} (match {match})"


@dataclass(frozen=True)
class Target:
    """One receiver a notification goes to, and the route that sent it there (None: the default)."""

    receiver: str
    route: int | None = None
    group_wait: timedelta | None = None
    repeat_every: timedelta | None = None


@dataclass(frozen=True)
class Routing:
    targets: tuple[Target, ...]
    held: tuple[Target, ...] = ()  # muted by a time interval: recorded, not sent
    trace: tuple[str, ...] = ()

    @property
    def receivers(self) -> tuple[str, ...]:
        return tuple(t.receiver for t in self.targets)


def parse_route(number: int, raw: Mapping[str, Any]) -> Route:
    """One route from validated YAML; ValueError (prefixed with its key) for a bad regular expression."""
    matchers = []
    for key, value in (raw.get("match") or {}).items():
        try:
            matchers.append(Matcher.parse(str(key), value))
        except ValueError as exc:
            raise ValueError(f"match.{key}: {exc}") from None
    return Route(number=number, receivers=tuple(raw["receivers"]), matchers=tuple(matchers),
                 continue_=bool(raw.get("continue", False)),
                 group_wait=parse_duration(raw["group_wait"]) if "group_wait" in raw else None,
                 repeat_every=parse_duration(raw["repeat_every"]) if "repeat_every" in raw else None,
                 active_time_intervals=tuple(raw.get("active_time_intervals", ())),
                 mute_time_intervals=tuple(raw.get("mute_time_intervals", ())))


class Router:
    """Routes notifications; pure apart from reading its own configuration.

    ``receiver_types`` maps each receiver name to its type (``slack``,
    ``console``, ``pagerduty``, ``webhook``, ``email``); ``default`` is the
    receiver of a notification no route matches.
    """

    def __init__(self, routes: Sequence[Route], intervals: Mapping[str, TimeInterval],
                 receiver_types: Mapping[str, str], default: str):
        self.routes = tuple(routes)
        self.intervals = intervals
        self.receiver_types = receiver_types
        self.default = default

    def _muted(self, route: Route, now: datetime) -> str | None:
        """Why ``route`` is muted at ``now``, or None when it may send."""
        for name in route.mute_time_intervals:
            interval = self.intervals.get(name)
            if interval is not None and interval.contains(now):
                return f"muted: inside mute_time_intervals '{name}'"
        if route.active_time_intervals and not any(
                (i := self.intervals.get(name)) is not None and i.contains(now) for name in route.active_time_intervals):
            return f"muted: outside active_time_intervals {', '.join(repr(n) for n in route.active_time_intervals)}"
        return None

    def route(self, facts: AlertFacts, now: datetime) -> Routing:
        """The receivers an alert with ``facts`` reaches at ``now``, those held back, and why."""
        targets: dict[str, Target] = {}
        held: dict[str, Target] = {}
        trace: list[str] = []
        matched = False
        for route in self.routes:
            failed = next((m for m in route.matchers if not m.matches(facts)), None)
            if failed is not None:
                seen = facts.get(failed.key)
                trace.append(f"{route.describe()}: no match ({failed.key} is "
                             f"{'not set' if seen is None else repr(seen)})")
                continue
            matched = True
            muted = self._muted(route, now)
            chosen = held if muted else targets
            for name in route.receivers:
                if name not in targets and name not in chosen:
                    chosen[name] = Target(name, route.number, route.group_wait, route.repeat_every)
            verdict = f"{muted}; held back: " if muted else "matched -> "
            trace.append(f"{route.describe()}: {verdict}{', '.join(route.receivers)}"
                         + ("; continue" if route.continue_ else ""))
            if not route.continue_:
                break
        if not matched:
            targets[self.default] = Target(self.default)
            trace.append(f"no route matched -> {self.default} (the default)")
        for name in targets:
            held.pop(name, None)
        return Routing(tuple(targets.values()), tuple(held.values()), tuple(trace))

    def for_payload(self, payload: Mapping[str, Any], kind: str, now: datetime) -> Routing:
        """Where a rendered notification of ``kind`` goes: ``route`` plus what each receiver type takes.

        PagerDuty is told only about what pages (``PAGED_KINDS``), never about
        a dry run or a notification marked ``page: false`` (an alert explained
        by another); one marked ``routed: false`` goes to the main notifier
        only; a Slack-only follow-up goes to Slack alone.
        """
        if kind in SLACK_ONLY_KINDS:
            return Routing((Target("slack"),), (), ("a Slack follow-up -> slack",))
        if payload.get("routed") is False:
            return Routing((Target(self.default),), (), (f"not routed -> {self.default} (the main notifier only)",))
        routing = self.route(AlertFacts.of(payload), now)
        quiet = bool(payload.get("dry_run")) or payload.get("page") is False or kind not in PAGED_KINDS
        if kind == ACK_KIND:
            targets = tuple(t for t in routing.targets if self.receiver_types.get(t.receiver) == "pagerduty")
            return Routing(targets, (), routing.trace)
        if not quiet:
            return routing
        kept = tuple(t for t in routing.targets if self.receiver_types.get(t.receiver) != "pagerduty")
        dropped = [t.receiver for t in routing.targets if t not in kept]
        why = "a dry run" if payload.get("dry_run") else "marked not to page" if payload.get("page") is False \
            else f"a {kind} notification"
        trace = routing.trace + ((f"not paged ({why}): {', '.join(dropped)}",) if dropped else ())
        return Routing(kept, routing.held, trace)

    def rows(self, payload: Mapping[str, Any], kind: str, now: datetime,
             last_sent: Callable[[str], datetime | None] = lambda receiver: None,
             given: Callable[[], set[str]] = set,
             ) -> tuple[list[tuple[str, dict[str, Any]]], Routing]:
        """The outbox rows of one notification: (receiver key, payload) per receiver, and its routing.

        The main notifier (``default``: slack, else console) is the key ``""``.
        A route's ``group_wait`` travels in the row's payload; a repeat skips a
        receiver whose route's ``repeat_every`` has not passed since
        ``last_sent(receiver)`` (when it was last given this episode). A
        severity change or an end also goes to every receiver ``given`` the
        episode before (their keys), whatever the routes say now.
        """
        routing = self.for_payload(payload, kind, now)
        others = any(name != self.default for name in self.receiver_types if name not in ("slack", "console"))
        if kind in CONTINUED_KINDS and not payload.get("dry_run") and others:
            told = sorted(self.default if key == "" else key for key in given())
            extra = tuple(Target(name) for name in told if name not in routing.receivers and name in self.receiver_types)
            if extra:
                routing = Routing(routing.targets + extra, tuple(t for t in routing.held if t.receiver not in told),
                                  routing.trace + (f"told about this alert before -> {', '.join(t.receiver for t in extra)}",))
        out: list[tuple[str, dict[str, Any]]] = []
        for target in routing.targets:
            key = "" if target.receiver == self.default else target.receiver
            if kind == "repeat" and target.repeat_every is not None:
                last = last_sent(key)
                if last is not None and now - last < target.repeat_every:
                    continue
            row = dict(payload)
            if target.group_wait is not None:
                row["group_wait"] = target.group_wait.total_seconds()
            out.append((key, row))
        return out, routing
