"""``freshness``: how long ago each warehouse table or source was last loaded.

A check's last load is ``max(loaded_at)`` of a table (per ``group_by`` value
when given), or what its SQL returns: one timestamp, or (group, timestamp)
rows. Its age is the database's ``now()`` minus the last load, read in the
same statement, so the watchdog host's clock never matters.

What never reads as fresh:
- a check that fails (SQL error, missing table, statement timeout) is a
  "could not check" finding of its own; the rule's other checks run as usual,
  and the groups the failed check was alerting on keep their state;
- an expected group with no row is "never loaded";
- a group that was alerting and has no row any more stays alerting as "no
  longer reported" (it resolves when it loads again, or when it is no longer
  expected);
- a last load in the future (beyond ``FUTURE_TOLERANCE``) is "clock skew or
  bad data", since it hides the real age.
Groups are named ``check/group``, so two grouped checks never merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar

from psycopg2 import sql as pgsql

from watchdog.baseline import Cadence, Learning
from watchdog.durations import format_age
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
from watchdog.ruletypes.freshness_options import (
    LEARNED_CRITICAL,
    LEARNED_WARN,
    FreshnessCheck,
    FreshnessOptions,
    Tier,
    from_mapping,
)
from watchdog.ruletypes.freshness_sql import column_or_expression, expected_statement, table_statement
from watchdog.times import from_text, to_text

# A last load this far past the database's now() is a finding; less is ordinary clock jitter between hosts.
FUTURE_TOLERANCE = timedelta(minutes=5)
NULL_GROUP = "(null)"  # the group name of a NULL group value


class CheckError(RuleError):
    """A check returned something that is not a load time."""


class CheckUnavailable(CheckError, SourceUnavailable):
    """The warehouse did not answer the check: the rule's failure, reported once for the source."""


# The status of each last load, as shown in facts (``watchdog status``) and the {status} placeholder.
FRESH, STALE, NEVER, GONE, FUTURE, FAILED = "fresh", "stale", "never loaded", "no longer reported", "in the future", "could not check"
LEARNING = "learning"  # fresh by any fixed threshold, and its cadence not learned yet


@dataclass(frozen=True)
class Reading:
    """What one check read: the database's time and the last load per key (None key: an ungrouped check)."""

    now: datetime
    loads: dict[str | None, datetime | None]
    grouped: bool


def group_name(check: FreshnessCheck, key: str | None) -> str:
    """The alert group: the check's name, or ``check/key`` for a grouped check."""
    return check.name if key is None else f"{check.name}/{key}"


def _belongs(group: str, check: FreshnessCheck) -> bool:
    return group == check.name or group.startswith(check.name + "/")


def _as_datetime(value: Any, check: FreshnessCheck) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=check.timezone)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=check.timezone)
    raise CheckError(f"expected a timestamp, got {type(value).__name__} {value!r}")


def statement(check: FreshnessCheck) -> pgsql.Composable:
    """The query of one check (before ``read_at_now`` adds the database's time)."""
    from watchdog.sources.postgres import as_statement

    if check.table is not None:
        assert check.loaded_at is not None
        return table_statement(check.table, check.loaded_at, check.group_by, check.filter)
    assert check.sql is not None
    return as_statement(check.sql)


