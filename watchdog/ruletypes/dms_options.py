"""Options of the DMS rule types: which tasks, what alerts, how to restart and refresh."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from watchdog import sqlcheck
from watchdog.ruletypes import options as opt
from watchdog.ruletypes.base import OptionsError
from watchdog.sqlcheck import RefreshGrant
from watchdog.textfile import UnreadableFile, read_text

DEFAULT_ALERT_ON = frozenset({"failed", "stopped_with_error"})
DEFAULT_RESTART_TYPE = "resume-processing"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_WITHIN = timedelta(hours=6)
DEFAULT_WAIT_RUNNING = timedelta(minutes=10)
DEFAULT_REFRESH_TIMEOUT = timedelta(minutes=30)
MAX_SQL_FILE_BYTES = 256 * 1024
DEFAULT_TABLE_ALERT_ON = frozenset({"error", "validation_failed"})
DEFAULT_LAG_WARN = timedelta(minutes=5)
DEFAULT_LAG_ERROR = timedelta(minutes=30)
LAG_REPORTED_WITHIN = timedelta(minutes=10)  # a running CDC task with no latency datapoint this recent is "not reported"


@dataclass(frozen=True)
class TableCheck:
    """Per-table health from DescribeTableStatistics (``tables:``)."""

    alert_on: frozenset[str] = DEFAULT_TABLE_ALERT_ON  # error, cancelled, validation_failed

    @classmethod
    def from_value(cls, value: Any) -> TableCheck | None:
        """``tables: true`` (defaults), ``false`` (off) or a mapping of options."""
        if value is False or value is None:
            return None
        raw = value if isinstance(value, Mapping) else {}
        return cls(alert_on=frozenset(raw.get("alert_on", DEFAULT_TABLE_ALERT_ON)))


@dataclass(frozen=True)
class LagCheck:
    """CDC latency from CloudWatch (``lag:``): thresholds on the larger of source and target latency, and a stall check."""

    warn_after: timedelta | None = DEFAULT_LAG_WARN
    error_after: timedelta | None = DEFAULT_LAG_ERROR
    stall_after: timedelta | None = None  # latency grew throughout this long: stalled (critical)

    @classmethod
    def from_value(cls, value: Any) -> LagCheck | None:
        if value is False or value is None:
            return None
        raw = value if isinstance(value, Mapping) else {}
        warn = opt.optional_duration(raw, "warn_after")
        error = opt.optional_duration(raw, "error_after")
        if not raw.keys() & {"warn_after", "error_after"}:
            warn, error = DEFAULT_LAG_WARN, DEFAULT_LAG_ERROR
        if warn is not None and error is not None and error <= warn:
            raise OptionsError(("lag", "error_after"), "'error_after' must be longer than 'warn_after'")
        return cls(warn_after=warn, error_after=error, stall_after=opt.optional_duration(raw, "stall_after"))

    @property
    def lookback(self) -> timedelta:
        """How far back one CloudWatch request reaches: the stall window, and at least the "reported" horizon."""
        return max(self.stall_after or timedelta(0), LAG_REPORTED_WITHIN)


@dataclass(frozen=True)
class DmsTaskOptions:
    source: str
    tasks: tuple[str, ...] | None  # None: every task
    alert_on: frozenset[str] = DEFAULT_ALERT_ON
    tables: TableCheck | None = None
    lag: LagCheck | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DmsTaskOptions:
        tasks = tuple(data["tasks"]) if "tasks" in data else None
        return cls(source=data["source"], tasks=tasks, alert_on=frozenset(data.get("alert_on", DEFAULT_ALERT_ON)),
                   tables=TableCheck.from_value(data.get("tables")), lag=LagCheck.from_value(data.get("lag")))


DESTRUCTIVE_RESTARTS = frozenset({"reload-target", "start-replication"})  # both re-apply the table-preparation mode
DEFAULT_WAIT_RELOADED = timedelta(minutes=30)
DEFAULT_VERIFY_WITHIN = timedelta(hours=1)


@dataclass(frozen=True)
class RestartPolicy:
    type: str = DEFAULT_RESTART_TYPE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    within: timedelta = DEFAULT_WITHIN
    wait_running: timedelta = DEFAULT_WAIT_RUNNING
    allow_destructive: bool = False  # reload-target and start-replication may drop or truncate target tables

    @property
    def destructive(self) -> bool:
        return self.type in DESTRUCTIVE_RESTARTS


@dataclass(frozen=True)
class TableReload:
    """Reload only the tables in error of a running task (ReloadTables) instead of restarting it."""

    enabled: bool = True
    wait_reloaded: timedelta = DEFAULT_WAIT_RELOADED  # how long reloaded tables may take to leave error


@dataclass(frozen=True)
class Verify:
    """What "healed" waits for besides a running task with no table in error: a freshness rule without alerts."""

    freshness_rule: str | None = None
    within: timedelta = DEFAULT_VERIFY_WITHIN


@dataclass(frozen=True)
class Refresh:
    """The warehouse refresh: SQL on a postgres source, or a command."""

    source: str | None = None
    sql: str | None = None
    command: tuple[str, ...] | None = None
    timeout: timedelta = DEFAULT_REFRESH_TIMEOUT


@dataclass(frozen=True)
class DmsRemediateOptions:
    source: str
    tasks: tuple[str, ...] | None
    restart: RestartPolicy
    refresh: Refresh | None
    dry_run: bool = False
    approve: bool = False  # a person approves each remediation episode in Slack before any restart
    tables: TableReload = TableReload()
    verify: Verify = Verify()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], rule_dir: str, grant: RefreshGrant | None = None
                     ) -> DmsRemediateOptions:
        """Build from validated YAML; a refresh's SQL must be within ``grant`` (None: not checked). Raises OptionsError."""
        raw_restart = data.get("restart", {})
        restart = RestartPolicy(
            type=raw_restart.get("type", DEFAULT_RESTART_TYPE),
            max_attempts=int(raw_restart.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
            within=opt.duration(raw_restart, "within", DEFAULT_WITHIN),
            wait_running=opt.duration(raw_restart, "wait_running", DEFAULT_WAIT_RUNNING),
            allow_destructive=bool(raw_restart.get("allow_destructive", False)),
        )
        if restart.destructive and not restart.allow_destructive:
            raise OptionsError(("restart", "type"), f"restart type '{restart.type}' re-applies the task's table-preparation "
                                                    "mode (target tables may be dropped or truncated); set "
                                                    "'allow_destructive: true' under 'restart' to allow it, or use "
                                                    "resume-processing")
        approve = bool(data.get("approve", False))
        if restart.destructive and not approve and not data.get("dry_run", False):
            raise OptionsError(("restart", "type"), f"restart type '{restart.type}' is destructive: a person must approve "
                                                    "it in Slack first; add 'approve: true' (needs slack.app_token and "
                                                    "slack.actions.approvers in the config), or use resume-processing")
        raw_tables = data.get("tables", {})
        tables = TableReload(enabled=bool(raw_tables.get("reload", True)),
                             wait_reloaded=opt.duration(raw_tables, "wait_reloaded", DEFAULT_WAIT_RELOADED))
        raw_verify = data.get("healed_when", {})
        verify = Verify(freshness_rule=raw_verify.get("fresh"),
                        within=opt.duration(raw_verify, "within", DEFAULT_VERIFY_WITHIN))
        refresh = None
        if "refresh" in data:
            raw = data["refresh"]
            sql = raw.get("sql")
            if "sql_file" in raw:
                path = os.path.join(rule_dir, raw["sql_file"])
                try:
                    sql = read_text(path, limit=MAX_SQL_FILE_BYTES)
                except UnreadableFile as exc:
                    raise OptionsError(("refresh", "sql_file"), f"cannot read {path}: {exc.message}") from None
            if sql is not None:
                problem = sqlcheck.check_refresh(sql, quote="sql_file" not in raw, grant=grant)
                if problem is not None:
                    key = "sql_file" if "sql_file" in raw else "sql"
                    raise OptionsError(("refresh", key), problem)
            if sql is not None and "source" not in raw:
                raise OptionsError(("refresh",), "a SQL refresh needs 'source': the postgres source it runs on")
            refresh = Refresh(
                source=raw.get("source"), sql=sql,
                command=tuple(raw["command"]) if "command" in raw else None,
                timeout=opt.duration(raw, "timeout", DEFAULT_REFRESH_TIMEOUT),
            )
        return cls(source=data["source"], tasks=tuple(data["tasks"]) if "tasks" in data else None,
                   restart=restart, refresh=refresh, dry_run=bool(data.get("dry_run", False)), approve=approve,
                   tables=tables, verify=verify)
