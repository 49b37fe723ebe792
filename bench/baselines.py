"""Benchmark: learned freshness baselines against fixed thresholds tuned by hand, on synthetic load histories.

Run: .venv/bin/python -m bench.baselines [--seed 1] [--seeds 3]

Idle cost of learning checks: .venv/bin/python -m bench.idle --kinds freshness,learned --counts 100

For each table kind below, 28 days of history to learn from,
   then one month of ordinary operation (jitter, late loads, weekends, a
   holiday: no outage) evaluated every 5 minutes: every alert episode in that
   month is a false alarm. The same month with one injected outage (loads
   stop for a day) measures how soon each approach notices. The learned
   checks learn only from loads before each tick, as the daemon and
   ``test-rule`` do.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import median, save
from watchdog.baseline import Cadence, learn_cadence

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday; the month judged starts four weeks later
HOLIDAY = START + timedelta(days=35)  # a Monday in the judged month: weekday-only tables skip it
TICK = timedelta(minutes=5)
LEARN_DAYS, JUDGED_DAYS = 28, 30


@dataclass(frozen=True)
class Kind:
    """A table's load schedule and the fixed thresholds an engineer would pick for it by hand."""

    name: str
    slots: Callable[[datetime], bool]  # whether a load is scheduled at this moment (checked every 5 minutes)
    jitter: timedelta
    late: float  # share of loads that come late
    late_by: tuple[timedelta, timedelta]
    warn_after: timedelta
    error_after: timedelta
    skips_holidays: bool = False


def _weekday(at: datetime) -> bool:
    return at.weekday() < 5


KINDS = (
    Kind("every 15m", lambda t: t.minute % 15 == 0, timedelta(minutes=2), 0.02,
         (timedelta(minutes=10), timedelta(minutes=25)), timedelta(minutes=45), timedelta(minutes=90)),
    Kind("hourly", lambda t: t.minute == 5, timedelta(minutes=5), 0.03,
         (timedelta(minutes=30), timedelta(minutes=80)), timedelta(hours=2), timedelta(hours=4)),
    Kind("hourly, weekdays", lambda t: t.minute == 5 and _weekday(t), timedelta(minutes=5), 0.03,
         (timedelta(minutes=30), timedelta(minutes=80)), timedelta(hours=2), timedelta(hours=4), skips_holidays=True),
    Kind("business hours", lambda t: t.minute == 0 and 8 <= t.hour <= 18 and _weekday(t), timedelta(minutes=5), 0.03,
         (timedelta(minutes=30), timedelta(minutes=80)), timedelta(hours=15), timedelta(hours=18), skips_holidays=True),
    Kind("nightly", lambda t: t.hour == 2 and t.minute == 0, timedelta(minutes=20), 0.05,
         (timedelta(hours=1), timedelta(hours=4)), timedelta(hours=28), timedelta(hours=36)),
    Kind("nightly, weekdays", lambda t: t.hour == 2 and t.minute == 0 and _weekday(t), timedelta(minutes=20), 0.05,
         (timedelta(hours=1), timedelta(hours=4)), timedelta(hours=28), timedelta(hours=36), skips_holidays=True),
)


def loads(kind: Kind, rnd: random.Random, outage: tuple[datetime, datetime] | None = None) -> list[datetime]:
    """The load times of ``kind`` over the learning weeks and the judged month (a load in ``outage`` never comes)."""
    out = []
    at, end = START, START + timedelta(days=LEARN_DAYS + JUDGED_DAYS)
    while at < end:
        holiday = kind.skips_holidays and HOLIDAY <= at < HOLIDAY + timedelta(days=1)
        if kind.slots(at) and not holiday:
            when = at + timedelta(seconds=rnd.uniform(-1, 1) * kind.jitter.total_seconds())
            if rnd.random() < kind.late:
                low, high = kind.late_by
                when += timedelta(seconds=rnd.uniform(low.total_seconds(), high.total_seconds()))
            if outage is None or not outage[0] <= when < outage[1]:
                out.append(when)
        at += TICK
    return sorted(out)


def judge_month(times: list[datetime], kind: Kind) -> dict[str, list[datetime]]:
    """The moments each approach starts an alert episode (warning or worse) during the judged month."""
    first = START + timedelta(days=LEARN_DAYS)
    episodes: dict[str, list[datetime]] = {"learned": [], "fixed": []}
    alerting = {"learned": False, "fixed": False}
    model: Cadence | None = None
    model_for: datetime | None = None
    index = 0
    tick = first
    while tick < first + timedelta(days=JUDGED_DAYS):
        while index < len(times) and times[index] <= tick:
            index += 1
        if index == 0:
            tick += TICK
            continue
        last = times[index - 1]
        age = tick - last
        if model_for != last:  # the daemon relearns only when the last load changes
            learned = learn_cadence(times[max(0, index - 5000):index], tick)
            model = learned if isinstance(learned, Cadence) else None
            model_for = last
        verdicts = {"learned": model is not None and model.level(age) is not None, "fixed": age > kind.warn_after}
        for name, on in verdicts.items():
            if on and not alerting[name]:
                episodes[name].append(tick)
            alerting[name] = on
        tick += TICK
    return episodes


def false_alarms(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        learned, fixed, detect_learned, detect_fixed = [], [], [], []
        for seed in seeds:
            month = judge_month(loads(kind, random.Random(seed)), kind)
            learned.append(len(month["learned"]))
            fixed.append(len(month["fixed"]))
            # An outage on a Wednesday from 10:00: no load for a day.
            start = START + timedelta(days=LEARN_DAYS + 9, hours=10)
            broken = judge_month(loads(kind, random.Random(seed), (start, start + timedelta(days=1))), kind)
            for name, out in (("learned", detect_learned), ("fixed", detect_fixed)):
                after = [t for t in broken[name] if start <= t <= start + timedelta(days=2)]
                out.append((after[0] - start).total_seconds() / 60 if after else float("inf"))
        rows.append({"kind": kind.name, "fixed_thresholds": f"warn {kind.warn_after}, error {kind.error_after}",
                     "false_alarms_learned": median([float(x) for x in learned]),
                     "false_alarms_fixed": median([float(x) for x in fixed]),
                     "detect_minutes_learned": median(detect_learned), "detect_minutes_fixed": median(detect_fixed)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = false_alarms(list(range(args.seed, args.seed + args.seeds)))
    print(f"false alarm episodes in a month without outage (median of {args.seeds} seeds), and minutes to notice "
          "a day-long outage:")
    print(f"  {'table':<20} {'learned':>8} {'fixed':>6}   {'notice learned':>15} {'notice fixed':>13}   fixed thresholds")
    for r in rows:
        print(f"  {r['kind']:<20} {r['false_alarms_learned']:>8.0f} {r['false_alarms_fixed']:>6.0f}   "
              f"{r['detect_minutes_learned']:>15.0f} {r['detect_minutes_fixed']:>13.0f}   {r['fixed_thresholds']}")
    save("baselines", {"false_alarms": rows})


if __name__ == "__main__":
    main()
