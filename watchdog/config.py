"""The config file (``watchdog.yaml``): loaded, interpolated, validated, typed.

Given a path, ``load_config`` returns a frozen Config or raises
InvalidFileError with every problem found; nothing half-loads.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from watchdog import redact, schema, yamlfile
from watchdog.durations import parse_duration
from watchdog.interpolation import interpolate
from watchdog.notify.receivers import BUILTIN_RECEIVERS, Receiver, parse_receiver, receiver_secrets
from watchdog.notify.routing import Route, parse_route
from watchdog.notify.time_intervals import TimeInterval, parse_interval
from watchdog.problems import InvalidFileError, Problem, display_path, format_path
from watchdog.rule import DEFAULT_REPEAT_EVERY, DEFAULT_SCHEDULE, DEFAULT_SETTLE, DEFAULT_SEVERITY, Schedule, Severity
from watchdog.sqlcheck import RefreshGrant, refresh_entry_problem
from watchdog.textfile import MAX_FILE_BYTES, UnreadableFile, read_bytes, read_text

DEFAULT_CONFIG_PATH = "/etc/watchdog/watchdog.yaml"
CONFIG_ENV = "WATCHDOG_CONFIG"
DEFAULT_RULES_DIR = "rules"
# The systemd unit's StateDirectory=watchdog: the service and a shell on the same host find one state file.
DEFAULT_STATE_DIR = "/var/lib/watchdog"
STATE_FILE_NAME = "state.db"
DEFAULT_SEARCH_TIMEOUT = timedelta(seconds=10)
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
DEFAULT_STATEMENT_TIMEOUT = timedelta(seconds=30)
DEFAULT_DMS_TIMEOUT = timedelta(seconds=10)
DEFAULT_WORKERS = 4
DEFAULT_RULE_TIMEOUT = timedelta(seconds=60)
DEFAULT_SLACK_BASE_URL = "https://slack.com/api/"
DEFAULT_GROUP_WAIT = timedelta(seconds=3)
MAX_SECRET_BYTES = 64 * 1024  # tokens, passwords and DSNs are short; a bigger file is a mistake


@dataclass(frozen=True)
class SearchSource:
    name: str
    hosts: tuple[str, ...]
    aws_region: str | None = None
    aws_service: str = "es"
    aws_profile: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: timedelta = DEFAULT_SEARCH_TIMEOUT
    dashboards_url: str | None = None
    flavor: str = "auto"
    type: str = "search"


@dataclass(frozen=True)
class PostgresSource:
    name: str
    dsn: str = field(default="", repr=False)
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)  # host, port, dbname, user, password, sslmode
    connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: timedelta = DEFAULT_STATEMENT_TIMEOUT
    type: str = "postgres"


@dataclass(frozen=True)
class DmsSource:
    name: str
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    cloudwatch_endpoint_url: str | None = None  # CloudWatch (CDC latency checks); default: AWS's for the region
    timeout: timedelta = DEFAULT_DMS_TIMEOUT
    type: str = "dms"


SourceConfig = SearchSource | PostgresSource | DmsSource


@dataclass(frozen=True)
class SlackActionsConfig:
    """Who may act from Slack's buttons: user ids (U..., W...) and user group ids (S...)."""

    allow: tuple[str, ...] = ()  # acknowledge and silence; empty: anyone who sees the message
    approvers: tuple[str, ...] = ()  # approve or decline remediations; empty: nobody


@dataclass(frozen=True)
class SlackConfig:
    token: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    channel: str | None = None
    base_url: str = DEFAULT_SLACK_BASE_URL
    mention_critical: str | None = None
    # Notifications for one channel within this wait after the first go out as one message.
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    app_token: str | None = field(default=None, repr=False)  # Socket Mode: buttons in alerts
    actions: SlackActionsConfig = SlackActionsConfig()


@dataclass(frozen=True)
class RuleDefaults:
    schedule: Schedule = DEFAULT_SCHEDULE
    repeat_every: timedelta = DEFAULT_REPEAT_EVERY
    severity: Severity = DEFAULT_SEVERITY
    for_: timedelta = timedelta(0)
    settle: timedelta = DEFAULT_SETTLE


DEFAULT_HEARTBEAT_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SelfMonitoring:
    channel: str | None = None
    heartbeat_url: str | None = field(default=None, repr=False)  # often carries a secret token
    heartbeat_every: timedelta = DEFAULT_HEARTBEAT_EVERY


