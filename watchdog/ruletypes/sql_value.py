"""``sql_value``: numbers read from the warehouse with read-only SQL, against thresholds (or tiers).

Row counts loaded per day, null rates, duplicates, a volume drop against the
same day last week: each check is one read-only query (validated with
PostgreSQL's own parser, run in a read-only transaction under the source's
statement timeout) returning one number, or (group, number) rows.

Every check, and every group of a grouped check, is its own unit of failure:
an SQL error is a "could not check" finding of that check (its groups keep
their state: unknown now, neither resolved nor advanced), a row whose value
is not a number is that group's finding, and the other checks and groups are
judged as usual; a database that cannot be reached at all is the rule's
error. No rows or NULL is "returned no value"; a group that was reported
before and is missing now is "no longer reported" (and stays so until it
comes back): findings, never silence. A resolution states the value now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from watchdog.baseline import Learning, Usual
from watchdog.rule import Rule, Severity
from watchdog.ruletypes import learned
from watchdog.ruletypes.base import (
    NO_GRANTS,
    EvalContext,
    Evaluation,
    Finding,
    Grants,
    Observation,
    RuleError,
    RuleType,
    SourceUnavailable,
    each_rule,
)
from watchdog.ruletypes.sql_value_options import SqlValueOptions, ValueCheck
from watchdog.ruletypes.thresholds import Threshold

NO_VALUE, GONE, FAILED = "returned no value", "no longer reported", "could not check"
UTC_ZONE = ZoneInfo("UTC")  # sql_value rules have no time zone: days and hours of the learned seasons are UTC's


class CheckError(RuleError):
    pass


class CheckUnavailable(CheckError, SourceUnavailable):
    """The database cannot be reached: the rule's error (named by the check that found out)."""


def number(value: Any) -> float | None:
    """A column value as a float; None for NULL; raises CheckError for anything that is not a finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise CheckError(f"expected a number, got {type(value).__name__} {str(value)[:80]!r}")
    if isinstance(value, Decimal) and not value.is_finite():  # NaN, sNaN (float() raises on it), Infinity
        raise CheckError(f"expected a finite number, got {value}")
    result = float(value)
    if not math.isfinite(result):
        raise CheckError(f"expected a finite number, got {value}")
    return result


def group_name(check: ValueCheck, key: str | None) -> str:
    """The alert group: the check's name for one number, ``check/key`` for a row of a grouped check."""
    return check.name if key is None else f"{check.name}/{key}"


def _is_row(group: str, check: ValueCheck) -> bool:
    """Whether ``group`` is a row of the grouped check ``check`` (not the check's own name)."""
    return group.startswith(check.name + "/")


def read(check: ValueCheck, source: Any) -> list[tuple[str | None, Any]]:
    """(key, raw value) pairs of one check: key None for a single number; raises QueryError or CheckError."""
    return pairs_of(source.query(check.sql))


def read_at_now(check: ValueCheck, source: Any) -> tuple[datetime, list[tuple[str | None, Any]]]:
    """The database's now() and the (key, raw value) pairs, read in one statement (learned checks need the
    source's clock); raises QueryError or CheckError."""
    from watchdog.sources.postgres import as_statement

    reading = source.read_at_now(as_statement(check.sql))
    if not reading.rows and reading.columns not in (1, 2):
        raise CheckError(f"the query returns {reading.columns} columns; return one number, or (group, number) rows")
    return reading.now, pairs_of(reading.rows)


def pairs_of(rows: list[tuple[Any, ...]]) -> list[tuple[str | None, Any]]:
    """(key, raw value) pairs of a check's rows; raises CheckError for a shape that is neither."""
    if not rows:
        return [(None, None)]
    width = len(rows[0])
    if width == 1:
        if len(rows) > 1:
            raise CheckError(f"the query returns {len(rows)} rows of one column; return one number, "
                             "or (group, number) rows")
        return [(None, rows[0][0])]
    if width == 2:
        return [("NULL" if key is None else str(key), value) for key, value in rows]
    raise CheckError(f"the query returns {width} columns; return one number, or (group, number) rows")


def _mildest(threshold: Threshold | None) -> Severity | None:
    return threshold.levels[0].severity if threshold is not None else Severity.WARNING


