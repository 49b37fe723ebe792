"""``dms_task``: AWS DMS replication tasks that failed or stopped.

Groups are task identifiers. A task named in ``tasks`` that no longer exists
is a finding of its own. A task stopped normally (StopReason NORMAL,
FULL_LOAD_ONLY_FINISHED or STOPPED_AFTER_FULL_LOAD) only alerts with ``stopped``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from watchdog.rule import Rule
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, RuleType
from watchdog.ruletypes.dms_options import DmsTaskOptions

NORMAL_STOP_REASONS = frozenset({"NORMAL", "FULL_LOAD_ONLY_FINISHED", "STOPPED_AFTER_FULL_LOAD"})
TRANSITIONAL = frozenset({"creating", "starting", "stopping", "modifying", "deleting", "moving", "testing", "ready"})


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


def task_details(task: Mapping[str, Any]) -> dict[str, Any]:
    stats = task.get("ReplicationTaskStats") or {}
    return {"task": identifier(task), "arn": task.get("ReplicationTaskArn", ""), "status": task.get("Status", ""),
            "stop_reason": stop_reason(task) or "", "last_failure": task.get("LastFailureMessage") or "",
            "tables_errored": stats.get("TablesErrored", 0)}


def missing(requested: Sequence[str] | None, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Requested identifiers or ARNs that match no task."""
    names = {identifier(t) for t in tasks} | {str(t.get("ReplicationTaskArn")) for t in tasks}
    return [name for name in (requested or ()) if name not in names]


class DmsTaskRule(RuleType):
    name: ClassVar[str] = "dms_task"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset({"task", "status", "stop_reason", "last_failure", "tables_errored"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> DmsTaskOptions:
        return DmsTaskOptions.from_mapping(data)

    @classmethod
    def evaluate_one(cls, rule: Rule, source: Any) -> Evaluation:
        options: DmsTaskOptions = rule.options
        tasks = source.describe_tasks(options.tasks)
        findings = []
        for task in tasks:
            met = condition(task, options.alert_on)
            if met is None:
                continue
            d = task_details(task)
            summary = f"task {d['task']} is {d['status']}"
            if d["stop_reason"]:
                summary += f" (stop reason {d['stop_reason']})"
            if d["last_failure"]:
                summary += f": {d['last_failure']}"
            if d["tables_errored"]:
                summary += f"; {d['tables_errored']} table(s) in error"
            findings.append(Finding(group=d["task"], value=d["status"], summary=summary, details={**d, "condition": met}))
        for name in missing(options.tasks, tasks):
            findings.append(Finding(group=name, value="missing", summary=f"task {name} does not exist (deleted or renamed?)",
                                    details={"task": name, "status": "missing", "stop_reason": "", "last_failure": ""}))
        return Evaluation(findings=tuple(findings), facts={"tasks": {identifier(t): t.get("Status") for t in tasks}})

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        out: dict[str, Evaluation | Exception] = {}
        for rule in rules:
            try:
                out[rule.name] = cls.evaluate_one(rule, source)
            except Exception as exc:
                out[rule.name] = exc
        return out
