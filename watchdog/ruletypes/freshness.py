"""``freshness``: how long ago each warehouse table or source was last loaded.

A check's last load is ``max(loaded_at)`` of a table, or what its SQL returns:
one timestamp, or (group, timestamp) rows. Over ``warn_after`` it warns, over
``error_after`` it is critical; an empty table or NULL is "never loaded".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, ClassVar

from psycopg2 import sql as pgsql

from watchdog.durations import format_age, format_duration
from watchdog.rule import Rule, Severity
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, Observation, RuleError, RuleType, SourceUnavailable
from watchdog.ruletypes.freshness_options import FreshnessCheck, FreshnessOptions
from watchdog.times import to_text


class CheckError(RuleError):
    pass


class CheckUnavailable(CheckError, SourceUnavailable):
    """The warehouse did not answer the check (reported once for the source)."""


def _as_datetime(value: Any, check: FreshnessCheck) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=check.timezone)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=check.timezone)
    raise CheckError(f"check '{check.name}': expected a timestamp, got {type(value).__name__} {value!r}")


def _last_loads(check: FreshnessCheck, source: Any) -> list[tuple[str, datetime | None]]:
    """(group, last load) pairs for one check."""
    from watchdog.sources.postgres import QueryError

    try:
        if check.table is not None:
            assert check.loaded_at is not None
            statement = pgsql.SQL("select max({}) from {}").format(
                pgsql.Identifier(check.loaded_at), pgsql.Identifier(*check.table))
            rows = source.query(statement)
        else:
            assert check.sql is not None
            rows = source.query(check.sql)
    except QueryError as exc:
        error = CheckUnavailable if isinstance(exc, SourceUnavailable) else CheckError
        raise error(f"check '{check.name}': {exc}") from None
    if not rows:
        return [(check.name, None)]
    width = len(rows[0])
    if width == 1:
        return [(check.name, _as_datetime(rows[0][0], check))]
    if width == 2:
        return [(str(group), _as_datetime(value, check)) for group, value in rows]
    raise CheckError(f"check '{check.name}': the query returns {width} columns; "
                     "return one timestamp, or (group, timestamp) rows")


def judge(check: FreshnessCheck, group: str, last: datetime | None, now: datetime) -> tuple[Finding | None, dict[str, Any]]:
    """The finding for one last load (None when fresh) and its status facts."""
    fact: dict[str, Any] = {"name": group, "check": check.name, "last_loaded": to_text(last)}
    thresholds = f"warn after {format_duration(check.warn_after)}"
    if check.error_after is not None:
        thresholds += f", critical after {format_duration(check.error_after)}"
    if last is None:
        fact["age"] = None
        details: dict[str, Any] = {"check": check.name, "age": "never", "last_loaded": "never",
                   "warn_after": format_duration(check.warn_after),
                   "error_after": format_duration(check.error_after) if check.error_after else ""}
        severity = Severity.CRITICAL if check.error_after is not None else Severity.WARNING
        return Finding(group=group, value=None, severity=severity, details=details,
                       summary=f"{group} has never been loaded (no rows, or NULL load time); {thresholds}"), fact
    age = now - last
    fact["age"] = format_age(age)
    if age <= check.warn_after:
        return None, fact
    severity = Severity.CRITICAL if check.error_after is not None and age > check.error_after else Severity.WARNING
    details = {"check": check.name, "age": format_age(age), "last_loaded": to_text(last),
               "warn_after": format_duration(check.warn_after),
               "error_after": format_duration(check.error_after) if check.error_after else ""}
    summary = f"{group} last loaded {format_age(age)} ago ({to_text(last)}); {thresholds}"
    return Finding(group=group, value=round(age.total_seconds()), severity=severity, details=details, summary=summary,
                   since=last), fact


def fresh_now(check: FreshnessCheck, group: str, last: datetime, now: datetime) -> Observation:
    """A fresh group as its resolution states it: its age now and its last load."""
    age = now - last
    details = {"check": check.name, "age": format_age(age), "last_loaded": to_text(last),
               "warn_after": format_duration(check.warn_after),
               "error_after": format_duration(check.error_after) if check.error_after else ""}
    return Observation(group=group, value=round(age.total_seconds()), details=details,
                       summary=f"{group} loaded {format_age(age)} ago now ({to_text(last)}); "
                               f"warn after {format_duration(check.warn_after)}")


class FreshnessRule(RuleType):
    name: ClassVar[str] = "freshness"
    source_type: ClassVar[str] = "postgres"
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"check", "age", "last_loaded", "warn_after", "error_after"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> FreshnessOptions:
        return FreshnessOptions.from_mapping(data)

    @classmethod
    def evaluate_one(cls, rule: Rule, source: Any, now: datetime) -> Evaluation:
        options: FreshnessOptions = rule.options
        findings: list[Finding] = []
        facts: list[dict[str, Any]] = []
        present: list[Observation] = []
        for check in options.checks:
            for group, last in _last_loads(check, source):
                finding, fact = judge(check, group, last, now)
                facts.append(fact)
                if finding is not None:
                    findings.append(finding)
                elif last is not None:
                    present.append(fresh_now(check, group, last, now))
        return Evaluation(findings=tuple(findings), facts={"checks": facts}, present=tuple(present))

    @classmethod
    def resolved_text(cls, rule: Rule, group: str, present: Observation | None) -> str:
        if present is None:
            return f"{group} is no longer returned by the rule's checks, so its freshness is unknown"
        return present.summary

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        out: dict[str, Evaluation | Exception] = {}
        for rule in rules:
            try:
                out[rule.name] = cls.evaluate_one(rule, source, ctx.now)
            except Exception as exc:  # one rule's failure is that rule's error, not the batch's
                out[rule.name] = exc
        return out
