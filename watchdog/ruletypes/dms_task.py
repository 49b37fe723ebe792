"""``dms_task``: AWS DMS replication tasks that failed or stopped, their tables, and their lag.

Groups are task identifiers. A task named in ``tasks`` that no longer exists
is a finding of its own. A task stopped normally (StopReason NORMAL,
FULL_LOAD_ONLY_FINISHED or STOPPED_AFTER_FULL_LOAD) only alerts with ``stopped``.
With ``tables:``, each table in error or failing validation is a group
``task/schema.table`` (see dms_tables); with ``lag:``, each running CDC task's
latency is a group ``task/lag`` (see dms_lag). Requests per evaluation: one
DescribeReplicationTasks, one DescribeTableStatistics per task (500 tables a
page), one GetMetricData for all tasks of the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from watchdog.rule import Rule, Severity
from watchdog.ruletypes import dms_lag, dms_tables
from watchdog.ruletypes.base import (
    NO_GRANTS,
    EvalContext,
    Evaluation,
    Finding,
    Grants,
    Observation,
    RuleError,
    RuleType,
    default_resolved_text,
    each_rule,
)
from watchdog.ruletypes.dms_options import DmsTaskOptions, LagCheck, TableCheck

NORMAL_STOP_REASONS = frozenset({"NORMAL", "FULL_LOAD_ONLY_FINISHED", "STOPPED_AFTER_FULL_LOAD"})
TRANSITIONAL = frozenset({"creating", "starting", "stopping", "modifying", "deleting", "moving", "testing", "ready"})
MAX_FAILURE_MESSAGE = 500  # DMS failure messages can be long stack-like texts; the log has the rest
NEVER_STARTED = frozenset({"creating", "ready", "deleting"})  # no table statistics to ask for
TABLE_FIELDS = frozenset({"schema", "table", "table_state", "validation_state", "inserts", "updates", "deletes", "ddls",
                          "full_load_rows", "full_load_error_rows", "validation_failed", "validation_suspended",
                          "validation_pending", "condition"})
LAG_FIELDS = frozenset({"latency", "source_latency", "target_latency", "incoming_changes"})


def stop_reason(task: Mapping[str, Any]) -> str:
    """StopReason without its prefix: ``Stop Reason FATAL_ERROR`` and ``STOP_REASON_FATAL_ERROR`` give ``FATAL_ERROR``."""
    text = str(task.get("StopReason") or "").strip()
    for prefix in ("Stop Reason ", "STOP_REASON_"):
        text = text.removeprefix(prefix)
    return text.replace(" ", "_").upper()


def condition(task: Mapping[str, Any], alert_on: frozenset[str]) -> str | None:
    """Which of ``alert_on`` the task meets now (None: it is fine)."""
    status = str(task.get("Status", ""))
    reason = stop_reason(task)
    if status == "failed" and "failed" in alert_on:
        return "failed"
    if status == "stopped":
        with_error = bool(reason and reason not in NORMAL_STOP_REASONS) or bool(task.get("LastFailureMessage"))
        if with_error and "stopped_with_error" in alert_on:
            return "stopped_with_error"
        if "stopped" in alert_on:
            return "stopped"
    if status != "running" and "any_not_running" in alert_on:
        return "any_not_running"
    return None


def identifier(task: Mapping[str, Any]) -> str:
    return str(task.get("ReplicationTaskIdentifier") or task.get("ReplicationTaskArn", ""))


def stopped_at(task: Mapping[str, Any]) -> datetime | None:
    """When DMS says the task stopped (ReplicationTaskStats.StopDate), if it says."""
    value = (task.get("ReplicationTaskStats") or {}).get("StopDate")
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def task_now(task: Mapping[str, Any]) -> Observation:
    """A task that meets no alert condition, as its resolution states it: its status now."""
    d = task_details(task)
    summary = f"task {d['task']} is {d['status']} now"
    if d["status"] == "stopped" and d["stop_reason"]:
        summary += f" (stop reason {d['stop_reason']})"
    return Observation(group=d["task"], value=d["status"], summary=summary, details=d)


def task_details(task: Mapping[str, Any]) -> dict[str, Any]:
    """The message placeholders of one task; AWS's texts as bounded plain lines (they are data)."""
    stats = task.get("ReplicationTaskStats") or {}
    return {"task": identifier(task), "arn": task.get("ReplicationTaskArn", ""),
            "status": dms_tables.clean(task.get("Status"), 40), "stop_reason": dms_tables.clean(stop_reason(task), 80),
            "last_failure": dms_tables.clean(task.get("LastFailureMessage"), MAX_FAILURE_MESSAGE),
            "tables_errored": dms_tables.count(stats, "TablesErrored")}