def _limits(check: ValueCheck, model: Usual | Learning | None = None) -> str:
    """What the value is compared with: the threshold, the learned usual value, or both."""
    parts = [check.threshold.describe()] if check.threshold is not None else []
    if model is not None:
        parts.append(model.describe())
    return "; ".join(parts)


def judge(check: ValueCheck, group: str, value: float | None,
          model: Usual | Learning | None = None) -> tuple[Finding | Observation, dict[str, Any]]:
    """The finding for one number, or its present value when within the limits, and its status fact (pure).

    ``model`` is the group's learned usual value (or learning): the threshold
    and the learned limits both judge, and the more severe wins.
    """
    threshold = check.threshold
    limits = _limits(check, model)
    fact: dict[str, Any] = {"group": group, "check": check.name, "value": value}
    if model is not None:
        fact["learned"] = model.describe()
    details = {"check": check.name, "threshold": limits, "sql": check.sql}
    if value is None:
        fact["status"] = NO_VALUE
        return Finding(group=group, value=None, severity=_mildest(threshold), details={**details, "status": NO_VALUE},
                       summary=f"{group} {NO_VALUE} (no rows, or NULL); {limits}"), fact
    level = threshold.classify(value) if threshold is not None else None
    severity: Severity | None = level.severity if level is not None else None
    learnt = model.level(value) if isinstance(model, Usual) else None
    if learnt is not None:
        learnt_severity = Severity.CRITICAL if learnt == "critical" else Severity.WARNING
        if level is None or learnt_severity.rank > (severity or Severity.WARNING).rank:
            severity = learnt_severity
    breach = level is not None or learnt is not None
    fact["status"] = "breach" if breach else ("learning" if isinstance(model, Learning) else "ok")
    if not breach:
        return Observation(group=group, value=value, details={**details, "status": "ok"},
                           summary=f"{group} is {value:.4g} now ({limits})"), fact
    return Finding(group=group, value=value, severity=severity, details={**details, "status": "breach"},
                   summary=f"{group} is {value:.4g} ({limits})"), fact


def _other(check: ValueCheck, group: str, status: str, reason: str = "") -> tuple[Finding, dict[str, Any]]:
    """A finding that is not a comparison: could not check, no longer reported."""
    text = f"{status}: {group}" + (f": {reason}" if reason else "")
    details = {"check": check.name, "threshold": _limits(check), "sql": check.sql, "status": status}
    return (Finding(group=group, value=None, severity=_mildest(check.threshold), details=details, summary=text),
            {"group": group, "check": check.name, "value": None, "status": status, "reason": reason})


def evaluate_rule(rule: Rule, source: Any, ctx: EvalContext) -> Evaluation:
    """Every check of ``rule``, each its own unit of failure (a failed check never hides another's findings)."""
    from watchdog.sources.postgres import QueryError

    options: SqlValueOptions = rule.options
    known = ctx.observed.get(rule.name, frozenset()) | ctx.active.get(rule.name, frozenset())
    findings: list[Finding] = []
    present: list[Observation] = []
    kept: list[str] = []
    facts: list[dict[str, Any]] = []
    observed: list[str] = []

    def add(result: tuple[Finding | Observation, dict[str, Any]]) -> None:
        judged, fact = result
        facts.append(fact)
        if isinstance(judged, Finding):
            findings.append(judged)
        else:
            present.append(judged)

    book = learned.Book(ctx.baselines, rule.name) if any(c.anomaly for c in options.checks) else None
    for check in options.checks:
        now = ctx.now
        try:
            if check.anomaly is not None:
                now, pairs = read_at_now(check, source)
            else:
                pairs = read(check, source)
        except SourceUnavailable as exc:  # no check can run: the rule's error, not a finding per check
            raise CheckUnavailable(f"check '{check.name}': {exc}") from None
        except (QueryError, CheckError) as exc:
            # This check could not run: say so under its name; its rows are unknown now, so they keep their state
            # (a failure to look resolves nothing).
            add(_other(check, check.name, FAILED, str(exc)))
            for group in sorted(g for g in known if _is_row(g, check)):
                kept.append(group)
                observed.append(group)
                facts.append({"group": group, "check": check.name, "value": None, "status": FAILED, "reason": str(exc)})
            continue
        if check.name in known and all(key is not None for key, _ in pairs):  # a grouped check that runs again
            present.append(Observation(group=check.name, value=len(pairs),
                                       summary=f"check {check.name} runs again: {len(pairs)} group(s) returned"))
        reported: set[str] = set()
        fetched = _history(check, source, book, pairs, now, facts)
        for key, raw in pairs:
            group = group_name(check, key)
            if group in reported:
                add(_other(check, group, FAILED, "the query returns this group twice"))
                continue
            reported.add(group)
            observed.append(group)
            try:
                value = number(raw)
                model = None
                if check.anomaly is not None and book is not None:
                    model = learned.usual(book, group, value, now, check.anomaly, UTC_ZONE,
                                          None if fetched is None else fetched.get(key, []))
                add(judge(check, group, value, model))
            except CheckError as exc:  # one bad row is its own group's finding
                add(_other(check, group, FAILED, str(exc)))
        for group in sorted(g for g in known if _is_row(g, check) and g not in reported):
            add(_other(check, group, GONE, "it was reported before and is missing from the query's rows"))
            observed.append(group)
    if book is not None:
        book.flush(ctx.now)
    return Evaluation(findings=tuple(findings), kept=tuple(kept), present=tuple(present),
                      observed=tuple(sorted(set(observed))), facts={"values": facts})


