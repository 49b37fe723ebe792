"""``dms_remediate``: restart failed DMS tasks safely, then refresh the warehouse.

Per task, a state machine kept in the journal (the state store):

    idle --failure seen--> waiting (restart issued) --running--> refreshing --> idle (resolved)
                 |                     |  timeout/fails again: next attempt, within the budget
                 +--budget spent-------+--> gave_up (alert; no more restarts until it runs again)
    refreshing --SQL or command fails--> refresh_failed (reported once, not retried)

A restart is recorded right after StartReplicationTask returns, so a watchdog
restart resumes waiting instead of restarting again (DMS shows the task as
starting or running by then). Tasks a person stopped (StopReason NORMAL, no
error) and tasks in a transitional state are never touched. With ``dry_run``
the plan is recorded and posted and nothing is changed.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from watchdog.durations import format_duration
from watchdog.rule import Rule, Severity
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, Journal, RuleError, RuleType, Step
from watchdog.ruletypes.dms_options import DmsRemediateOptions
from watchdog.ruletypes.dms_task import TRANSITIONAL, condition, identifier, missing, task_details
from watchdog.times import from_text, to_text

FAILED = frozenset({"failed", "stopped_with_error"})
POLL_IN_EVALUATION = timedelta(seconds=20)  # how long one evaluation waits for "running" before leaving it to the next
FIRST_POLL = 1.0
MAX_CHECK_INTERVAL = timedelta(minutes=2)


class RemediationError(RuleError):
    pass


class Run:
    """One evaluation of one rule: the tasks, the journal, and the steps taken."""

    def __init__(self, rule: Rule, source: Any, ctx: EvalContext, journal: Journal):
        self.rule = rule
        self.options: DmsRemediateOptions = rule.options
        self.source = source
        self.ctx = ctx
        self.journal = journal
        self.records = journal.load(rule)

    def now(self) -> datetime:
        # Steps are stamped with the evaluation time: replays (test-rule) stay deterministic.
        return self.ctx.now

    def save(self, group: str, record: dict[str, Any], kind: str | None = None, text: str = "",
             severity: Severity = Severity.WARNING, **detail: Any) -> None:
        self.records[group] = record
        step = Step(kind=kind, text=text, severity=severity, detail=detail) if kind else None
        self.journal.record(self.rule, group, record, step)

    # --- the state machine ---------------------------------------------------------------

    def advance(self, task: Mapping[str, Any]) -> None:
        name = identifier(task)
        record = dict(self.records.get(name) or {"state": "idle"})
        state = record["state"]
        status = str(task.get("Status", ""))
        failed = condition(task, FAILED) is not None
        if state == "idle":
            if failed:
                self.failure(task, self.open(record, task))
        elif state == "waiting":
            self.waiting(task, record)
        elif state == "refreshing":  # watchdog stopped mid-refresh: a refresh is safe to run again
            self.refresh(task, record)
        elif state == "retry":  # the last restart call failed; try again within the budget
            if status == "running":
                self.close(name, record, f"task {name} is running again")
            elif failed:
                self.failure(task, record)
        elif state in ("gave_up", "planned", "missing"):
            if status == "running":
                self.close(name, record, f"task {name} is running again; nothing more to do")
        elif state == "refresh_failed":
            if failed:
                self.failure(task, self.open(record, task))
            elif self.now() - (from_text(record.get("since")) or self.now()) > self.options.restart.within:
                self.save(name, {**record, "state": "idle"})  # reported once; stop showing it after a while

    def open(self, record: dict[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
        """Start a new episode for a newly seen failure."""
        d = task_details(task)
        record = {"state": "idle", "episode": uuid.uuid4().hex, "since": to_text(self.now()),
                  "attempts": [a for a in record.get("attempts", []) if self.recent(a)],
                  "failure": {k: d[k] for k in ("status", "stop_reason", "last_failure", "tables_errored")}}
        why = f"task {d['task']} is {d['status']}"
        if d["stop_reason"]:
            why += f" (stop reason {d['stop_reason']})"
        if d["last_failure"]:
            why += f": {d['last_failure']}"
        self.save(d["task"], record, "firing", f"failure seen: {why}", Severity.CRITICAL, **d)
        return record

    def recent(self, attempt: str) -> bool:
        moment = from_text(attempt)
        return moment is not None and self.now() - moment < self.options.restart.within

    def failure(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        name, arn = identifier(task), str(task.get("ReplicationTaskArn"))
        restart = self.options.restart
        attempts = [a for a in record.get("attempts", []) if self.recent(a)]
        n = len(attempts) + 1
        if self.options.dry_run:
            self.save(name, {**record, "state": "planned"}, "action",
                      f"dry run: would restart {name} with {restart.type} (attempt {n} of {restart.max_attempts}), "
                      f"wait up to {format_duration(restart.wait_running)} for running" + self.refresh_plan(), task=name)
            return
        if len(attempts) >= restart.max_attempts:
            self.save(name, {**record, "state": "gave_up", "attempts": attempts}, "action",
                      f"gave up: {len(attempts)} restart(s) within {format_duration(restart.within)} did not keep {name} "
                      "running; no more restarts until it runs again. Look at it by hand.", Severity.CRITICAL, task=name)
            return
        try:
            self.source.start_task(arn, restart.type)
        except RuleError as exc:
            attempts.append(to_text(self.now()))
            denied = getattr(exc, "code", "") in ("AccessDeniedException", "AccessDenied")
            self.save(name, {**record, "state": "gave_up" if denied else "retry", "attempts": attempts}, "action",
                      f"restart {n} of {restart.max_attempts} failed: {exc}" + (" (not retried)" if denied else ""),
                      Severity.CRITICAL, task=name)
            return
        attempts.append(to_text(self.now()))
        record = {**record, "state": "waiting", "attempts": attempts,
                  "deadline": to_text(self.now() + restart.wait_running),
                  "next_check": to_text(self.now()), "interval": FIRST_POLL}
        self.save(name, record, "action",
                  f"restart issued: StartReplicationTask {restart.type} (attempt {n} of {restart.max_attempts}); "
                  f"waiting up to {format_duration(restart.wait_running)} for running", task=name, type=restart.type)
        self.poll(arn, name, record)

    def refresh_plan(self) -> str:
        refresh = self.options.refresh
        if refresh is None:
            return ""
        if refresh.command:
            return f", then run {' '.join(refresh.command)}"
        return f", then run the refresh SQL on {refresh.source}"

    def poll(self, arn: str, name: str, record: dict[str, Any]) -> None:
        """Wait a little, with backoff, for the restarted task; leave the rest to later evaluations."""
        deadline = time.monotonic() + min(POLL_IN_EVALUATION, self.options.restart.wait_running).total_seconds()
        pause = 0.0
        while time.monotonic() + pause <= deadline:
            time.sleep(pause)
            pause = min(max(pause * 2, FIRST_POLL), 8.0)
            found = self.source.describe_tasks([arn])
            task = found[0] if found else {"ReplicationTaskArn": arn, "ReplicationTaskIdentifier": name}
            if str(task.get("Status", "")) == "running" or condition(task, FAILED) is not None:
                self.waiting(task, record)
                return

    def waiting(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        name = identifier(task)
        status = str(task.get("Status", ""))
        if status == "running":
            record = {**record, "state": "refreshing" if self.options.refresh else "idle"}
            if self.options.refresh is None:
                self.close(name, record, f"task {name} is running again")
                return
            self.save(name, record, "action", f"task {name} is running again; starting the warehouse refresh",
                      task=name, status=status)
            self.refresh(task, record)
            return
        if condition(task, FAILED) is not None and status != "starting":
            self.save(name, {**record, "state": "retry"}, "action",
                      f"task {name} failed again after the restart: {task_details(task)['last_failure'] or status}",
                      Severity.CRITICAL, task=name, status=status)
            self.failure(task, self.records[name])
            return
        deadline = from_text(record.get("deadline"))
        if deadline is not None and self.now() >= deadline:
            if status in TRANSITIONAL:
                self.save(name, {**record, "state": "gave_up"}, "action",
                          f"task {name} is still {status} after {format_duration(self.options.restart.wait_running)}; "
                          "giving up (a task in a transitional state is never touched)", Severity.CRITICAL, task=name)
            else:
                self.failure(task, record)
            return
        interval = timedelta(seconds=float(record.get("interval", FIRST_POLL)))
        record = {**record, "interval": min(interval * 2, MAX_CHECK_INTERVAL).total_seconds()}
        self.records[name] = record

    def refresh(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        name = identifier(task)
        refresh = self.options.refresh
        assert refresh is not None
        started = time.monotonic()
        self.save(name, {**record, "state": "refreshing"}, None)
        try:
            if refresh.command:
                self.run_command(refresh.command, refresh.timeout.total_seconds())
            else:
                assert refresh.source is not None and refresh.sql is not None
                self.ctx.sources.get(refresh.source).run_refresh(refresh.sql, refresh.timeout.total_seconds())
        except RuleError as exc:
            self.save(name, {**record, "state": "refresh_failed"}, "action",
                      f"warehouse refresh failed (not retried; run it by hand once fixed): {exc}", Severity.CRITICAL,
                      task=name, error=str(exc))
            return
        took = time.monotonic() - started
        self.close(name, {**record, "state": "idle"}, f"warehouse refresh finished in {took:.1f}s; task {name} is running",
                   seconds=round(took, 2))

    @staticmethod
    def run_command(command: Sequence[str], timeout: float) -> None:
        try:
            result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RemediationError(f"{' '.join(command)} did not finish within {timeout:g}s") from None
        except OSError as exc:
            raise RemediationError(f"cannot run {command[0]}: {exc.strerror}") from None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise RemediationError(f"{' '.join(command)} exited with {result.returncode}: {tail[0]}")

    def close(self, name: str, record: dict[str, Any], text: str, **detail: Any) -> None:
        self.save(name, {"state": "idle", "attempts": record.get("attempts", []), "episode": record.get("episode", ""),
                         "since": record.get("since")}, "resolved", text, task=name, **detail)

    def missing_task(self, name: str) -> None:
        record = dict(self.records.get(name) or {"state": "idle"})
        if record["state"] != "missing":
            record = {"state": "missing", "episode": uuid.uuid4().hex, "since": to_text(self.now()), "attempts": []}
            self.save(name, record, "firing", f"task {name} does not exist (deleted or renamed?); nothing to remediate",
                      Severity.WARNING, task=name)

    def findings(self, tasks: Sequence[Mapping[str, Any]]) -> tuple[Finding, ...]:
        """One finding per task not back to normal, so status shows where each remediation stands."""
        statuses = {identifier(t): str(t.get("Status", "")) for t in tasks}
        out = []
        for name, record in sorted(self.records.items()):
            if record.get("state", "idle") == "idle":
                continue
            status = statuses.get(name, "missing")
            out.append(Finding(group=name, value=record["state"],
                               summary=f"remediation {record['state']} (task {status}, "
                                       f"{len(record.get('attempts', []))} restart(s))",
                               details={"task": name, "status": status, "step": record["state"]}))
        return tuple(out)


class DmsRemediateRule(RuleType):
    name: ClassVar[str] = "dms_remediate"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset({"task", "status", "step"})
    acts: ClassVar[bool] = True

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> DmsRemediateOptions:
        return DmsRemediateOptions.from_mapping(data, rule_dir)

    @classmethod
    def evaluate_one(cls, rule: Rule, source: Any, ctx: EvalContext) -> Evaluation:
        if ctx.journal is None:
            raise RemediationError("remediation needs a journal (the engine provides one)")
        run = Run(rule, source, ctx, ctx.journal)
        tasks = source.describe_tasks(rule.options.tasks)
        for task in tasks:
            name = identifier(task)
            record = run.records.get(name, {})
            if record.get("state") == "waiting":
                due = from_text(record.get("next_check"))
                if due is not None and ctx.now < due and ctx.now < (from_text(record.get("deadline")) or ctx.now):
                    continue
            run.advance(task)
            if run.records.get(name, {}).get("state") == "waiting":
                interval = timedelta(seconds=float(run.records[name].get("interval", FIRST_POLL)))
                run.records[name]["next_check"] = to_text(ctx.now + interval)
                ctx.journal.record(rule, name, run.records[name], None)
        for name in missing(rule.options.tasks, tasks):
            run.missing_task(name)
        return Evaluation(findings=run.findings(tasks), facts={"tasks": {identifier(t): t.get("Status") for t in tasks}})

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        out: dict[str, Evaluation | Exception] = {}
        for rule in rules:
            try:
                out[rule.name] = cls.evaluate_one(rule, source, ctx)
            except Exception as exc:
                out[rule.name] = exc
        return out