def read(check: FreshnessCheck, source: Any, expect: frozenset[str] | None = None) -> Reading:
    """The last load(s) of one check; raises QueryError (from the source) or CheckError.

    A table check with ``expect`` (given as ``expect``, not empty) reads only the expected groups, each
    through an index when one exists (see ``freshness_sql.expected_statement``); an expected group with
    no row is left out of the reading, as a grouped scan leaves it out.
    """
    if expect and check.table is not None and check.group_by is not None:
        assert check.loaded_at is not None
        answer = source.read_at_now(expected_statement(check.table, check.loaded_at, check.group_by, check.filter,
                                                       sorted(expect)))
        return Reading(answer.now, {str(key): _as_datetime(value, check) for key, value in answer.rows
                                    if value is not None}, grouped=True)
    answer = source.read_at_now(statement(check))
    if answer.columns == 1:
        if len(answer.rows) > 1:
            raise CheckError(f"the query returns {len(answer.rows)} rows of one column; return one timestamp, "
                             "or (group, timestamp) rows")
        value = answer.rows[0][0] if answer.rows else None
        return Reading(answer.now, {None: _as_datetime(value, check)}, grouped=False)
    if answer.columns != 2:
        raise CheckError(f"the query returns {answer.columns} columns; return one timestamp, or (group, timestamp) rows")
    loads: dict[str | None, datetime | None] = {}
    for key, value in answer.rows:
        name = NULL_GROUP if key is None else str(key)
        last = _as_datetime(value, check)
        previous = loads.get(name)
        # A group returned twice counts by its newest load, as max() over its rows would.
        loads[name] = last if previous is None or (last is not None and last > previous) else previous
    return Reading(answer.now, loads, grouped=True)


def expected(check: FreshnessCheck, source: Any) -> frozenset[str] | None:
    """The groups the check must report (None: it expects nothing); raises QueryError or CheckError."""
    from watchdog.sources.postgres import as_statement

    if check.expect is not None:
        return frozenset(check.expect)
    if check.expect_sql is None:
        return None
    answer = source.read_at_now(as_statement(check.expect_sql))
    if answer.columns != 1:
        raise CheckError(f"the expect query returns {answer.columns} columns; return one column of group names")
    return frozenset(str(row[0]) for row in answer.rows if row[0] is not None)


# --- judging one last load -------------------------------------------------------------------------------------


def _subject(check: FreshnessCheck, key: str | None) -> str:
    return check.name if key is None else f"{key} (check {check.name})"


def _details(check: FreshnessCheck, key: str | None, status: str, age: str, last: datetime | None,
             now: datetime, model: Cadence | Learning | None = None) -> dict[str, Any]:
    return {"check": check.name, "key": key or "", "status": status, "age": age,
            "last_loaded": to_text(last) if last else "never", "db_now": to_text(now),
            "warn_after": check.threshold("warn"), "error_after": check.threshold("critical"),
            "learned": "" if model is None else model.describe()}


def _fact(check: FreshnessCheck, key: str | None, status: str, last: datetime | None,
          age: timedelta | None, error: str | None = None, model: Cadence | Learning | None = None) -> dict[str, Any]:
    fact: dict[str, Any] = {"name": group_name(check, key), "check": check.name, "status": status,
                            "last_loaded": to_text(last), "age": format_age(age) if age is not None else None}
    if error is not None:
        fact["error"] = error
    if model is not None:
        fact["learned"] = model.describe()
    return fact


def _finding(check: FreshnessCheck, key: str | None, tier: Tier, value: float | None, summary: str,
             details: dict[str, Any], since: datetime | None = None) -> Finding:
    tiers = check.describe_tiers()
    return Finding(group=group_name(check, key), value=value, severity=tier.severity,
                   summary=f"{summary}; {tiers}" if tiers else summary, details=details, since=since)


def _learned_tier(model: Cadence | Learning | None, age: timedelta) -> Tier | None:
    """The level a learned cadence gives ``age`` (None: on time, learning, or no learning)."""
    if not isinstance(model, Cadence):
        return None
    level = model.level(age)
    return None if level is None else (LEARNED_CRITICAL if level == "critical" else LEARNED_WARN)