@dataclass(frozen=True)
class StateConfig:
    """Where the state lives: SQLite at ``path`` (one instance), or a PostgreSQL ``schema`` several instances share."""

    type: str = "sqlite"
    path: str = ""  # sqlite: the file (Config.state_path)
    dsn: str = field(default="", repr=False)  # postgres: may hold a password
    schema: str = "watchdog"

    @property
    def shared(self) -> bool:
        """Whether other instances may share this state (so a lease decides who leads)."""
        return self.type == "postgres"

    @property
    def where(self) -> str:
        """The state in words, for messages (never the DSN: it may hold a password)."""
        return self.path if self.type == "sqlite" else f"PostgreSQL schema {self.schema}"


DEFAULT_LEASE = timedelta(seconds=15)


@dataclass(frozen=True)
class HaConfig:
    lease: timedelta = DEFAULT_LEASE
    instance: str = ""  # "" until load_config names it <hostname>:<pid>


@dataclass(frozen=True)
class Config:
    path: str
    rules_dir: str
    state_path: str
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    slack: SlackConfig | None = None
    defaults: RuleDefaults = RuleDefaults()
    workers: int = DEFAULT_WORKERS
    rule_timeout: timedelta = DEFAULT_RULE_TIMEOUT
    log_level: str = "info"
    self_monitoring: SelfMonitoring = SelfMonitoring()
    metrics_listen: str | None = None
    # Environment variables rule files may use as ${NAME}; rules read no other (the environment may hold secrets).
    rule_env: frozenset[str] = frozenset()
    rule_file_dirs: tuple[str, ...] = ()  # besides rules_dir, where rule files may read files (sql_file)
    rule_commands: tuple[tuple[str, ...], ...] = ()  # the exact commands a refresh may run
    rule_sql_functions: frozenset[str] = frozenset()  # functions rule SQL may call besides the built-in allow-list
    rule_refresh: RefreshGrant = field(default_factory=RefreshGrant)  # what a refresh's SQL may run (rule_refresh_sql)
    receivers: Mapping[str, Receiver] = field(default_factory=dict)  # besides the built-in slack and console
    routes: tuple[Route, ...] = ()
    time_intervals: Mapping[str, TimeInterval] = field(default_factory=dict)
    # Things that work but should be fixed (a secret file others may read); shown by validate, logged by run.
    warnings: tuple[str, ...] = ()
    state: StateConfig = StateConfig()  # type sqlite: path is state_path
    ha: HaConfig = HaConfig()

    def __post_init__(self) -> None:
        if self.state.type == "sqlite" and self.state.path != self.state_path:
            object.__setattr__(self, "state", replace(self.state, path=self.state_path))


