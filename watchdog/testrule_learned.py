"""``test-rule`` for freshness rules that learn from their tables: a replay tick by tick, learning honestly.

A table keeps its own load history, so a freshness rule whose every check is
a table check with ``learn:`` can be replayed over a past range: the load
times within [start - history, end] are read once per check (one bounded
query), and at each tick the check sees only the loads up to that tick, learns
its cadence from them alone (never from a later load) and is judged as the
daemon would judge it then, fixed thresholds included. Ticks are watchdog's
clock; load times are the database's.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg2 import sql as pgsql

from watchdog.baseline import Cadence, Learning, learn_cadence
from watchdog.rule import Rule
from watchdog.ruletypes import freshness
from watchdog.ruletypes.base import Evaluation, Finding, Observation
from watchdog.ruletypes.freshness_options import FreshnessCheck, FreshnessOptions
from watchdog.ruletypes.learned import HISTORY_CAP

# Rows one replay's history query may return (distinct load minutes): a month of minutely loads and more.
REPLAY_ROWS = 100_000


def replayable(rule: Rule) -> bool:
    """Whether ``rule`` is a freshness rule whose every check learns from a table (so its past can be replayed)."""
    options = rule.options
    return (rule.type == "freshness" and isinstance(options, FreshnessOptions)
            and all(c.learn is not None and c.table is not None for c in options.checks))


def loads_of(check: FreshnessCheck, source: Any, start: datetime, end: datetime) -> dict[str | None, list[datetime]]:
    """Each key's load times in [start - history, end], ascending (at most REPLAY_ROWS, the newest kept);
    raises QueryError."""
    assert check.learn is not None
    out = freshness.history(check, source, pgsql.Literal(start - check.learn.history), pgsql.Literal(end), REPLAY_ROWS)
    for times in out.values():
        times.sort()
    return out


def evaluate_at(check: FreshnessCheck, loads: dict[str | None, list[datetime]], tick: datetime,
                learned: dict[tuple[str | None, datetime], Cadence]) -> tuple[list[Finding], list[Observation]]:
    """The findings and present values of one check at ``tick``, from the loads up to it (``learned`` caches
    cadences by (key, last load): a cadence depends on nothing later)."""
    assert check.learn is not None
    findings: list[Finding] = []
    present: list[Observation] = []
    keys: Sequence[str | None] = sorted(loads, key=str) if check.group_by is not None else [None]
    for key in keys:
        times = loads.get(key, [])
        seen = times[:bisect.bisect_right(times, tick)]
        if not seen:
            if check.group_by is None:
                finding, _ = freshness.judge(check, None, None, tick)
                findings += [finding] if finding is not None else []
            continue  # a group with no load yet is not reported at this tick
        last = seen[-1]
        model: Cadence | Learning | None = learned.get((key, last))
        if model is None:
            model = learn_cadence(seen[-HISTORY_CAP:], tick, history=check.learn.history, zone=check.timezone,
                                  margins=check.learn.margins)
            if isinstance(model, Cadence):
                learned[(key, last)] = model
        finding, _ = freshness.judge(check, key, last, tick, model=model)
        if finding is not None:
            findings.append(finding)
        else:
            present.append(freshness.fresh_now(check, key, last, tick, model))
    return findings, present


def evaluations(rule: Rule, source: Any, ticks: Sequence[datetime]) -> tuple[list[Evaluation], int]:
    """One evaluation per tick, and the number of history queries; raises QueryError."""
    options: FreshnessOptions = rule.options
    if not ticks:
        return [], 0
    histories = [loads_of(check, source, ticks[0], ticks[-1]) for check in options.checks]
    caches: list[dict[tuple[str | None, datetime], Cadence]] = [{} for _ in options.checks]
    out = []
    for tick in ticks:
        findings: list[Finding] = []
        present: list[Observation] = []
        for check, loads, cache in zip(options.checks, histories, caches, strict=True):
            found, now = evaluate_at(check, loads, tick, cache)
            findings += found
            present += now
        out.append(Evaluation(findings=tuple(findings), present=tuple(present)))
    return out, len(histories)