def judge(check: FreshnessCheck, key: str | None, last: datetime | None, now: datetime,
          *, expected_missing: bool = False, model: Cadence | Learning | None = None) -> tuple[Finding | None, dict[str, Any]]:
    """The finding for one last load (None when fresh) and its status fact, ages measured at the database's ``now``.

    ``model`` is the check's learned cadence (or learning) for this last load:
    the fixed tiers and the learned one both judge, and the more severe wins.
    """
    subject = _subject(check, key)
    if last is None:
        why = "expected, but the check returns no row for it" if expected_missing else "no rows, or a NULL load time"
        return (_finding(check, key, check.top, None, f"{subject} has never been loaded ({why})",
                         _details(check, key, NEVER, "never", None, now)),
                _fact(check, key, NEVER, None, None))
    age = now - last
    if age < -FUTURE_TOLERANCE:
        ahead = format_age(-age)
        summary = (f"{subject} last load is {ahead} in the future ({to_text(last)}; database time {to_text(now)}): "
                   "clock skew or bad data, and its real age cannot be told")
        return (_finding(check, key, check.top, round(age.total_seconds()), summary,
                         _details(check, key, FUTURE, f"-{ahead}", last, now)),
                _fact(check, key, FUTURE, last, age))
    age = max(age, timedelta(0))  # within the tolerance: loaded just now
    fixed, learnt = check.tier_for(age), _learned_tier(model, age)
    tier = fixed if learnt is None or (fixed is not None and _rank(fixed) >= _rank(learnt)) else learnt
    if tier is None:
        return None, _fact(check, key, LEARNING if isinstance(model, Learning) else FRESH, last, age, model=model)
    if tier is learnt:
        assert isinstance(model, Cadence)
        summary = f"{subject} {model.describe()}; last load {format_age(age)} ago ({to_text(last)})"
    else:
        summary = f"{subject} last loaded {format_age(age)} ago ({to_text(last)})"
    return (_finding(check, key, tier, round(age.total_seconds()), summary,
                     _details(check, key, STALE, format_age(age), last, now, model), since=last),
            _fact(check, key, STALE, last, age, model=model))


def _rank(tier: Tier) -> int:
    return tier.severity.rank if tier.severity is not None else Severity.WARNING.rank


def vanished(check: FreshnessCheck, key: str, last: datetime | None, now: datetime) -> tuple[Finding, dict[str, Any]]:
    """A group with no row any more that must not read as fresh: its last load seen, aged at the database's ``now``."""
    subject = _subject(check, key)
    if last is None:
        return (_finding(check, key, check.top, None, f"{subject} is no longer reported (the check returns no row for it)",
                         _details(check, key, GONE, "unknown", None, now)),
                _fact(check, key, GONE, None, None))
    age = max(now - last, timedelta(0))
    tier = check.tier_for(age) or check.first  # missing is never fresh
    summary = (f"{subject} is no longer reported (the check returns no row for it); its last load seen was "
               f"{format_age(age)} ago ({to_text(last)})")
    return (_finding(check, key, tier, round(age.total_seconds()), summary,
                     _details(check, key, GONE, format_age(age), last, now), since=last),
            _fact(check, key, GONE, last, age))


def fresh_now(check: FreshnessCheck, key: str | None, last: datetime, now: datetime,
              model: Cadence | Learning | None = None) -> Observation:
    """A fresh group as its resolution states it: its age now, by the database's clock, and its last load."""
    age = max(now - last, timedelta(0))
    limits = "; ".join(t for t in (check.describe_tiers(), model.describe() if model is not None else "") if t)
    return Observation(group=group_name(check, key), value=round(age.total_seconds()),
                       details=_details(check, key, FRESH, format_age(age), last, now, model),
                       summary=f"{_subject(check, key)} loaded {format_age(age)} ago now ({to_text(last)}); {limits}")


def could_not_check(check: FreshnessCheck, reason: str) -> tuple[Finding, dict[str, Any]]:
    """The finding of a check that failed: named by the check, with the reason, at the check's highest level."""
    details = {"check": check.name, "key": "", "status": FAILED, "age": "unknown", "last_loaded": "unknown",
               "db_now": "", "warn_after": check.threshold("warn"), "error_after": check.threshold("critical"),
               "error": reason, "learned": ""}
    finding = Finding(group=check.name, value=None, severity=check.top.severity, details=details,
                      summary=f"could not check {check.name}: {reason}")
    return finding, _fact(check, None, FAILED, None, None, error=reason)


