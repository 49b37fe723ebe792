"""Per-table health of DMS tasks, from DescribeTableStatistics answers.

A task can stay ``running`` while a table has stopped replicating (DMS's
default ``TableErrorPolicy: SUSPEND_TABLE`` puts it in ``Table error``), or while
validation finds rows that differ. This module turns one task's table
statistics into findings, one per table, grouped ``task/schema.table``.

Everything in an AWS answer is untrusted data: names and states are cut to a
bounded length and stripped of control characters here (cut by
``escape.cut``); escaping for Slack, logs or a terminal is the sink's job
(``watchdog.escape``), never this module's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from watchdog import escape
from watchdog.rule import Severity
from watchdog.ruletypes.base import Finding, Observation

MAX_NAME = 128  # DMS allows 128-character identifiers; anything longer is not a name we should print whole
MAX_TEXT = 200
ERROR_STATES = frozenset({"table error"})
CANCELLED_STATES = frozenset({"table cancelled"})
VALIDATION_BAD_STATES = frozenset({"mismatched records", "table error", "error", "suspended records", "no primary key"})
COUNTERS = (("Inserts", "inserts"), ("Updates", "updates"), ("Deletes", "deletes"), ("Ddls", "DDLs"),
            ("FullLoadRows", "full load rows"), ("FullLoadErrorRows", "full load error rows"))
VALIDATION_COUNTERS = (("ValidationFailedRecords", "failed"), ("ValidationSuspendedRecords", "suspended"),
                       ("ValidationPendingRecords", "pending"))
TABLE_SEPARATOR = "/"


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one line of plain text at most ``limit`` characters (control and format characters dropped)."""
    text = "".join(" " if ch in "\r\n\t" else ch for ch in str(value if value is not None else ""))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return escape.cut(" ".join(text.split()), limit)  # cut on a character boundary, never inside a combining sequence


def count(row: Mapping[str, Any], key: str) -> int:
    """A counter of a TableStatistics row; anything not a non-negative integer counts as 0."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0
    return int(min(value, 2**63 - 1))


def table_name(row: Mapping[str, Any]) -> tuple[str, str]:
    """``(schema, table)`` of a row, cleaned for display and grouping."""
    return clean(row.get("SchemaName"), MAX_NAME), clean(row.get("TableName"), MAX_NAME)


def table_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """``(schema, table)`` exactly as DMS named them: what ReloadTables is given back (never shown unclean)."""
    return str(row.get("SchemaName") or ""), str(row.get("TableName") or "")


def shown(tables: Iterable[Sequence[str]]) -> list[str]:
    """``schema.table`` of each ``(schema, table)`` pair, cleaned for display."""
    return [f"{clean(schema, MAX_NAME)}.{clean(table, MAX_NAME)}" for schema, table in tables]


def group(task: str, schema: str, table: str) -> str:
    return f"{task}{TABLE_SEPARATOR}{schema}.{table}"


def task_of(group_name: str) -> str:
    """The task part of a ``task/...`` group (task identifiers never hold ``/``)."""
    return group_name.split(TABLE_SEPARATOR, 1)[0]


def conditions(row: Mapping[str, Any], alert_on: frozenset[str]) -> list[str]:
    """Which of ``alert_on`` (error, cancelled, validation_failed) the table meets now."""
    state = clean(row.get("TableState")).lower()
    met = []
    if "error" in alert_on and (state in ERROR_STATES or "suspend" in state):
        met.append("error")
    if "cancelled" in alert_on and state in CANCELLED_STATES:
        met.append("cancelled")
    validation = clean(row.get("ValidationState")).lower()
    if "validation_failed" in alert_on and (count(row, "ValidationFailedRecords") > 0
                                            or count(row, "ValidationSuspendedRecords") > 0
                                            or validation in VALIDATION_BAD_STATES):
        met.append("validation_failed")
    return met


def in_error(row: Mapping[str, Any]) -> bool:
    """The table has stopped replicating (what a reload fixes)."""
    return bool(conditions(row, frozenset({"error"})))


def counters_text(row: Mapping[str, Any]) -> str:
    parts = [f"{label} {count(row, key)}" for key, label in COUNTERS]
    validation = clean(row.get("ValidationState"), 60)
    if validation and validation.lower() != "not enabled":
        parts.append(f"validation {validation}: " + ", ".join(f"{count(row, k)} {label}" for k, label in VALIDATION_COUNTERS))
    return ", ".join(parts)


def details(task: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The message placeholders of one table."""
    schema, table = table_name(row)
    return {"task": task, "schema": schema, "table": table, "table_state": clean(row.get("TableState"), 60),
            "validation_state": clean(row.get("ValidationState"), 60),
            **{label.replace(" ", "_").lower(): count(row, key) for key, label in COUNTERS},
            **{f"validation_{label}": count(row, key) for key, label in VALIDATION_COUNTERS}}


def findings(task: str, rows: Sequence[Mapping[str, Any]], alert_on: frozenset[str],
             active: Iterable[str]) -> list[Finding]:
    """One finding per table of ``task`` that meets ``alert_on``, plus one per active table group DMS no longer reports."""
    out: list[Finding] = []
    seen: set[str] = set()
    for row in rows:
        schema, table = table_name(row)
        name = group(task, schema, table)
        seen.add(name)
        met = conditions(row, alert_on)
        if not met:
            continue
        d = details(task, row)
        where = f"table {schema}.{table} of task {task}"
        if "error" in met or "cancelled" in met:
            summary = f"{where} is in state {d['table_state']} and no longer replicating ({counters_text(row)})"
            severity = Severity.CRITICAL if "error" in met else Severity.WARNING
            value: str | int = d["table_state"]
        else:
            summary = (f"{where} failed validation: {d['validation_failed']} record(s) failed, "
                       f"{d['validation_suspended']} suspended ({counters_text(row)})")
            severity = Severity.WARNING
            value = d["validation_failed"]
        out.append(Finding(group=name, value=value, summary=summary, severity=severity,
                           details={**d, "condition": ",".join(met)}))
    for name in sorted(set(active) - seen):
        out.append(gone(name, task, "DMS no longer reports this table (removed from the table mappings?)"))
    return out


def present(task: str, rows: Sequence[Mapping[str, Any]], groups: Iterable[str]) -> list[Observation]:
    """The state now of the tables among ``groups`` (alerting before) that no longer alert: what resolutions state."""
    wanted = set(groups)
    out = []
    for row in rows:
        schema, table = table_name(row)
        name = group(task, schema, table)
        if name in wanted:
            d = details(task, row)
            out.append(Observation(group=name, value=d["table_state"], details=d,
                                   summary=f"table {schema}.{table} of task {task} is {d['table_state'] or 'listed'} now "
                                           f"({counters_text(row)})"))
    return out


def gone(name: str, task: str, why: str) -> Finding:
    """A finding for an active table group whose present state is unknown: a finding, never a silent resolution."""
    return Finding(group=name, value="unknown", summary=f"{name.split(TABLE_SEPARATOR, 1)[-1]} of task {task}: {why}",
                   severity=Severity.WARNING, details={"task": task, "table_state": "unknown", "condition": "unknown"})
