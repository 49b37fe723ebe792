"""``dms_remediate``: restart failed DMS tasks safely, then refresh the warehouse.

Per task, a state machine kept in the journal (the state store):

    idle --failure seen--> restarting (intent) --call returned--> waiting --running--> refreshing --> idle (resolved)
                 |                     |  timeout/fails again: next attempt, within the budget
                 +--budget spent-------+--> gave_up (alert; no more restarts until it runs again)
    refreshing --SQL or command fails--> refresh_failed (reported once, not retried)
    (approve: true) failure seen --> awaiting_approval --approved in Slack--> restarting ...
                                                      +--declined--> declined (no restarts until it runs again)
    idle --running, some tables in error--> reloading (ReloadTables for those tables alone) --out of error--> refreshing
    refreshing --done--> verifying (healed_when.fresh: the freshness rule, run after the refresh, has no alert) --> idle
                                   +--not fresh within healed_when.within--> stale (reported once; closes when fresh)

Doing the least: a running task with tables in error (a suspended table) is
never restarted; only those tables are reloaded. A failed task is restarted
with resume-processing unless the rule allows a destructive type
(``allow_destructive``), and never when it has not completed its first run
(AWS: any other start type than start-replication on a first run leads to data
errors, and start-replication re-applies the table-preparation mode). A task is
healed when it runs, none of its tables is in error, and (with
``healed_when.fresh``) the warehouse is fresh again; every action and its
reason is a step in the alert's thread and the audit log.

Intent, action, outcome: the intent to restart (with the task's last start
time as DMS reported it) is recorded before StartReplicationTask is called,
and the outcome right after. A watchdog that stopped in between finds the
intent on its next evaluation and reconciles it with what AWS reports: a task
that is starting or running, or whose last start time moved, was restarted
(it goes on waiting, then refreshes); a task still failed with the same start
time never got the call (it is made once now). A SQL refresh records its
episode in the warehouse ledger table inside its own transaction (see
``sources.postgres.REFRESH_LEDGER``), so a refresh that committed is never run
again and one that did not commit runs once.

Tasks a person stopped (StopReason NORMAL, no error) and tasks in a
transitional state are never touched. With ``dry_run`` the plan is recorded
and posted and nothing is changed.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from watchdog.durations import format_duration
from watchdog.rule import Rule, Severity
from watchdog.ruletypes import dms_tables
from watchdog.ruletypes.base import (
    NO_GRANTS,
    EvalContext,
    Evaluation,
    Finding,
    Grants,
    Journal,
    RuleError,
    RuleType,
    SourceUnavailable,
    Step,
)
from watchdog.ruletypes.dms_options import DmsRemediateOptions
from watchdog.ruletypes.dms_task import TRANSITIONAL, condition, identifier, missing, task_details
from watchdog.times import from_text, to_text

FAILED = frozenset({"failed", "stopped_with_error"})
POLL_IN_EVALUATION = timedelta(seconds=20)  # how long one evaluation waits for "running" before leaving it to the next
FIRST_POLL = 1.0
MAX_CHECK_INTERVAL = timedelta(minutes=2)


RELOADING_STATES = frozenset({"table is being reloaded", "before load", "full load"})
FULL_LOAD_TYPES = frozenset({"full-load", "full-load-and-cdc"})
MAX_TABLES_NAMED = 10  # steps name this many tables, then "and N more"


# The environment a refresh command runs with (besides LC_* and WATCHDOG_REMEDIATION_EPISODE).
COMMAND_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "SHELL"})


class RemediationError(RuleError):
    pass


def first_run_completed(task: Mapping[str, Any]) -> bool:
    """Whether the task finished its first run in the sense AWS warns about (its first full load)."""
    stats = task.get("ReplicationTaskStats") or {}
    if stats.get("FullLoadFinishDate") or task.get("RecoveryCheckpoint"):
        return True
    if str(task.get("MigrationType") or "") in FULL_LOAD_TYPES:
        progress = stats.get("FullLoadProgressPercent")
        return isinstance(progress, int | float) and progress >= 100
    return bool(task.get("ReplicationTaskStartDate"))  # CDC only: no load phase, so a task that started has run


def pending(rows: Sequence[Mapping[str, Any]],
            tables: Sequence[Sequence[str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """From table statistics: the tables not back yet (any in error, or one of ``tables`` still loading), and of
    ``tables`` those loading now."""
    wanted = {(str(s), str(t)) for s, t in tables}
    left, loading = [], []
    for row in rows:
        key = dms_tables.table_key(row)
        is_loading = key in wanted and dms_tables.clean(row.get("TableState")).lower() in RELOADING_STATES
        if is_loading:
            loading.append(key)
        if dms_tables.in_error(row) or is_loading:
            left.append(key)
    return left, loading


def table_list(tables: Sequence[Sequence[str]]) -> str:
    """The tables for a step's text: cleaned names (they are AWS data), at most MAX_TABLES_NAMED of them."""
    names = dms_tables.shown(tables)
    more = len(names) - MAX_TABLES_NAMED
    return ", ".join(names[:MAX_TABLES_NAMED]) + (f" and {more} more" if more > 0 else "")