# --- one rule ----------------------------------------------------------------------------------------------------


@dataclass
class _Result:
    findings: list[Finding]
    facts: list[dict[str, Any]]
    kept: list[str]
    present: list[Observation]

    def add(self, finding: Finding | None, fact: dict[str, Any]) -> None:
        if finding is not None:
            self.findings.append(finding)
        self.facts.append(fact)

    def judged(self, check: FreshnessCheck, key: str | None, last: datetime | None, now: datetime,
               model: Cadence | Learning | None = None) -> None:
        """Add the verdict on one last load: a finding, or what a resolution would state."""
        finding, fact = judge(check, key, last, now, model=model)
        self.add(finding, fact)
        if finding is None and last is not None:
            self.present.append(fresh_now(check, key, last, now, model))


def history(check: FreshnessCheck, source: Any, since: pgsql.Composable | None = None,
            until: pgsql.Composable = learned.DB_NOW, limit: int = learned.HISTORY_ROWS
            ) -> dict[str | None, list[datetime]]:
    """A table check's distinct load minutes in [``since``, ``until``] (default: within its ``learn.history``
    before the database's now()), by group key (None: ungrouped), newest first.

    One bounded query (``limit`` rows, the source's statement timeout); raises QueryError or CheckError.
    """
    assert check.learn is not None and check.table is not None and check.loaded_at is not None
    group = column_or_expression(check.group_by) if check.group_by is not None else None
    rows = source.query(learned.history_statement(
        check.table, column_or_expression(check.loaded_at), group, check.filter,
        learned.before_now(check.learn.history) if since is None else since, until, limit))
    out: dict[str | None, list[datetime]] = {}
    for key, value in rows:
        when = _as_datetime(value, check)
        if when is not None:
            out.setdefault(None if check.group_by is None else (NULL_GROUP if key is None else str(key)), []).append(when)
    return out


def _learn(check: FreshnessCheck, source: Any, book: learned.Book | None, reading: Reading
           ) -> tuple[dict[str | None, Cadence | Learning], str | None]:
    """The learned cadence of each key of ``reading`` (and why the source's history could not be read, if so)."""
    from watchdog.sources.postgres import QueryError

    if check.learn is None or book is None:
        return {}, None
    fetched: dict[str | None, list[datetime]] | None = None
    problem = None
    items = {key: group_name(check, key) for key, last in reading.loads.items() if last is not None}
    if check.table is not None and any(book.due(item, reading.now) for item in items.values()):
        try:
            fetched = history(check, source)
        except (QueryError, CheckError) as exc:  # learn from what watchdog observed; try again after REFETCH
            problem = f"could not read the table's history: {exc}"
            fetched = {}
    models: dict[str | None, Cadence | Learning] = {}
    for key, item in items.items():
        last = reading.loads[key]
        assert last is not None
        if last - reading.now > FUTURE_TOLERANCE:
            continue  # a last load in the future is its own finding; nothing to learn from it
        models[key] = learned.cadence(book, item, last, reading.now, check.learn, check.timezone,
                                      None if fetched is None else fetched.get(key, []))
    return models, problem