def missing(requested: Sequence[str] | None, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Requested identifiers or ARNs that match no task."""
    names = {identifier(t) for t in tasks} | {str(t.get("ReplicationTaskArn")) for t in tasks}
    return [name for name in (requested or ()) if name not in names]


def table_findings(tasks: Sequence[Mapping[str, Any]], check: TableCheck, source: Any,
                   active: Iterable[str]) -> tuple[list[Finding], dict[str, Any], set[str], list[Observation]]:
    """Findings of every table of ``tasks`` (one DescribeTableStatistics per task), per-task facts, the groups seen,
    and the present state of alerting groups that no longer alert (their resolutions state it)."""
    by_task: dict[str, set[str]] = {}
    for name in active:
        if "/" in name and not name.endswith("/" + dms_lag.LAG_GROUP):
            by_task.setdefault(dms_tables.task_of(name), set()).add(name)
    findings: list[Finding] = []
    facts: dict[str, Any] = {}
    seen: set[str] = set()
    now: list[Observation] = []
    for task in tasks:
        name, status = identifier(task), str(task.get("Status", ""))
        known = by_task.pop(name, set())
        if status in NEVER_STARTED:
            findings += [dms_tables.gone(g, name, f"state unknown while the task is {status}") for g in sorted(known)]
            continue
        try:
            rows = source.table_statistics(str(task.get("ReplicationTaskArn")))
        except RuleError as exc:
            findings.append(Finding(group=f"{name}/tables", value="unknown", severity=Severity.WARNING,
                                    summary=f"could not check the tables of task {name}: {exc}",
                                    details={"task": name, "condition": "unknown"}))
            findings += [dms_tables.gone(g, name, "state unknown: the table check failed") for g in sorted(known)]
            continue
        found = dms_tables.findings(name, rows, check.alert_on, known - {f"{name}/tables"})
        seen |= {dms_tables.group(name, *dms_tables.table_name(r)) for r in rows}
        now += dms_tables.present(name, rows, known - {f.group for f in found})
        if f"{name}/tables" in known:
            now.append(Observation(group=f"{name}/tables", value="ok", details={"task": name},
                                   summary=f"the tables of task {name} can be checked again ({len(rows)} tables)"))
        findings += found
        facts[name] = {"tables": len(rows), "in_error": sum(dms_tables.in_error(r) for r in rows),
                       "alerting": len(found)}
    for name, groups in sorted(by_task.items()):  # tables of tasks that no longer exist
        findings += [dms_tables.gone(g, name, "the task no longer exists") for g in sorted(groups - {f"{name}/tables"})]
    return findings, facts, seen, now


def lag_findings(tasks: Sequence[Mapping[str, Any]], check: LagCheck, source: Any, ctx: EvalContext,
                 active: Iterable[str]) -> tuple[list[Finding], dict[str, Any], list[Observation]]:
    """Lag findings of every running CDC task of ``tasks`` (one GetMetricData for all of them), per-task facts,
    and the latency now of tasks whose lag no longer alerts."""
    measured = [t for t in tasks if str(t.get("Status", "")) == "running"
                and str(t.get("MigrationType") or "cdc") in dms_lag.CDC_TYPES]
    findings: list[Finding] = []
    facts: dict[str, Any] = {}
    now: list[Observation] = []
    names = {identifier(t) for t in measured}
    statuses = {identifier(t): str(t.get("Status", "")) for t in tasks}
    for name in sorted(active):
        owner = name[:-len("/" + dms_lag.LAG_GROUP)] if name.endswith("/" + dms_lag.LAG_GROUP) else None
        if owner is not None and owner not in names:
            why = f"not measured while the task is {statuses[owner]}" if owner in statuses else "the task no longer exists"
            findings.append(dms_lag.unknown(owner, why))
    if not measured:
        return findings, facts, now
    try:
        instances = source.instance_identifiers([str(t.get("ReplicationInstanceArn", "")) for t in measured])
        targets = []
        for task in measured:
            instance = instances.get(str(task.get("ReplicationInstanceArn", "")))
            if instance is None:
                findings.append(dms_lag.unknown(identifier(task), "its replication instance was not found"))
                continue
            targets.append(dms_lag.Target(identifier(task), instance, dms_lag.resource_id(str(task.get("ReplicationTaskArn")))))
        answer = source.metric_data(dms_lag.queries(targets), ctx.now - check.lookback - dms_lag.PERIOD_DELTA,
                                    ctx.now) if targets else {}
    except RuleError as exc:
        return findings + [dms_lag.unknown(identifier(t), f"could not check: {exc}") for t in measured], facts, now
    for index, target in enumerate(targets):
        series = dms_lag.series_of(answer, index)
        found = dms_lag.assess(target, series, ctx.now, check)
        if found is not None:
            findings.append(found)
        else:
            observation = dms_lag.present(target, series, ctx.now)
            if observation is not None:
                now.append(observation)
        latest = {dms_lag.METRICS[k]: points[-1][1] for k, points in series.items() if points}
        facts[target.task] = latest
    return findings, facts, now


class DmsTaskRule(RuleType):
    name: ClassVar[str] = "dms_task"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"task", "status", "stop_reason", "last_failure", "tables_errored"}) | TABLE_FIELDS | LAG_FIELDS

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> DmsTaskOptions:
        return DmsTaskOptions.from_mapping(data)

    @classmethod
    def evaluate_one(cls, rule: Rule, source: Any, ctx: EvalContext) -> Evaluation:
        options: DmsTaskOptions = rule.options
        tasks = source.describe_tasks(options.tasks)
        findings = []
        present = []
        for task in tasks:
            met = condition(task, options.alert_on)
            if met is None:
                present.append(task_now(task))
                continue
            d = task_details(task)
            summary = f"task {d['task']} is {d['status']}"
            if d["stop_reason"]:
                summary += f" (stop reason {d['stop_reason']})"
            if d["last_failure"]:
                summary += f": {d['last_failure']}"
            if d["tables_errored"]:
                summary += f"; {d['tables_errored']} table(s) in error"
            findings.append(Finding(group=d["task"], value=d["status"], summary=summary, details={**d, "condition": met},
                                    since=stopped_at(task)))
        for name in missing(options.tasks, tasks):
            findings.append(Finding(group=name, value="missing", summary=f"task {name} does not exist (deleted or renamed?)",
                                    details={"task": name, "status": "missing", "stop_reason": "", "last_failure": ""}))
        facts: dict[str, Any] = {"tasks": {identifier(t): t.get("Status") for t in tasks}}
        active = ctx.active.get(rule.name, frozenset())
        observed: set[str] = set()
        if options.tables is not None:
            found, facts["tables"], seen, now = table_findings(tasks, options.tables, source, active)
            findings += found
            observed |= seen
            present += now
        if options.lag is not None:
            found, facts["lag"], now = lag_findings(tasks, options.lag, source, ctx, active)
            findings += found
            present += now
            observed |= {dms_lag.group(name) for name in facts["lag"]}
        # Every group checked, ok ones included: `watchdog status` and `silence` know a table before it alerts.
        return Evaluation(findings=tuple(findings), facts=facts, observed=tuple(sorted(observed)) if observed else (),
                          present=tuple(present))

    @classmethod
    def resolved_text(cls, rule: Rule, group: str, present: Observation | None) -> str:
        if present is None and "/" not in group:  # (task/tables and task/lag groups keep the default)
            return f"task {group} is no longer listed by DMS, so its state is unknown"
        return default_resolved_text(group, present)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return each_rule(rules, lambda rule: cls.evaluate_one(rule, source, ctx))