def default_config_path(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def default_state_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the state lives when the config names no ``state_path``.

    ``$STATE_DIRECTORY/state.db`` when systemd passes a state directory (the
    first one), else ``/var/lib/watchdog/state.db``: the same file, because
    the unit's ``StateDirectory=watchdog`` is ``/var/lib/watchdog``. So
    ``watchdog silence`` typed in a shell reaches the running service.
    """
    environ = os.environ if environ is None else environ
    state_dir = environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR
    return os.path.join(state_dir, STATE_FILE_NAME)


def parse_schedule(data: Mapping[str, Any]) -> Schedule:
    if "every" in data:
        return Schedule(every=parse_duration(data["every"]))
    return Schedule(cron=data["cron"], timezone=data.get("timezone", "UTC"))


def _check_named_files(doc: yamlfile.Document, base_dir: str) -> list[Problem]:
    """Files the clients read later (``ca_certs``) are read once now, bounded: a FIFO or a device is a problem here,
    never a blocked evaluation later."""
    found: list[Problem] = []
    for name, raw in doc.data.get("sources", {}).items():
        if isinstance(raw, dict) and isinstance(raw.get("ca_certs"), str):
            target = os.path.join(base_dir, raw["ca_certs"])
            try:
                read_bytes(target, limit=MAX_FILE_BYTES)
            except UnreadableFile as exc:
                found.append(Problem.at(doc, ("sources", name, "ca_certs"), f"cannot read {target}: {exc.message}"))
    return found


def _read_secret_files(doc: yamlfile.Document, base_dir: str, warnings: list[str],
                       read: list[str] | None = None, root: tuple[str, ...] = ()) -> list[Problem]:
    """Replace every ``X_file: path`` with ``X: <contents>`` (after validation), under the key path ``root``.

    A secret file that its group or others may read adds a warning naming it
    to ``warnings``; every value read is appended to ``read`` (all are secrets).
    """
    found: list[Problem] = []

    def walk(value: Any, path: tuple[str | int, ...]) -> None:
        if not isinstance(value, dict):
            return
        for key in list(value):
            if isinstance(key, str) and key.endswith("_file") and isinstance(value[key], str):
                target = os.path.join(base_dir, value[key])
                try:
                    value[key[: -len("_file")]] = read_text(target, limit=MAX_SECRET_BYTES).strip()
                    if read is not None:
                        read.append(value[key[: -len("_file")]])
                except UnreadableFile as exc:
                    found.append(Problem.at(doc, path + (key,), f"cannot read {target}: {exc.message}"))
                else:
                    warning = _exposed(target)
                    if warning:
                        where = Problem.at(doc, path + (key,), "")
                        warnings.append(f"{where.file}:{where.line}: {where.path}: {warning}")
                del value[key]
            else:
                walk(value[key], path + (key,))

    start: Any = doc.data
    for key in root:
        start = start.get(key) if isinstance(start, dict) else None
    walk(start, root)
    return found


def _reaches_out(path: str) -> bool:
    """Whether a config key path is part of what connects to the world (a source, Slack, the heartbeat URL)."""
    return path.startswith(("sources.", "slack.", "slack[")) or path in ("slack", "self_monitoring.heartbeat_url")


def _drop_paths(data: Any, path: tuple[str | int, ...], wanted: set[str]) -> None:
    """Remove from ``data`` (found at ``path``) every value whose key path (as Problem.path says it) is ``wanted``;
    a source's ``type`` stays (it says which kind of source it is)."""
    if isinstance(data, dict):
        for key in list(data):
            if format_path((*path, key)) in wanted and not (len(path) == 2 and path[0] == "sources" and key == "type"):
                del data[key]
            else:
                _drop_paths(data[key], (*path, key), wanted)
    elif isinstance(data, list):
        for index in reversed(range(len(data))):
            if format_path((*path, index)) in wanted:
                del data[index]
            else:
                _drop_paths(data[index], (*path, index), wanted)


def _drop_secret_files(data: Any) -> None:
    """Remove every ``X_file`` key, unread (for commands that need no secret)."""
    if isinstance(data, dict):
        for key in list(data):
            if isinstance(key, str) and key.endswith("_file") and isinstance(data[key], str):
                del data[key]
            else:
                _drop_secret_files(data[key])


def _exposed(path: str) -> str | None:
    """A warning when the secret file at ``path`` may be read by its group or by others, else None."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    who = "group and others" if mode & 0o007 and mode & 0o070 else "others" if mode & 0o007 else "its group"
    return f"secret file {path} is readable by {who} (mode {mode:04o}); make it readable by watchdog's user only: chmod 600 {path}"


def _secrets(config: Config) -> list[str | None]:
    """Every secret value ``config`` holds, for ``redact.register``."""
    values: list[str | None] = []
    if config.slack is not None:
        values += [config.slack.token, config.slack.webhook_url, config.slack.app_token]
    values.append(config.self_monitoring.heartbeat_url)
    for receiver in config.receivers.values():
        values += receiver_secrets(receiver)
    if config.state.dsn:
        values += [config.state.dsn, _dsn_password(config.state.dsn)]
    for source in config.sources.values():
        if isinstance(source, SearchSource):
            values += [source.password, source.api_key]
            values += [urllib.parse.urlsplit(host).password for host in source.hosts if "@" in host]
        elif isinstance(source, PostgresSource):
            values.append(str(source.params.get("password") or "") or None)
            values.append(_dsn_password(source.dsn))
    return values


def _check_rule_dirs(doc: yamlfile.Document, base_dir: str) -> list[Problem]:
    """The file system's root as ``rules_dir`` (or a ``rule_file_dirs`` entry) would hand every file to rule authors."""
    found: list[Problem] = []
    wanted: list[tuple[tuple[str | int, ...], Any]] = [(("rules_dir",), doc.data.get("rules_dir"))]
    wanted += [(("rule_file_dirs", i), d) for i, d in enumerate(doc.data.get("rule_file_dirs") or ())]
    for path, value in wanted:
        if isinstance(value, str) and os.path.realpath(os.path.join(base_dir, value)) == os.path.realpath(os.sep):
            found.append(Problem.at(doc, path, "the root directory (/) is refused: name the directory that holds the "
                                               "rule files (or their SQL), e.g. /etc/watchdog/rules"))
    return found


def _check_dsns(doc: yamlfile.Document) -> list[Problem]:
    """A Problem for each postgres ``dsn`` that libpq cannot parse; never quoting it (it may hold a password)."""
    found: list[Problem] = []
    named: list[tuple[tuple[str, ...], Any]] = [(("sources", name), raw) for name, raw in (doc.data.get("sources") or {}).items()]
    named.append((("state",), doc.data.get("state")))
    for keys, raw in named:
        if not (isinstance(raw, dict) and raw.get("type") == "postgres" and isinstance(raw.get("dsn"), str) and raw["dsn"]):
            continue
        try:
            import psycopg2.extensions

            psycopg2.extensions.parse_dsn(raw["dsn"])
        except Exception:  # libpq's message quotes the text around the mistake, password included
            found.append(Problem.at(doc, (*keys, "dsn"),
                                    "not a valid libpq connection string (key=value pairs such as 'host=db dbname=w', "
                                    "or a postgresql:// URI); the value is not shown, as it may hold a password"))
    return found


def _dsn_password(dsn: str) -> str | None:
    """The password in a libpq DSN (key=value or URI form), when it has one and parses."""
    if not dsn:
        return None
    try:
        import psycopg2.extensions

        return psycopg2.extensions.parse_dsn(dsn).get("password")
    except Exception:  # a malformed DSN: the redaction patterns still cover password=... and user:pass@
        return None


def _source(name: str, raw: Mapping[str, Any], base_dir: str, rule_timeout: timedelta = DEFAULT_RULE_TIMEOUT) -> SourceConfig:
    kind = raw["type"]

    def timeout(key: str, default: timedelta) -> timedelta:
        # A default never reaches a short rule_timeout: half of it at most (a given value is checked instead).
        return parse_duration(raw[key]) if key in raw else min(default, rule_timeout / 2)

    if kind == "search":
        sigv4 = raw.get("aws_sigv4") or {}
        basic = raw.get("basic_auth") or {}
        return SearchSource(
            name=name, hosts=tuple(raw["hosts"]),
            aws_region=sigv4.get("region"), aws_service=sigv4.get("service", "es"), aws_profile=sigv4.get("profile"),
            username=basic.get("username"), password=basic.get("password"), api_key=raw.get("api_key"),
            verify_certs=raw.get("verify_certs", True),
            ca_certs=os.path.join(base_dir, raw["ca_certs"]) if "ca_certs" in raw else None,
            timeout=timeout("timeout", DEFAULT_SEARCH_TIMEOUT),
            dashboards_url=raw.get("dashboards_url"), flavor=raw.get("flavor", "auto"),
        )
    if kind == "postgres":
        params = {k: raw[k] for k in ("host", "port", "dbname", "user", "password", "sslmode") if k in raw}
        return PostgresSource(
            name=name, dsn=raw.get("dsn", ""), params=params,
            connect_timeout=timeout("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            statement_timeout=parse_duration(raw.get("statement_timeout", "30s")),
        )
    return DmsSource(name=name, region=raw.get("region"), profile=raw.get("profile"), endpoint_url=raw.get("endpoint_url"),
                     cloudwatch_endpoint_url=raw.get("cloudwatch_endpoint_url"),
                     timeout=timeout("timeout", DEFAULT_DMS_TIMEOUT))


def _timeout_problems(doc: yamlfile.Document, data: Mapping[str, Any]) -> list[Problem]:
    """Every source's timeouts must be shorter than rule_timeout, so a silent source is reported as such."""
    rule_timeout = parse_duration(data.get("rule_timeout", "60s"))
    found = []
    for name, raw in data.get("sources", {}).items():
        for key in ("timeout", "connect_timeout"):
            if key in raw and parse_duration(raw[key]) >= rule_timeout:
                found.append(Problem.at(doc, ("sources", name, key), f"{raw[key]} is not shorter than rule_timeout "
                                        f"({data.get('rule_timeout', '60s')}): a source that does not answer would "
                                        "time the whole evaluation out instead of being reported"))
    return found


def _routing_problems(doc: yamlfile.Document) -> list[Problem]:
    """What the schema cannot say about routing: every route names receivers and time intervals that exist,
    ``slack`` only with a slack block, regular expressions that compile, intervals that make sense."""
    data = doc.data
    found: list[Problem] = []
    names = set(data.get("receivers") or {}) | set(BUILTIN_RECEIVERS)
    intervals = data.get("time_intervals") or {}
    for name, raw in intervals.items():
        try:
            parse_interval(name, raw)
        except ValueError as exc:
            where, _, message = str(exc).partition(": ")
            path: tuple[str | int, ...] = ("time_intervals", name)
            for part in where.replace("].", "]").split("]"):
                part = part.lstrip("[.")
                if part:
                    path += (int(part),) if part.isdigit() else (part,)
            found.append(Problem.at(doc, path, message))
    for number, route in enumerate(data.get("routes") or ()):
        try:
            parse_route(number + 1, route)
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            found.append(Problem.at(doc, ("routes", number, "match", key.split(".", 1)[1]), message))
        for index, receiver in enumerate(route.get("receivers", ())):
            if receiver not in names:
                known = ", ".join(sorted(names))
                found.append(Problem.at(doc, ("routes", number, "receivers", index),
                                        f"unknown receiver {receiver!r} (the receivers are {known})"))
            elif receiver == "slack" and "slack" not in data:
                found.append(Problem.at(doc, ("routes", number, "receivers", index),
                                        "receiver 'slack' needs the slack block (or name console)"))
        for key in ("active_time_intervals", "mute_time_intervals"):
            for index, interval in enumerate(route.get(key, ())):
                if interval not in intervals:
                    known = ", ".join(sorted(intervals)) or "none defined"
                    found.append(Problem.at(doc, ("routes", number, key, index),
                                            f"unknown time interval {interval!r} (time_intervals: {known})"))
    return found


def load_config(path: str, environ: Mapping[str, str] | None = None, *, secrets: bool = True) -> Config:
    """Load the config file at ``path``.

    With ``secrets=False`` (``status``, ``silence``, ``unsilence``: commands
    that only read or write the state and never reach a source or Slack) no
    ``*_file`` secret is read, and an environment variable that is not set in
    what reaches out (the sources, ``slack``, the heartbeat URL) is no error:
    they work from a plain shell, for a user who may read the state but not
    the credentials, without the service's EnvironmentFile.

    Raises InvalidFileError listing every problem (file, line, key path).
    """
    environ = os.environ if environ is None else environ
    try:
        doc = yamlfile.load(path, display_path(path))
    except UnreadableFile as exc:
        raise InvalidFileError([Problem(display_path(path), exc.line, exc.column, "",
                                        f"cannot read config file: {exc.message}")]) from None
    except yamlfile.YamlError as exc:
        raise InvalidFileError([Problem.from_yaml_error(exc)]) from None
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise InvalidFileError([Problem.whole_file(doc.filename, "the config file must be a mapping of keys")])
    problems = interpolate(doc, environ)
    unresolved = [p for p in problems if not secrets and _reaches_out(p.path)]
    problems = [p for p in problems if p not in unresolved]  # (their values stay as written, never used)
    problems += schema.problems(doc, "config.schema.json",
                                skip=[p.path for p in problems + unresolved])  # unset ${VAR}: said once
    if unresolved and not problems:
        # A value the schema refuses as written (a duration, a number) would fail its typed parse below: it is
        # dropped (its default stands in; these commands never use it).
        refused = {p.path for p in schema.problems(doc, "config.schema.json")}
        _drop_paths(doc.data, (), {p.path for p in unresolved if p.path in refused})
    base_dir = os.path.dirname(os.path.abspath(path))
    warnings: list[str] = []
    if not problems:
        problems += _timeout_problems(doc, doc.data)
    if not problems:
        problems += _routing_problems(doc)
    read: list[str] = []
    if not problems and secrets:
        problems += _read_secret_files(doc, base_dir, warnings, read)
        problems += _check_named_files(doc, base_dir)
    elif not problems:  # the state's DSN is needed to read the state (status, silence), the other secrets are not
        problems += _read_secret_files(doc, base_dir, warnings, root=("state",))
        _drop_secret_files(doc.data)
    if not problems:
        problems += (_check_dsns(doc) if secrets else []) + _check_rule_dirs(doc, base_dir)
        problems += [Problem.at(doc, ("rule_refresh_sql", i), problem)
                     for i, entry in enumerate(doc.data.get("rule_refresh_sql") or ())
                     if (problem := refresh_entry_problem(entry)) is not None]
    if problems:
        raise InvalidFileError(sorted(problems))
    data: dict[str, Any] = doc.data
    raw_defaults = data.get("defaults", {})
    defaults = RuleDefaults(
        schedule=parse_schedule(raw_defaults["schedule"]) if "schedule" in raw_defaults else DEFAULT_SCHEDULE,
        repeat_every=parse_duration(raw_defaults.get("repeat_every", "4h")),
        severity=Severity(raw_defaults.get("severity", DEFAULT_SEVERITY.value)),
        for_=parse_duration(raw_defaults.get("for", "0s")),
        settle=parse_duration(raw_defaults["settle"]) if "settle" in raw_defaults else DEFAULT_SETTLE,
    )
    slack = None
    if "slack" in data:
        raw = data["slack"]
        actions = raw.get("actions", {})
        slack = SlackConfig(token=raw.get("token"), webhook_url=raw.get("webhook_url"), channel=raw.get("channel"),
                            base_url=raw.get("base_url", DEFAULT_SLACK_BASE_URL), mention_critical=raw.get("mention_critical"),
                            group_wait=parse_duration(raw["group_wait"]) if "group_wait" in raw else DEFAULT_GROUP_WAIT,
                            app_token=raw.get("app_token"),
                            actions=SlackActionsConfig(allow=tuple(actions.get("allow", ())),
                                                       approvers=tuple(actions.get("approvers", ()))))
    config = Config(
        path=os.path.abspath(path),
        rules_dir=os.path.join(base_dir, data.get("rules_dir", DEFAULT_RULES_DIR)),
        state_path=os.path.normpath(os.path.join(base_dir, data["state_path"])) if "state_path" in data else default_state_path(environ),
        sources={name: _source(name, raw, base_dir, parse_duration(data.get("rule_timeout", "60s")))
                 for name, raw in data.get("sources", {}).items()},
        slack=slack, defaults=defaults,
        workers=int(data.get("workers", DEFAULT_WORKERS)),
        rule_timeout=parse_duration(data.get("rule_timeout", "60s")),
        log_level=data.get("log_level", "info"),
        self_monitoring=SelfMonitoring(
            channel=data.get("self_monitoring", {}).get("channel"),
            heartbeat_url=data.get("self_monitoring", {}).get("heartbeat_url"),
            heartbeat_every=parse_duration(data.get("self_monitoring", {}).get("heartbeat_every", "1m"))),
        metrics_listen=data.get("metrics", {}).get("listen"),
        rule_env=frozenset(data.get("rule_env", ())),
        rule_file_dirs=tuple(os.path.join(base_dir, d) for d in data.get("rule_file_dirs", ())),
        rule_commands=tuple(tuple(str(a) for a in c) for c in data.get("rule_commands", ())),
        rule_sql_functions=frozenset(data.get("rule_sql_functions", ())),
        rule_refresh=RefreshGrant.from_entries(data.get("rule_refresh_sql", ())),
        receivers={name: parse_receiver(name, raw, base_dir) for name, raw in data.get("receivers", {}).items()},
        routes=tuple(parse_route(n, raw) for n, raw in enumerate(data.get("routes", ()), start=1)),
        time_intervals={name: parse_interval(name, raw) for name, raw in data.get("time_intervals", {}).items()},
        warnings=tuple(warnings),
        state=StateConfig(type=data.get("state", {}).get("type", "sqlite"), dsn=data.get("state", {}).get("dsn", ""),
                          schema=data.get("state", {}).get("schema", "watchdog")),
        ha=HaConfig(lease=parse_duration(data.get("ha", {}).get("lease", "15s")),
                    instance=data.get("ha", {}).get("instance") or f"{socket.gethostname()}:{os.getpid()}"),
    )
    redact.register(_secrets(config) + list(read))
    return config
