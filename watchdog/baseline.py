"""Learned baselines: how often a table loads, and what a number usually is, from its own history.

Pure: load times or (time, value) points and ``now`` in, a small model and a
verdict out; no I/O and no clock (``now`` is the data source's).

Cadence (freshness ``learn:``). Load times closer than ``CLUSTER`` are one
load (a load that stamps its rows over a few minutes). The wait that matters
is the one after a load *like the last one*: the gaps that followed the loads
at the same time of week (one per earlier week, when the history holds at
least two), else at the same time of day, else every gap. Their median is
the expected wait and 1.4826 x their median absolute deviation its spread
(both robust: one holiday or one late load moves neither much). How late
ordinary loads come is learned too: the second-largest excess of the recent
gaps over what was expected for each ("lateness"; one outlier is ignored).
The last load is late past ``expected + max(warn x spread, lateness x
warn/2.5, expected/4, 5m)`` (warning) and past ``expected + max(error x
spread, lateness x error/2.5, expected/2, 10m)`` (critical). So a nightly table is not overdue in the afternoon, and a table
loading hourly on weekdays only expects a ~2-day wait after its Friday load.

Values (sql_value ``anomaly:``). The usual value is the median of the values
seen at the same time of week (one per earlier week, when there are three),
else at the same time of day on days of the same kind (weekday or weekend),
else of all; a value is anomalous on the chosen side past
``max(warn x spread, 10% of the median)`` (warning) and
``max(error x spread, 25% of the median)`` (critical).

Until the history holds ``MIN_LOADS`` loads (``MIN_POINTS`` values) over
``MIN_SPAN``, a check is learning: the model says what it still needs and
never gives a verdict.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from watchdog.durations import format_age

MIN_LOADS = 7  # loads (6 gaps) before a cadence is learned
MIN_POINTS = 7  # values before a usual value is learned
MIN_SPAN = timedelta(days=3)  # and the history must reach this far back
DEFAULT_HISTORY = timedelta(days=28)
WARN_MARGIN = 3.0  # spreads past the expected wait or the usual value: warning
ERROR_MARGIN = 6.0  # and critical
MAD_SCALE = 1.4826  # a normal distribution's MAD times this is its standard deviation
CLUSTER = timedelta(minutes=2)  # load times this close are one load (rows stamped over a few minutes)...
CLUSTER_SPAN = timedelta(minutes=15)  # ...unless that load would then span longer than this
MIN_WARN = timedelta(minutes=5)
MIN_ERROR = timedelta(minutes=10)
VALUE_WARN_FLOOR = 0.10  # a value within 10% of its usual value never warns, whatever the spread
VALUE_ERROR_FLOOR = 0.25
WEEK = timedelta(days=7)
DAY = timedelta(days=1)
SHOWN_GAPS = 10  # "9 of the last 10 gaps"
LATE_SAMPLE = 400  # the ordinary lateness is learned from this many recent gaps
LATE_HEADROOM = 2.5  # a margin of 3 allows 3/2.5 = 1.2 times the ordinary lateness

Direction = Literal["below", "above", "both"]
Level = Literal["warn", "critical"]


@dataclass(frozen=True)
class Margins:
    """How many spreads past the expected wait (or usual value) warn and go critical."""

    warn: float = WARN_MARGIN
    error: float = ERROR_MARGIN

    def __post_init__(self) -> None:
        if not 0 < self.warn < self.error:
            raise ValueError(f"margins must be 0 < warn < error, got warn={self.warn} error={self.error}")


@dataclass(frozen=True)
class Learning:
    """Not enough history yet: what there is and what is still needed."""

    have: int
    need: int
    span: timedelta
    need_span: timedelta
    unit: str = "load"

    def describe(self) -> str:
        """``learning: 2 loads over 3h so far; needs 5 more loads and 2d21h more history``."""
        wants = []
        if self.have < self.need:
            wants.append(f"{self.need - self.have} more {self.unit}{'s' if self.need - self.have > 1 else ''}")
        if self.span < self.need_span:
            wants.append(f"{format_age(self.need_span - self.span)} more history")
        have = f"{self.have} {self.unit}{'s' if self.have != 1 else ''}"
        over = f" over {format_age(self.span)}" if self.have > 1 else ""
        return f"learning: {have}{over} so far; needs {' and '.join(wants)}"


def about(wait: timedelta) -> timedelta:
    """``wait`` rounded as people say it: to the minute under 30m, to 5 minutes under a day, else to 15 minutes."""
    step = 60 if wait < timedelta(minutes=30) else 300 if wait < timedelta(days=1) else 900
    return timedelta(seconds=round(wait.total_seconds() / step) * step)


def _median_mad(samples: Sequence[float]) -> tuple[float, float]:
    middle = statistics.median(samples)
    return middle, MAD_SCALE * statistics.median(abs(s - middle) for s in samples)


def _when(at: datetime, basis: str, zone: ZoneInfo) -> str:
    local = at.astimezone(zone)
    if basis == "week":
        return f" after {local.strftime('%A')} loads around {local.hour:02d}:00"
    if basis == "day":
        return f" after loads around {local.hour:02d}:00"
    return ""


@dataclass(frozen=True)
class Cadence:
    """The learned wait after a load like the last one, and the ages that are late."""

    expected: timedelta
    spread: timedelta
    warn_after: timedelta
    error_after: timedelta
    basis: str  # week | day | all: which earlier gaps were compared
    under: int  # of the last ``of`` compared gaps, how many were under ``warn_after``
    of: int
    loads: int  # loads learned from
    last: datetime  # the last load the model is for
    zone: str = "UTC"

    def describe(self) -> str:
        """``loads about every 1h after Tuesday loads around 14:00 (9 of the last 10 gaps under 1h15m)``."""
        when = _when(self.last, self.basis, ZoneInfo(self.zone))
        return (f"loads about every {format_age(about(self.expected))}{when} ({self.under} of the last {self.of} "
                f"gaps under {format_age(self.warn_after)})")

    def level(self, age: timedelta) -> Level | None:
        """How late a last load of ``age`` is: None (on time), ``warn`` or ``critical``."""
        if age > self.error_after:
            return "critical"
        if age > self.warn_after:
            return "warn"
        return None


def clustered(times: Iterable[datetime]) -> list[datetime]:
    """Distinct load times, ascending, those within ``CLUSTER`` of the previous merged into one load (its newest)."""
    out: list[datetime] = []
    start: datetime | None = None
    for t in sorted(set(times)):
        if out and start is not None and t - out[-1] <= CLUSTER and t - start <= CLUSTER_SPAN:
            out[-1] = t
            continue
        out.append(t)
        start = t
    return out


def _matched(times: Sequence[datetime], at: datetime, step: timedelta, tolerance: timedelta,
             keep: int | None = None) -> list[int]:
    """Indexes of the time nearest to ``at - k*step`` for k = 1, 2, ... (within ``tolerance``), newest first."""
    found: list[int] = []
    k = 1
    while times and at - k * step >= times[0] - tolerance:
        target = at - k * step
        i = bisect.bisect_left(times, target)
        near = [j for j in (i - 1, i) if 0 <= j < len(times)]
        j = min(near, key=lambda j: abs(times[j] - target))
        if abs(times[j] - target) <= tolerance and (not found or found[-1] != j):
            found.append(j)
        k += 1
        if keep is not None and len(found) >= keep:
            break
    return found


def _comparable(loads: Sequence[datetime], gaps: Sequence[float], j: int,
                timedelta_tolerance: timedelta) -> tuple[str, list[float]]:
    """The earlier gaps comparable with the one after load ``j``, newest first, and which kind they are.

    A gap is comparable when it followed a load at the same time of week (at
    least two earlier weeks), else of day (at least three earlier days), else
    every earlier gap is. Only gaps closed before load ``j`` count.
    """
    weekly = [gaps[i] for i in _matched(loads, loads[j], WEEK, timedelta_tolerance) if i < j]
    if len(weekly) >= 2:
        return "week", weekly
    daily = [gaps[i] for i in _matched(loads, loads[j], DAY, timedelta_tolerance) if i < j]
    if len(daily) >= 3:
        return "day", daily
    return "all", list(gaps[:j][::-1])


def _lateness(loads: Sequence[datetime], gaps: Sequence[float], tolerance: timedelta, like: str) -> float:
    """How late ordinary loads come: the second-largest excess of the last LATE_SAMPLE gaps over what was
    expected for each (0 with fewer than two).

    Ordinary lateness (a load 40 minutes late now and then) is thereby learned
    as normal, while a single outlier in the history (a holiday, an outage)
    is not. Only gaps judged on the same ``like`` basis count (a Friday gap
    judged by weekdays' gaps before two weeks are known is no lateness).
    """
    excess = []
    for j in range(max(0, len(gaps) - LATE_SAMPLE), len(gaps)):
        basis, samples = _comparable(loads, gaps, j, tolerance)
        if basis == like and len(samples) >= 2:
            excess.append(gaps[j] - statistics.median(samples))
    if len(excess) < 2:
        return 0.0
    excess.sort()
    return max(0.0, excess[-2])


def learn_cadence(load_times: Iterable[datetime], now: datetime, *, history: timedelta = DEFAULT_HISTORY,
                  zone: ZoneInfo | None = None, margins: Margins = Margins()) -> Cadence | Learning:
    """The cadence learned from the loads in [now - history, now], judged for the last of them.

    Given aware load times (any order, duplicates allowed), the data source's
    ``now``, the history to learn from, the zone whose days and hours count,
    and the margins. Returns Learning while there are fewer than MIN_LOADS
    loads or they span less than MIN_SPAN before ``now``.
    """
    zone = zone or ZoneInfo("UTC")
    loads = clustered(t for t in load_times if now - history <= t <= now)
    span = now - loads[0] if loads else timedelta(0)
    if len(loads) < MIN_LOADS or span < MIN_SPAN:
        return Learning(have=len(loads), need=MIN_LOADS, span=span, need_span=MIN_SPAN)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(loads)]
    last = len(loads) - 1
    tolerance = timedelta(seconds=min(max(statistics.median(gaps) / 2, 60.0), 3 * 3600.0))
    basis, samples = _comparable(loads, gaps, last, tolerance)
    expected, spread = _median_mad(samples)
    late = _lateness(loads, gaps, tolerance, basis)
    # Ordinary lateness gets headroom in proportion to the margins: 1.2x and 2.4x by default.
    warn = expected + max(margins.warn * spread, late * margins.warn / LATE_HEADROOM, expected / 4,
                          MIN_WARN.total_seconds())
    error = expected + max(margins.error * spread, late * margins.error / LATE_HEADROOM, expected / 2,
                           MIN_ERROR.total_seconds())
    error = max(error, warn + 60)
    shown = samples[:SHOWN_GAPS]
    return Cadence(expected=timedelta(seconds=round(expected)), spread=timedelta(seconds=round(spread)),
                   warn_after=timedelta(seconds=round(warn)), error_after=timedelta(seconds=round(error)),
                   basis=basis, under=sum(1 for g in shown if g <= warn), of=len(shown), loads=len(loads),
                   last=loads[-1], zone=zone.key)


# --- values -------------------------------------------------------------------------------------------------------


def _fmt(number: float) -> str:
    return f"{number:.4g}"


@dataclass(frozen=True)
class Usual:
    """The learned usual value at a moment, and the values past which it is anomalous."""

    median: float
    spread: float
    warn_margin: float
    error_margin: float
    basis: str  # week | day | all
    samples: int
    direction: Direction
    at: datetime
    zone: str = "UTC"

    def describe(self) -> str:
        """``usually 1000 on Wednesdays around 06:00 (median of 4; warning below 850, critical below 700)``."""
        local = self.at.astimezone(ZoneInfo(self.zone))
        when = {"week": f" on {local.strftime('%A')}s around {local.hour:02d}:00",
                "day": f" on {'weekend days' if local.weekday() >= 5 else 'weekdays'} around {local.hour:02d}:00",
                "all": ""}[self.basis]
        limits = []
        for name, margin in (("warning", self.warn_margin), ("critical", self.error_margin)):
            sides = []
            if self.direction in ("below", "both"):
                sides.append(f"below {_fmt(self.median - margin)}")
            if self.direction in ("above", "both"):
                sides.append(f"above {_fmt(self.median + margin)}")
            limits.append(f"{name} {' or '.join(sides)}")
        return f"usually {_fmt(self.median)}{when} (median of {self.samples}; {', '.join(limits)})"

    def level(self, value: float) -> Level | None:
        """How anomalous ``value`` is on the chosen side: None, ``warn`` or ``critical``."""
        if self.direction == "below":
            off = self.median - value
        elif self.direction == "above":
            off = value - self.median
        else:
            off = abs(value - self.median)
        if off > self.error_margin:
            return "critical"
        if off > self.warn_margin:
            return "warn"
        return None


def learn_value(points: Iterable[tuple[datetime, float]], now: datetime, *, direction: Direction = "both",
                history: timedelta = DEFAULT_HISTORY, zone: ZoneInfo | None = None,
                margins: Margins = Margins()) -> Usual | Learning:
    """The usual value at ``now`` learned from the (time, value) points in [now - history, now).

    Given aware times (any order; one value per time, the last given wins),
    the side that is anomalous, the history, the zone whose days and hours
    count, and the margins. Returns Learning while there are fewer than
    MIN_POINTS points or they span less than MIN_SPAN before ``now``.
    """
    zone = zone or ZoneInfo("UTC")
    by_time = {t: v for t, v in points if now - history <= t < now}
    times = sorted(by_time)
    span = now - times[0] if times else timedelta(0)
    if len(times) < MIN_POINTS or span < MIN_SPAN:
        return Learning(have=len(times), need=MIN_POINTS, span=span, need_span=MIN_SPAN, unit="value")
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    tolerance = timedelta(seconds=min(max(statistics.median(steps) / 2, 60.0), 12 * 3600.0))
    weekly = [by_time[times[j]] for j in _matched(times, now, WEEK, tolerance)]
    weekend = now.astimezone(zone).weekday() >= 5
    daily = [by_time[times[j]] for j in _matched(times, now, DAY, tolerance)
             if (times[j].astimezone(zone).weekday() >= 5) == weekend]
    if len(weekly) >= 3:
        basis, samples = "week", weekly
    elif len(daily) >= 3:
        basis, samples = "day", daily
    else:
        basis, samples = "all", [by_time[t] for t in times]
    median, spread = _median_mad(samples)
    warn = max(margins.warn * spread, VALUE_WARN_FLOOR * abs(median))
    error = max(margins.error * spread, VALUE_ERROR_FLOOR * abs(median), warn)
    return Usual(median=median, spread=spread, warn_margin=warn, error_margin=error, basis=basis,
                 samples=len(samples), direction=direction, at=now, zone=zone.key)


# --- what is kept in the state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """One learned baseline as the state keeps it: its model (a JSON object), its history (JSON text, parsed only
    when relearning) and when the source's own history was last read (None: never)."""

    model: Mapping[str, Any]
    history: str = "[]"
    fetched_at: datetime | None = None


def epoch(at: datetime) -> float:
    """Seconds since the epoch (what the state keeps)."""
    return at.timestamp()


def moment(seconds: float) -> datetime:
    """The aware UTC moment of ``epoch``'s seconds."""
    return datetime.fromtimestamp(seconds, UTC)