def _history(check: ValueCheck, source: Any, book: learned.Book | None, pairs: list[tuple[str | None, Any]],
             now: datetime, facts: list[dict[str, Any]]) -> dict[str | None, list[tuple[datetime, float]]] | None:
    """The points of ``history_sql`` by key, when it is due (at most once per item per hour); None: not read now.

    A history that cannot be read is said in the check's facts; the check then learns from what watchdog recorded.
    """
    from watchdog.sources.postgres import QueryError

    anomaly = check.anomaly
    if anomaly is None or anomaly.history_sql is None or book is None:
        return None
    if not any(book.due(group_name(check, key), now) for key, _ in pairs):
        return None
    try:
        rows = source.query(learned.history_query(anomaly.history_sql))
        return history_points(rows)
    except (QueryError, CheckError) as exc:
        facts.append({"group": check.name, "check": check.name, "value": None, "status": "learning from what "
                      "watchdog records", "reason": f"could not read history_sql: {exc}"})
        return {}


def history_points(rows: Sequence[Sequence[Any]]) -> dict[str | None, list[tuple[datetime, float]]]:
    """``history_sql``'s (time, value) or (group, time, value) rows by key; rows with a NULL are skipped.

    Raises CheckError for another shape, a time that is not a timestamp or a value that is not a number.
    """
    out: dict[str | None, list[tuple[datetime, float]]] = {}
    for row in rows:
        if len(row) not in (2, 3):
            raise CheckError(f"history_sql returns {len(row)} columns; return (time, value) or (group, time, value)")
        key = None if len(row) == 2 else ("NULL" if row[0] is None else str(row[0]))
        at, raw = row[-2], row[-1]
        if at is None or raw is None:
            continue
        if not isinstance(at, datetime):
            raise CheckError(f"history_sql: expected a timestamp, got {type(at).__name__} {str(at)[:80]!r}")
        value = number(raw)
        assert value is not None
        out.setdefault(key, []).append((at if at.tzinfo is not None else at.replace(tzinfo=UTC_ZONE), value))
    return out


class SqlValueRule(RuleType):
    name: ClassVar[str] = "sql_value"
    source_type: ClassVar[str] = "postgres"
    message_fields: ClassVar[frozenset[str]] = frozenset({"check", "threshold", "sql", "status"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> SqlValueOptions:
        return SqlValueOptions.from_mapping(data, grants.sql_functions)

    @classmethod
    def resolved_text(cls, rule: Rule, group: str, present: Observation | None) -> str:
        if present is None:  # a vanished row stays firing, so only a rule edit removes a group without a word
            return f"{group} is no longer checked by this rule (its check was removed or changed), so its value is unknown"
        return present.summary

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return each_rule(rules, lambda rule: evaluate_rule(rule, source, ctx))
