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
from decimal import Decimal
from typing import Any, ClassVar

from watchdog.rule import Rule, Severity
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
    rows = source.query(check.sql)
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


def _mildest(threshold: Threshold) -> Severity | None:
    return threshold.levels[0].severity


def judge(check: ValueCheck, group: str, value: float | None) -> tuple[Finding | Observation, dict[str, Any]]:
    """The finding for one number, or its present value when within the threshold, and its status fact (pure)."""
    threshold = check.threshold
    fact: dict[str, Any] = {"group": group, "check": check.name, "value": value}
    details = {"check": check.name, "threshold": threshold.describe(), "sql": check.sql}
    if value is None:
        fact["status"] = NO_VALUE
        return Finding(group=group, value=None, severity=_mildest(threshold), details={**details, "status": NO_VALUE},
                       summary=f"{group} {NO_VALUE} (no rows, or NULL); {threshold.describe()}"), fact
    level = threshold.classify(value)
    fact["status"] = "ok" if level is None else "breach"
    if level is None:
        return Observation(group=group, value=value, details={**details, "status": "ok"},
                           summary=f"{group} is {value:.4g} now ({threshold.describe()})"), fact
    return Finding(group=group, value=value, severity=level.severity, details={**details, "status": "breach"},
                   summary=f"{group} is {value:.4g} ({threshold.describe()})"), fact


def _other(check: ValueCheck, group: str, status: str, reason: str = "") -> tuple[Finding, dict[str, Any]]:
    """A finding that is not a comparison: could not check, no longer reported."""
    text = f"{status}: {group}" + (f": {reason}" if reason else "")
    details = {"check": check.name, "threshold": check.threshold.describe(), "sql": check.sql, "status": status}
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

    for check in options.checks:
        try:
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
        for key, raw in pairs:
            group = group_name(check, key)
            if group in reported:
                add(_other(check, group, FAILED, "the query returns this group twice"))
                continue
            reported.add(group)
            observed.append(group)
            try:
                add(judge(check, group, number(raw)))
            except CheckError as exc:  # one bad row is its own group's finding
                add(_other(check, group, FAILED, str(exc)))
        for group in sorted(g for g in known if _is_row(g, check) and g not in reported):
            add(_other(check, group, GONE, "it was reported before and is missing from the query's rows"))
            observed.append(group)
    return Evaluation(findings=tuple(findings), kept=tuple(kept), present=tuple(present),
                      observed=tuple(sorted(set(observed))), facts={"values": facts})


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