def _check_once(check: FreshnessCheck, source: Any, active: frozenset[str], seen: Mapping[str, datetime | None],
                out: _Result, book: learned.Book | None = None) -> None:
    """Judge one check into ``out``; a failure of this check is its own finding (SourceUnavailable propagates)."""
    from watchdog.sources.postgres import QueryError

    mine = {g for g in active if _belongs(g, check)}
    try:
        if check.table is not None and check.group_by is not None:  # grouped by its definition: expect first
            expect = expected(check, source)
            reading = read(check, source, expect)
        else:
            reading = read(check, source)
            expect = expected(check, source) if reading.grouped else None
    except SourceUnavailable as exc:
        raise CheckUnavailable(f"check '{check.name}': {exc}") from None
    except (QueryError, CheckError) as exc:
        out.add(*could_not_check(check, str(exc)))
        for group in sorted(mine - {check.name}):  # unknown now: they keep alerting as they were
            out.kept.append(group)
            out.facts.append({"name": group, "check": check.name, "status": FAILED,
                              "last_loaded": to_text(seen.get(group)), "age": None})
        return
    models, problem = _learn(check, source, book, reading)
    if problem is not None:
        out.facts.append({"name": check.name, "check": check.name, "status": "learning from what watchdog observes",
                          "error": problem, "last_loaded": None, "age": None})
    if not reading.grouped:
        if check.expects:
            out.add(*could_not_check(check, "expect needs a grouped check, but the query returns one column"))
            return
        out.judged(check, None, reading.loads[None], reading.now, models.get(None))
        return
    if not reading.loads and not check.expects:
        out.add(*judge(check, None, None, reading.now))  # a grouped check with no row at all: never loaded
        return
    out.present.append(Observation(group=check.name, value=len(reading.loads),
                                   summary=f"check {check.name} runs again: {len(reading.loads)} group(s) returned"))
    for key, last in sorted(reading.loads.items(), key=lambda kv: str(kv[0])):
        out.judged(check, key, last, reading.now, models.get(key))
    for key in sorted((expect or frozenset()) - set(reading.loads)):
        group = group_name(check, key)
        if seen.get(group) is not None:
            out.add(*vanished(check, key, seen[group], reading.now))
        else:
            out.add(*judge(check, key, None, reading.now, expected_missing=True))
    for group in sorted(mine):
        key = group.removeprefix(check.name + "/") if group != check.name else None
        if key is None or key in reading.loads or (expect is not None and key in expect):
            continue
        if expect is not None:  # no row and no longer expected: the user retired it, so it resolves
            out.present.append(Observation(group=group, value=None, summary=(
                f"{key} (check {check.name}) is no longer expected, and the check returns no row for it")))
            continue
        out.add(*vanished(check, key, seen.get(group), reading.now))


def _seen(facts: Mapping[str, Any]) -> dict[str, datetime | None]:
    """The last load of each group as the previous evaluation saw it."""
    out: dict[str, datetime | None] = {}
    for fact in facts.get("checks", ()):
        if isinstance(fact, Mapping) and isinstance(fact.get("name"), str):
            out[fact["name"]] = from_text(fact.get("last_loaded"))
    return out


class FreshnessRule(RuleType):
    name: ClassVar[str] = "freshness"
    source_type: ClassVar[str] = "postgres"
    firing_word: ClassVar[str] = "stale"
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"check", "key", "status", "age", "last_loaded", "db_now", "warn_after", "error_after", "error", "learned"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> FreshnessOptions:
        return from_mapping(data, grants.sql_functions)

    @classmethod
    def evaluate_one(cls, rule: Rule, source: Any, ctx: EvalContext) -> Evaluation:
        """Every check of ``rule``, each its own unit of failure; raises SourceUnavailable when the database is unreachable."""
        options: FreshnessOptions = rule.options
        active = ctx.active.get(rule.name, frozenset())
        seen = _seen(ctx.facts.get(rule.name, {}))
        out = _Result([], [], [], [])
        book = learned.Book(ctx.baselines, rule.name) if any(c.learn for c in options.checks) else None
        try:
            for check in options.checks:
                _check_once(check, source, active, seen, out, book)
        finally:
            if book is not None:
                book.flush(ctx.now)
        return Evaluation(findings=tuple(out.findings), kept=tuple(out.kept), facts={"checks": out.facts},
                          present=tuple(out.present))

    @classmethod
    def resolved_text(cls, rule: Rule, group: str, present: Observation | None) -> str:
        if present is None:  # only a rule edit removes a group without a word: a vanished group stays firing
            return f"{group} is no longer checked by this rule (its check was removed or changed), so its freshness is unknown"
        return present.summary

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return each_rule(rules, lambda rule: cls.evaluate_one(rule, source, ctx))