def start_date(task: Mapping[str, Any]) -> str:
    """The task's last start time as DMS reports it (AWS's clock, compared only with itself), or ""."""
    value = task.get("ReplicationTaskStartDate")
    if isinstance(value, datetime):
        return to_text(value) or ""
    return str(value or "")


class Run:
    """One evaluation of one rule: the tasks, the journal, and the steps taken."""

    def __init__(self, rule: Rule, source: Any, ctx: EvalContext, journal: Journal):
        self.rule = rule
        self.options: DmsRemediateOptions = rule.options
        self.source = source
        self.ctx = ctx
        self.journal = journal
        self.records = journal.load(rule)
        self.problems: dict[str, str] = {}  # task -> what could not be checked this evaluation (a finding, not a step)

    def now(self) -> datetime:
        # Steps are stamped with the evaluation time: replays (test-rule) stay deterministic.
        return self.ctx.now

    def save(self, group: str, record: dict[str, Any], kind: str | None = None, text: str = "",
             severity: Severity = Severity.WARNING, **detail: Any) -> None:
        if self.options.dry_run:  # a rehearsal never pages: every step of it is information
            severity = Severity.INFO
        previous = self.records.get(group) or {}
        if kind == "firing":  # the episode's severity: its transition is logged with the one its first message shows
            record = {**record, "severity": severity.value}
        elif "severity" not in record and previous.get("severity") and previous.get("episode") == record.get("episode"):
            record = {**record, "severity": previous["severity"]}
        self.records[group] = record
        step = Step(kind=kind, text=text, severity=severity, detail=detail, dry_run=self.options.dry_run) if kind else None
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
            elif status == "running" and self.options.tables.enabled:
                bad = self.tables_in_error(task)
                if bad:
                    self.reload(task, self.open_tables(record, task, bad), bad)
        elif state == "reloading":
            self.reloading(task, record)
        elif state in ("verifying", "stale"):
            if failed:
                self.failure(task, record)
            else:
                self.verifying(task, record)
        elif state == "restarting":  # watchdog stopped while StartReplicationTask was in flight
            self.reconcile(task, record)
        elif state == "waiting":
            self.waiting(task, record)
        elif state == "refreshing":  # watchdog stopped mid-refresh: a refresh is safe to run again
            self.refresh(task, record)
        elif state == "retry":  # the last restart or reload call failed; try again within the budget
            if status == "running":
                self.healthy(task, record, f"task {name} is running again")
            elif failed:
                self.failure(task, record)
        elif state == "awaiting_approval":
            bad = self.tables_in_error(task) if status == "running" and self.options.tables.enabled else []
            if failed:
                self.failure(task, record)
            elif bad:
                self.reload(task, record, bad)
            elif status == "running" and self.unsettled(task, record) == []:
                self.close(name, record, f"task {name} is running again with no table in error; the approval is no "
                                         "longer needed and nothing was done")
        elif state in ("gave_up", "planned", "missing", "declined"):
            if status == "running" and self.unsettled(task, record) == []:
                self.close(name, record, f"task {name} is running again with no table in error; nothing more to do")
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
        if not first_run_completed(task):
            self.save(name, {**record, "state": "gave_up", "attempts": attempts}, "action",
                      f"not restarting {name}: it has not completed its first run, and AWS warns that any start type "
                      "but start-replication on a first run leads to data errors, while start-replication re-applies "
                      "the table-preparation mode. Start it by hand.", Severity.CRITICAL, task=name, type=restart.type)
            return
        if len(attempts) >= restart.max_attempts:
            self.save(name, {**record, "state": "gave_up", "attempts": attempts}, "action",
                      f"gave up: {len(attempts)} restart(s) within {format_duration(restart.within)} did not keep {name} "
                      "running; no more restarts until it runs again. Look at it by hand.", Severity.CRITICAL, task=name)
            return
        approved_by = ""
        if self.options.approve:
            decision = self.journal.decision(self.rule, str(record.get("episode", "")))
            if decision is None or decision[0] != "approved":
                destructive = " (destructive: it re-applies the table-preparation mode)" if restart.destructive else ""
                self.await_approval(task, record, attempts, decision, f"restart {name} with {restart.type}{destructive} "
                                    f"(attempt {n} of {restart.max_attempts}){self.refresh_plan()}")
                return
            approved_by = f"; approved by {decision[1]}"
        attempts.append(to_text(self.now()))
        # The intent goes to the journal before the call: a crash during the call is reconciled, never forgotten.
        intent = {"type": restart.type, "at": to_text(self.now()), "start_date": start_date(task), "attempt": n}
        record = {**record, "state": "restarting", "attempts": attempts, "intent": intent}
        why = (" (destructive: it re-applies the table-preparation mode; allowed by allow_destructive)"
               if restart.destructive else "") + approved_by
        self.save(name, record, "note", f"intent: restart {name} with {restart.type} (attempt {n} of {restart.max_attempts})"
                  + why, task=name, start_date=intent["start_date"])
        try:
            self.source.start_task(arn, restart.type)
        except SourceUnavailable as exc:
            # No answer: AWS may or may not have restarted the task. The intent stays open; the next evaluation
            # reconciles it with AWS exactly as after a crash (never a blind second call).
            self.save(name, record, "action", f"restart call got no answer ({exc}); checking with AWS on the next "
                      "evaluation whether it took effect", Severity.WARNING, task=name)
            return
        except RuleError as exc:
            denied = getattr(exc, "code", "") in ("AccessDeniedException", "AccessDenied")
            record = {k: v for k, v in record.items() if k != "intent"}
            self.save(name, {**record, "state": "gave_up" if denied else "retry", "attempts": attempts}, "action",
                      f"restart {n} of {restart.max_attempts} failed: {exc}" + (" (not retried)" if denied else ""),
                      Severity.CRITICAL, task=name)
            return
        record = {**self.issued(record), "deadline": to_text(self.now() + restart.wait_running)}
        self.save(name, record, "action",
                  f"restart issued: StartReplicationTask {restart.type} (attempt {n} of {restart.max_attempts}) because "
                  f"the task is {task.get('Status')}{why}; waiting up to {format_duration(restart.wait_running)} for running",
                  task=name, type=restart.type)
        self.poll(arn, name, record)

    def await_approval(self, task: Mapping[str, Any], record: dict[str, Any], attempts: list[str],
                       decision: tuple[str, str] | None, plan: str) -> None:
        """``approve: true``: ask once per episode (for ``plan``), wait while nobody decided, stop when declined."""
        name, restart = identifier(task), self.options.restart
        if decision is None:
            self.save(name, {**record, "state": "awaiting_approval", "attempts": attempts}, "approval",
                      f"approval needed: {plan}. Nothing is done until someone approves.",
                      Severity.CRITICAL, task=name, type=restart.type)
        elif decision[0] == "declined":
            self.save(name, {**record, "state": "declined", "attempts": attempts}, "action",
                      f"declined by {decision[1]}: not restarting {name}; nothing more for this failure until the task "
                      "runs again", Severity.CRITICAL, task=name)
        elif record.get("state") != "awaiting_approval":
            self.save(name, {**record, "state": "awaiting_approval", "attempts": attempts})

    @staticmethod
    def issued(record: Mapping[str, Any]) -> dict[str, Any]:
        """The record once a restart was made: waiting, the intent done."""
        out = {k: v for k, v in record.items() if k != "intent"}
        return {**out, "state": "waiting", "next_check": out.get("next_check") or "", "interval": FIRST_POLL}

    def reconcile(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        """Settle an intent to restart left by a watchdog that stopped during the call, from what AWS reports."""
        name = identifier(task)
        intent = record.get("intent") or {}
        status = str(task.get("Status", ""))
        now_started = start_date(task)
        restart = self.options.restart
        if status in ("starting", "running") or now_started != intent.get("start_date", ""):
            # AWS took the call: the restart happened once; wait for it, then refresh.
            since = from_text(intent.get("at")) or self.now()
            record = {**self.issued(record), "deadline": to_text(since + restart.wait_running)}
            self.save(name, record, "action",
                      f"restart issued: StartReplicationTask {intent.get('type', restart.type)} (attempt "
                      f"{intent.get('attempt', len(record.get('attempts', [])))} of {restart.max_attempts}; watchdog "
                      f"stopped during the call and AWS reports the task {status}, last started "
                      f"{now_started or 'never'}); waiting up to {format_duration(restart.wait_running)} for running",
                      task=name, status=status, reconciled=True)
            self.waiting(task, record)
        elif condition(task, FAILED) is not None:
            # The call never reached AWS (the task's last start time did not move): make it now, once.
            log_attempts = [a for a in record.get("attempts", []) if a != intent.get("at")]
            self.failure(task, {**{k: v for k, v in record.items() if k != "intent"}, "attempts": log_attempts})
        # Any other status (a transitional one, or a person stopped it): leave the intent for the next evaluation.

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
            self.healthy(task, record, f"task {name} is running again")
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
        episode = str(record.get("episode", ""))
        done_before = None
        try:
            if refresh.command:
                self.run_command(refresh.command, refresh.timeout.total_seconds(), episode)
            else:
                assert refresh.source is not None and refresh.sql is not None
                done_before = self.ctx.sources.get(refresh.source).run_refresh(
                    refresh.sql, refresh.timeout.total_seconds(), episode=episode, rule=self.rule.name, task=name)
        except RuleError as exc:
            self.save(name, {**record, "state": "refresh_failed"}, "action",
                      f"warehouse refresh failed (not retried; run it by hand once fixed): {exc}", Severity.CRITICAL,
                      task=name, error=str(exc))
            return
        if done_before is not None:
            self.verify(task, {**record, "state": "idle"},
                        f"warehouse refresh had already committed at {to_text(done_before)} (watchdog stopped before "
                        f"recording it); not run again; task {name} is running", refreshed_at=to_text(done_before))
            return
        took = time.monotonic() - started
        self.verify(task, {**record, "state": "idle"}, f"warehouse refresh finished in {took:.1f}s; task {name} is running",
                    seconds=round(took, 2))

    @staticmethod
    def run_command(command: Sequence[str], timeout: float, episode: str = "") -> None:
        # The episode lets a command make itself idempotent: after a crash mid-refresh it runs again.
        # The command is the rule author's: it gets what a program needs to run, never the daemon's
        # environment (which may hold secrets); values it needs are passed as arguments (rule_env).
        env = {k: v for k, v in os.environ.items() if k in COMMAND_ENV or k.startswith("LC_")}
        env["WATCHDOG_REMEDIATION_EPISODE"] = episode
        try:
            result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False, env=env)
        except subprocess.TimeoutExpired:
            raise RemediationError(f"{' '.join(command)} did not finish within {timeout:g}s") from None
        except OSError as exc:
            raise RemediationError(f"cannot run {command[0]}: {exc.strerror}") from None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise RemediationError(f"{' '.join(command)} exited with {result.returncode}: {tail[0]}")

    # --- tables: reload only what is in error --------------------------------------------------

    def tables_in_error(self, task: Mapping[str, Any]) -> list[tuple[str, str]] | None:
        """``(schema, table)`` of the task's tables in error now; None when they could not be checked (a finding)."""
        rows = self.table_rows(task)
        return None if rows is None else [dms_tables.table_key(r) for r in rows if dms_tables.in_error(r)]

    def table_rows(self, task: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The task's table statistics; None when they could not be read (a finding says why)."""
        name = identifier(task)
        try:
            rows: list[dict[str, Any]] = self.source.table_statistics(str(task.get("ReplicationTaskArn")))
        except RuleError as exc:
            self.problems[name] = f"could not check the tables of task {name}: {exc}"
            return None
        return rows

    def still_reloading(self, task: Mapping[str, Any], tables: Sequence[Sequence[str]]) -> list[tuple[str, str]] | None:
        """Of ``tables``, those not yet back (in error, or still loading); None when they could not be checked."""
        rows = self.table_rows(task)
        return None if rows is None else pending(rows, tables)[0]

    def unsettled(self, task: Mapping[str, Any], record: Mapping[str, Any]) -> list[tuple[str, str]] | None:
        """Tables in error now, or reloaded by this episode and still loading ([] with table reloads off)."""
        if not self.options.tables.enabled:
            return []
        return self.still_reloading(task, record.get("tables", []))

    def open_tables(self, record: dict[str, Any], task: Mapping[str, Any], bad: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Start a new episode for tables seen in error in a running task."""
        name = identifier(task)
        record = {"state": "idle", "episode": uuid.uuid4().hex, "since": to_text(self.now()),
                  "attempts": [a for a in record.get("attempts", []) if self.recent(a)],
                  "failure": {"status": str(task.get("Status", "")), "tables": [list(t) for t in bad]}}
        self.save(name, record, "firing", f"task {name} is running but {len(bad)} table(s) are in error (suspended): "
                  f"{table_list(bad)}", Severity.CRITICAL, task=name, tables=dms_tables.shown(bad))
        return record

    def reload(self, task: Mapping[str, Any], record: dict[str, Any], bad: Sequence[tuple[str, str]]) -> None:
        """ReloadTables for ``bad`` alone (intent, call, outcome), within the attempt budget; the task is not restarted."""
        name, arn = identifier(task), str(task.get("ReplicationTaskArn"))
        restart = self.options.restart
        attempts = [a for a in record.get("attempts", []) if self.recent(a)]
        n = len(attempts) + 1
        listed = table_list(bad)
        if self.options.dry_run:
            self.save(name, {**record, "state": "planned"}, "action",
                      f"dry run: would reload {listed} of {name} (ReloadTables data-reload; the task is not restarted)"
                      + self.refresh_plan(), task=name)
            return
        if len(attempts) >= restart.max_attempts:
            self.save(name, {**record, "state": "gave_up", "attempts": attempts}, "action",
                      f"gave up: {len(attempts)} attempt(s) within {format_duration(restart.within)} did not bring "
                      f"{listed} of {name} out of error; no more reloads until they recover. Look at them by hand.",
                      Severity.CRITICAL, task=name)
            return
        if self.options.approve:
            decision = self.journal.decision(self.rule, str(record.get("episode", "")))
            if decision is None or decision[0] != "approved":
                self.await_approval(task, record, attempts, decision, f"reload {listed} of {name} (ReloadTables "
                                    f"data-reload; the task is not restarted; attempt {n} of {restart.max_attempts})")
                return
        attempts.append(to_text(self.now()))
        tables = [list(t) for t in bad]
        record = {**record, "state": "reloading", "attempts": attempts, "tables": tables, "issued": False,
                  "reload_at": attempts[-1], "deadline": to_text(self.now() + self.options.tables.wait_reloaded)}
        # Intent first: a watchdog stopped during the call finds it unissued and asks AWS (reconcile_reload).
        self.save(name, record, "note", f"intent: reload {listed} of {name} (attempt {n} of {restart.max_attempts})",
                  task=name)
        try:
            self.source.reload_tables(arn, [(s, t) for s, t in tables])
        except SourceUnavailable as exc:
            # No answer: the intent stays open and the next evaluation reads the tables' states (reconcile_reload).
            self.save(name, record, "action", f"reload call got no answer ({exc}); checking with AWS on the next "
                      "evaluation whether it took effect", Severity.WARNING, task=name)
            return
        except RuleError as exc:
            denied = getattr(exc, "code", "") in ("AccessDeniedException", "AccessDenied")
            self.save(name, {**record, "state": "gave_up" if denied else "retry"}, "action",
                      f"reload {n} of {restart.max_attempts} failed: {exc}" + (" (not retried)" if denied else ""),
                      Severity.CRITICAL, task=name)
            return
        record = {**record, "issued": True}
        self.save(name, record, "action",
                  f"reload issued: ReloadTables data-reload for {listed} (attempt {n} of {restart.max_attempts}) because "
                  f"they are in error while task {name} runs; the task is not restarted. Waiting up to "
                  f"{format_duration(self.options.tables.wait_reloaded)} for them to load", task=name,
                  tables=dms_tables.shown(tables))

    def reloading(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        name = identifier(task)
        status = str(task.get("Status", ""))
        if condition(task, FAILED) is not None:
            self.save(name, {**record, "state": "retry"}, "action",
                      f"task {name} failed while its tables reloaded: {task_details(task)['last_failure'] or status}",
                      Severity.CRITICAL, task=name, status=status)
            self.failure(task, self.records[name])
            return
        deadline = from_text(record.get("deadline"))
        late = deadline is not None and self.now() >= deadline
        if status != "running":
            return  # transitional (or stopped by a person): never touched; the next evaluation looks again
        rows = self.table_rows(task)
        if rows is None:
            return
        left, loading = pending(rows, record.get("tables", []))
        if record.get("issued") is False:
            record = self.reconcile_reload(task, record, left, loading)
            if record.get("issued") is False:
                return
        if not left:
            self.healthy(task, record, f"{table_list(record.get('tables', []))} of task {name} reloaded and out of error")
        elif late:
            bad = list(left)
            self.save(name, {**record, "state": "retry"}, "action",
                      f"{table_list(bad)} of task {name} still not loaded "
                      f"{format_duration(self.options.tables.wait_reloaded)} after the reload", Severity.CRITICAL, task=name)
            self.reload(task, self.records[name], bad)

    def reconcile_reload(self, task: Mapping[str, Any], record: dict[str, Any], left: Sequence[tuple[str, str]],
                         loading: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Settle a reload intent left by a watchdog that stopped during the call, from the tables' states now."""
        name = identifier(task)
        wanted = [(str(s), str(t)) for s, t in record.get("tables", [])]
        restart = self.options.restart
        n = len(record.get("attempts", []))
        if set(wanted) <= set(left) and not loading:
            # Every table is still in error and none is loading: the call never reached AWS. Make it now, once.
            attempts = [a for a in record.get("attempts", []) if a != record.get("reload_at")]
            self.reload(task, {**record, "attempts": attempts}, wanted)
            return self.records[name]
        record = {**record, "issued": True}
        self.save(name, record, "action",
                  f"reload issued: ReloadTables data-reload for {table_list(wanted)} (attempt {n} of "
                  f"{restart.max_attempts}; its outcome was unknown, and AWS shows the tables reloading or loaded, so "
                  "it took effect); waiting for them to load", task=name, reconciled=True, tables=dms_tables.shown(wanted))
        return record

    def healthy(self, task: Mapping[str, Any], record: dict[str, Any], text: str) -> None:
        """The task runs: reload any table still in error, else refresh the warehouse, then verify."""
        name = identifier(task)
        if self.options.tables.enabled:
            bad = self.tables_in_error(task)
            if bad is None:
                self.records[name] = record  # tables unknown: no verdict; the finding says why, the next run looks again
                return
            if bad:
                self.save(name, record, "action", f"{text}, but {table_list(bad)} are in error", Severity.CRITICAL,
                          task=name, tables=dms_tables.shown(bad))
                self.reload(task, self.records[name], bad)
                return
        if self.options.refresh is not None:
            record = {**record, "state": "refreshing"}
            self.save(name, record, "action", f"{text}; starting the warehouse refresh", task=name, status="running")
            self.refresh(task, record)
            return
        self.verify(task, record, text)

    # --- healed: running, no table in error, and (when named) the warehouse fresh again ----------

    def verify(self, task: Mapping[str, Any], record: dict[str, Any], text: str, **detail: Any) -> None:
        name = identifier(task)
        verify = self.options.verify
        if verify.freshness_rule is None:
            self.close(name, record, text, **detail)
            return
        record = {**record, "state": "verifying", "verify_since": to_text(self.now()),
                  "verify_deadline": to_text(self.now() + verify.within)}
        self.save(name, record, "action", f"{text}; waiting up to {format_duration(verify.within)} for freshness rule "
                  f"{verify.freshness_rule} to show the warehouse fresh", task=name, **detail)

    def verifying(self, task: Mapping[str, Any], record: dict[str, Any]) -> None:
        name = identifier(task)
        verify = self.options.verify
        rule_name = verify.freshness_rule or ""
        view = self.ctx.rules(rule_name) if self.ctx.rules is not None else None
        since = from_text(record.get("verify_since")) or self.now()
        if view is None or view.type != "freshness":
            self.problems[name] = f"healed_when.fresh names {rule_name}, which is not a freshness rule of this watchdog"
        elif view.error:
            self.problems[name] = f"freshness rule {rule_name} could not check the warehouse: {view.error}"
        elif view.last_run is not None and view.last_run > since and not view.alerting:
            if str(task.get("Status", "")) != "running":
                return  # not failed (advance handles that) but not running: look again next time
            bad = self.unsettled(task, record)
            if bad:
                self.reload(task, record, bad)
            elif bad is not None:
                self.close(name, record, f"healed: task {name} is running, no table is in error, and freshness rule "
                           f"{rule_name} shows the warehouse fresh (evaluated {to_text(view.last_run)})",
                           fresh_at=to_text(view.last_run))
            return
        deadline = from_text(record.get("verify_deadline"))
        if record.get("state") == "verifying" and deadline is not None and self.now() >= deadline:
            stale = ", ".join(sorted(view.alerting)[:MAX_TABLES_NAMED]) if view is not None else "unknown"
            self.save(name, {**record, "state": "stale"}, "action",
                      f"the warehouse is still not fresh {format_duration(verify.within)} after the remediation "
                      f"(freshness rule {rule_name} alerts for: {stale or 'nothing yet evaluated'}); look at it by hand. "
                      "This closes when it is fresh again.", Severity.CRITICAL, task=name)

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
            problem = self.problems.pop(name, None)
            if record.get("state", "idle") == "idle":
                if problem:
                    out.append(Finding(group=name, value="unknown", summary=problem, severity=Severity.WARNING,
                                       details={"task": name, "status": statuses.get(name, "missing"), "step": "unknown"}))
                continue
            status = statuses.get(name, "missing")
            out.append(Finding(group=name, value=record["state"],
                               severity=Severity(record["severity"]) if record.get("severity") else None,
                               summary=f"remediation {record['state']} (task {status}, "
                                       f"{len(record.get('attempts', []))} attempt(s))" + (f"; {problem}" if problem else ""),
                               details={"task": name, "status": status, "step": record["state"]}))
        for name, problem in sorted(self.problems.items()):
            out.append(Finding(group=name, value="unknown", summary=problem, severity=Severity.WARNING,
                               details={"task": name, "status": statuses.get(name, "missing"), "step": "unknown"}))
        return tuple(out)


class DmsRemediateRule(RuleType):
    name: ClassVar[str] = "dms_remediate"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset({"task", "status", "step"})
    acts: ClassVar[bool] = True

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> DmsRemediateOptions:
        return DmsRemediateOptions.from_mapping(data, rule_dir, grants.refresh)

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
                # A check planned further out than the longest interval dates from before a clock set back: due now.
                if (due is not None and ctx.now < due <= ctx.now + MAX_CHECK_INTERVAL
                        and ctx.now < (from_text(record.get("deadline")) or ctx.now)):
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
