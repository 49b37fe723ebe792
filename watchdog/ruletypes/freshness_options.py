"""Options of the ``freshness`` rule type: which load times to check, and how old is too old."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from watchdog import sqlcheck
from watchdog.durations import format_duration
from watchdog.rule import Severity
from watchdog.ruletypes import options as opt
from watchdog.ruletypes.base import OptionsError, Path
from watchdog.ruletypes.freshness_sql import SqlTextError, is_column, parse_table
from watchdog.ruletypes.learned import Learn, learn_options

DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class Tier:
    """Past ``after``, a last load is stale at ``severity`` (None: the rule's severity)."""

    after: timedelta
    severity: Severity | None
    label: str  # "warn", "critical" or "alert", for messages


# The levels of a learned cadence (the ages are learned, so ``after`` is not used).
LEARNED_WARN = Tier(timedelta(0), Severity.WARNING, "warn")
LEARNED_CRITICAL = Tier(timedelta(0), Severity.CRITICAL, "critical")


@dataclass(frozen=True)
class FreshnessCheck:
    """One load time to watch: ``table`` + ``loaded_at`` (optionally per ``group_by``), or ``sql``.

    ``tiers`` are ascending by age; ``expect`` lists the groups a grouped
    check must report, or ``expect_sql`` returns them.
    """

    name: str
    tiers: tuple[Tier, ...]
    timezone: ZoneInfo
    table: tuple[str, ...] | None = None  # (schema, table) or (table,), exactly as written
    loaded_at: str | None = None  # a column name, or an SQL expression
    group_by: str | None = None  # a column name, or an SQL expression
    filter: str | None = None  # an SQL where-clause expression
    sql: str | None = None
    expect: tuple[str, ...] | None = None
    expect_sql: str | None = None
    learn: Learn | None = None  # learn the cadence; then ``tiers`` may be empty

    @property
    def expects(self) -> bool:
        return self.expect is not None or self.expect_sql is not None

    def tier_for(self, age: timedelta) -> Tier | None:
        """The highest tier ``age`` is past (None: fresh)."""
        past = [tier for tier in self.tiers if age > tier.after]
        return past[-1] if past else None

    @property
    def top(self) -> Tier:
        """The highest tier: the level of a last load that cannot be told (never loaded, future, could not check)."""
        return self.tiers[-1] if self.tiers else LEARNED_CRITICAL

    @property
    def first(self) -> Tier:
        """The mildest tier: the level of a group no longer reported whose age passes no tier."""
        return self.tiers[0] if self.tiers else LEARNED_WARN

    def describe_tiers(self) -> str:
        """``warn after 2h, critical after 6h``."""
        return ", ".join(f"{tier.label} after {format_duration(tier.after)}" for tier in self.tiers)

    def threshold(self, label: str) -> str:
        """The age of the tier called ``label`` (``warn`` or ``critical``) as text, or ''."""
        return next((format_duration(t.after) for t in self.tiers if t.label == label), "")


@dataclass(frozen=True)
class FreshnessOptions:
    source: str
    checks: tuple[FreshnessCheck, ...]


def tiers(warn: timedelta | None, error: timedelta | None, severity: Severity | None, path: Path,
          learns: bool = False) -> tuple[Tier, ...]:
    """The tiers of a check. With both ages: warning then critical. With one: the rule's ``severity``
    when it sets one, else warning for ``warn_after`` and critical for ``error_after``. With neither, none
    when the check ``learns`` its cadence. Raises OptionsError."""
    if warn is not None and error is not None:
        if error <= warn:
            raise OptionsError(path + ("error_after",), f"error_after ({error}) must be longer than warn_after ({warn})")
        return (Tier(warn, Severity.WARNING, "warn"), Tier(error, Severity.CRITICAL, "critical"))
    if warn is not None:
        return (Tier(warn, severity, "warn" if severity in (None, Severity.WARNING) else "alert"),)
    if error is not None:
        level = severity or Severity.CRITICAL
        return (Tier(error, level, "critical" if level is Severity.CRITICAL else "alert"),)
    if learns:
        return ()
    raise OptionsError(path, "give warn_after or error_after (or both), here or on the rule, or learn: {history: 28d}")


def _sql_text(raw: Mapping[str, Any], key: str, path: Path, expression: bool, functions: Collection[str]) -> str | None:
    """``raw[key]`` checked as one SQL expression (or one read-only query); raises OptionsError naming the key."""
    text = raw.get(key)
    if text is None:
        return None
    if not expression:
        problem = sqlcheck.check_query(text, functions)
        if problem is not None:
            raise OptionsError(path + (key,), f"must be one read-only query: {problem}")
    elif not is_column(text):
        problem = sqlcheck.check_expression(text, functions)
        if problem is not None:
            what = "one read-only SQL expression (a where-clause)" if key == "filter" else \
                "a column name or one read-only SQL expression"
            raise OptionsError(path + (key,), f"must be {what}: {problem}")
    return str(text)


def _table(raw: Mapping[str, Any], path: Path) -> tuple[str, ...] | None:
    if "table" not in raw:
        return None
    if "schema" in raw:  # two keys: each name taken exactly as written, dots and all
        return (str(raw["schema"]), str(raw["table"]))
    try:
        return parse_table(str(raw["table"]))
    except SqlTextError as exc:
        raise OptionsError(path + ("table",), str(exc)) from None


def _check(raw: Mapping[str, Any], path: Path, rule: Mapping[str, Any], zone: ZoneInfo,
           functions: Collection[str]) -> FreshnessCheck:
    warn = opt.optional_duration(raw, "warn_after") or opt.optional_duration(rule, "warn_after")
    error = opt.optional_duration(raw, "error_after") or opt.optional_duration(rule, "error_after")
    severity = Severity(rule["severity"]) if "severity" in rule else None
    where = path if ("error_after" in raw or "warn_after" in raw) else ()
    learn_raw = raw.get("learn", rule.get("learn"))
    learn = learn_options(learn_raw, path + ("learn",) if "learn" in raw else ("learn",)) \
        if isinstance(learn_raw, Mapping) else None
    check_tiers = tiers(warn, error, severity, where, learns=learn is not None)
    expect = raw.get("expect")
    expect_list = tuple(str(v) for v in expect) if isinstance(expect, list) else None
    expect_sql = (_sql_text(expect, "sql", path + ("expect",), False, functions) if isinstance(expect, Mapping)
                  else None)
    group_by = _sql_text(raw, "group_by", path, True, functions)
    sql = _sql_text(raw, "sql", path, False, functions)
    if expect is not None and sql is None and group_by is None:
        raise OptionsError(path + ("expect",), "expect needs a grouped check: add group_by, or use sql returning "
                                               "(group, timestamp) rows")
    check_zone = opt.timezone(raw["timezone"], path + ("timezone",)) if "timezone" in raw else zone
    return FreshnessCheck(
        name=str(raw["name"]), tiers=check_tiers, timezone=check_zone, table=_table(raw, path),
        loaded_at=_sql_text(raw, "loaded_at", path, True, functions), group_by=group_by,
        filter=_sql_text(raw, "filter", path, True, functions), sql=sql, expect=expect_list, expect_sql=expect_sql,
        learn=learn)


def from_mapping(data: Mapping[str, Any], functions: Collection[str] = ()) -> FreshnessOptions:
    """The options of a validated freshness rule (its SQL may call ``functions`` too); raises OptionsError naming the key."""
    zone = opt.timezone(data.get("timezone", DEFAULT_TIMEZONE), ("timezone",))
    checks = []
    seen: set[str] = set()
    for index, raw in enumerate(data["checks"]):
        path: Path = ("checks", index)
        if raw["name"] in seen:
            raise OptionsError(path + ("name",), f"check name '{raw['name']}' is used twice in this rule")
        seen.add(raw["name"])
        checks.append(_check(raw, path, data, zone, functions))
    return FreshnessOptions(source=str(data["source"]), checks=tuple(checks))
