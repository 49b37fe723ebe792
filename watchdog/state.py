"""The state store: SQLite (standard library, WAL) at ``state_path``, or PostgreSQL (``state: {type: postgres}``).

It keeps each rule's runs and health, each group's lifecycle state, silences,
the notification outbox and an audit log (``StateStore``, made of parts: see
``state_base``). A transition and the notifications it causes are written in
one transaction, so after ``kill -9`` nothing notified is notified again and
nothing decided is lost. Its SQL is written
once for both databases (``state_db`` runs it); with several instances on one
PostgreSQL state, the leader's writes are fenced by its lease (``lease``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchdog.baseline import Baseline
from watchdog.dependencies import Explanation, Phase
from watchdog.lifecycle import GroupState, Health, State
from watchdog.rule import Severity
from watchdog.state_actions import ActionRecords
from watchdog.state_base import json_text
from watchdog.state_db import Database, SqliteDatabase
from watchdog.state_lease import LeaseRecords
from watchdog.state_outbox import OutboxRecords
from watchdog.times import from_text, to_text

if TYPE_CHECKING:
    from watchdog.lease import Fence

MIGRATIONS: tuple[str, ...] = (
    """
    create table rules (
        rule text primary key, last_run text, next_run text, last_duration real,
        errors integer not null default 0, last_error text, error_since text,
        error_notified integer not null default 0, error_episode text not null default '',
        facts text not null default '{}'
    );
    create table groups (
        rule text not null, grp text not null, state text not null, severity text not null,
        since text not null, value text, summary text not null default '', details text not null default '{}',
        episode text not null default '', notified_at text, firing_since text,
        primary key (rule, grp)
    );
    create table silences (
        id integer primary key autoincrement, rule text not null, grp text,
        until text not null, reason text not null default '', created text not null
    );
    create table outbox (
        id integer primary key autoincrement, created text not null, rule text not null, grp text not null,
        kind text not null, episode text not null, payload text not null,
        attempts integer not null default 0, next_attempt text not null, sent_at text,
        last_error text, failed integer not null default 0
    );
    create index outbox_pending on outbox (sent_at, failed, id);
    create table threads (episode text primary key, notifier text not null, ref text not null, created text not null);
    create table audit (
        id integer primary key autoincrement, at text not null, rule text not null, grp text not null,
        action text not null, detail text not null default '{}'
    );
    create table notifier_status (name text primary key, ok integer not null, error text, at text not null);
    """,
    """
    create table remediations (
        rule text not null, task text not null, record text not null, updated text not null,
        primary key (rule, task)
    );
    """,
    # keep_firing_for: since when a firing alert's condition has been false
    "alter table groups add column clear_since text",
    # Slack actions: acknowledgements (per firing episode), silences until an episode resolves, who silenced,
    # and the clicks already handled (Socket Mode may deliver one click twice).
    """
    create table acks (
        episode text primary key, rule text not null, grp text not null, by_user text not null, at text not null,
        severity text not null
    );
    create table slack_actions (key text primary key, at text not null, outcome text not null);
    alter table silences add column episode text;
    alter table silences add column created_by text not null default '';
    create table approvals (
        episode text primary key, rule text not null, task text not null, requested text not null,
        payload text not null, decision text, by_user text, decided text
    )
    """,
    # depends_on: what explains a dependent alert (see ``dependencies.Explanation``), beside its group state
    """
    create table explanations (
        rule text not null, grp text not null, phase text not null, upstream_rule text not null,
        upstream_group text not null, episode text not null, since text not null, resolved_at text,
        evaluations integer not null default 0,
        primary key (rule, grp)
    )
    """,
    # Delivery truth: the message an outbox entry was first attempted in (its membership is fixed from then on,
    # so a retry carries the same entries), and a receiver refusing watchdog's credentials.
    """
    alter table outbox add column message text;
    alter table notifier_status add column refused integer not null default 0
    """,
    # Learned baselines (freshness learn:, sql_value anomaly:): per rule and item (a check or check/group), the
    # small model last learned, the history it learns from (JSON), and when the source's history was last read.
    """
    create table baselines (
        rule text not null, item text not null, model text not null default '{}',
        history text not null default '[]', fetched_at text, updated text not null,
        primary key (rule, item)
    )
    """,
    # Receivers: each outbox entry is for one receiver ('' is the main notifier: Slack, else the console), with
    # its own attempts, retries and sent mark, so one receiver down never holds back another.
    """
    alter table outbox add column receiver text not null default '';
    create index outbox_receiver on outbox (receiver, sent_at, failed)
    """,
    # High availability (several instances on one PostgreSQL state): the leader lease and its fencing epoch
    # (expires_at on the database's clock, seconds since the epoch), and the instances seen, for status.
    """
    create table ha_lease (name text primary key, holder text not null, epoch bigint not null,
                           expires_at double precision not null);
    create table ha_instances (instance text primary key, started double precision not null,
                               last_seen double precision not null, is_leader integer not null default 0)
    """,
    # Threads, digests, links and acknowledgements look entries up by episode: without an index each lookup
    # scans the outbox, which grows over its 30 days of retention.
    "create index outbox_episode on outbox (episode, receiver)",
    # When an outbox entry was first attempted (wall clock): a lost answer is looked for among the receiver's
    # messages since then (a bound in time, where a count of recent messages misses in a busy channel).
    "alter table outbox add column first_attempt text",
)

# A state copied to another database leaves these behind: they belong to the database (its schema version) or to
# the instances running on it (the lease).
_NOT_COPIED = frozenset({"schema_version", "ha_lease", "ha_instances"})

# Sent notifications, threads and audit rows older than this are pruned.
RETENTION = timedelta(days=30)


# The state holds alert texts and remediation records: only its owner may read it.
STATE_FILE_MODE = 0o600


def _create_private(path: str) -> None:
    """Create ``path`` (and so, through SQLite, its -wal and -shm files) readable by its owner only.

    SQLite gives the WAL and shared-memory files the database file's mode, so
    creating the database 0600 before SQLite opens it covers all three. An
    existing database readable by others is narrowed to 0600.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, STATE_FILE_MODE)
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            for name in (path, path + "-wal", path + "-shm"):
                with contextlib.suppress(OSError):  # not ours to change (another user runs status): leave it
                    os.chmod(name, mode & 0o700 | STATE_FILE_MODE)
        return
    os.close(fd)


@dataclass(frozen=True)
class RuleRecord:
    rule: str
    last_run: datetime | None
    next_run: datetime | None
    last_duration: float | None
    health: Health
    facts: Mapping[str, Any]


class StateStore(LeaseRecords, OutboxRecords, ActionRecords):
    """The state: SQLite at ``path`` (the default), or the ``db`` given (``open_store``: PostgreSQL).

    One instance may be shared by threads (its database serializes them).
    ``fence``, when set, makes every write of the leader's (evaluations,
    outbox claims and marks, journal steps) check in its own transaction that
    this instance still holds the lease: a deposed leader's write raises
    ``Deposed`` and changes nothing. Its parts, one concept each, are the
    lease (``state_lease``), the outbox (``state_outbox``) and what people and
    remediations decide (``state_actions``); rules, groups, evaluations,
    baselines, audit and retention are here.
    """

    def __init__(self, path: str | None = None, *, db: Database | None = None, fence: Fence | None = None):
        if db is None:
            if path is None:
                raise ValueError("StateStore needs a path or a database")
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            if path != ":memory:":
                _create_private(path)
            db = SqliteDatabase(path)
        self.db: Database = db
        self.path = db.where
        self.lock = db.lock
        self.fence = fence
        try:
            self._migrate()
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def quick_check(self) -> str | None:
        """None when the database finds itself sound (SQLite's ``quick_check``; a server checks its own), else its
        first complaint."""
        if self.db.dialect != "sqlite":
            return None
        rows = self._query("pragma quick_check(1)")
        answer = str(rows[0][0]) if rows else "no answer"
        return None if answer == "ok" else answer

    def newest_run(self) -> datetime | None:
        """When the most recent evaluation recorded here ran (None: none recorded)."""
        rows = self._query("select max(last_run) from rules")
        return from_text(rows[0][0]) if rows and rows[0][0] else None

    def _migrate(self) -> None:
        with self.transaction() as db:
            if db.dialect == "postgres":  # two instances starting at once: one migrates, the other waits for it
                db.execute("select set_config('lock_timeout', '60s', true), set_config('statement_timeout', '120s', true)")
                db.execute("select pg_advisory_xact_lock(7286541901)")
            version = db.schema_version()
            if version > len(MIGRATIONS):
                raise RuntimeError(f"{self.path} was written by a newer watchdog (schema {version})")
            db.prepare()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(db.ddl(statement))
                db.set_schema_version(number)

    # --- copying a whole state (``watchdog state migrate``) ------------------------------------------

    def copy_from(self, source: StateStore) -> dict[str, int]:
        """Copy every row of ``source`` (both at the newest schema) into this store, which must hold no state yet;
        returns the rows copied per table. Raises StoreError, or ValueError when this store is not empty."""
        tables = [t for t in source.db.tables() if t not in _NOT_COPIED]
        copied: dict[str, int] = {}
        with self.transaction() as db:
            mine = set(db.tables())
            busy = [t for t in tables if t in mine and db.execute(f"select count(*) from {t}").fetchone()[0]]
            if busy:
                raise ValueError(f"{self.path} already holds state (tables {', '.join(busy)}): migrate into an empty one")
            for table in tables:
                rows = source._query(f"select * from {table}")  # names from the source's catalogue, not input
                copied[table] = len(rows)
                if not rows:
                    continue
                columns = list(rows[0].keys())
                insert = f"insert into {table} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"
                for row in rows:
                    db.execute(insert, tuple(row[c] for c in columns))
                if "id" in columns:
                    db.identity_follows(table, "id")
        return copied

    # --- rules -----------------------------------------------------------------

    def rule_record(self, rule: str) -> RuleRecord | None:
        return self.rule_records(rule).get(rule)

    def rule_records(self, rule: str | Collection[str] | None = None) -> dict[str, RuleRecord]:
        """Rule records by rule name: of one rule, of the named rules (a collection), or of all (None)."""
        rows = self._rows("rules", rule)
        return {row["rule"]: RuleRecord(
            rule=row["rule"], last_run=from_text(row["last_run"]), next_run=from_text(row["next_run"]),
            last_duration=row["last_duration"],
            health=Health(errors=row["errors"], last_error=row["last_error"], error_since=from_text(row["error_since"]),
                          notified=bool(row["error_notified"]), episode=row["error_episode"]),
            facts=json.loads(row["facts"])) for row in rows}

    def set_next_run(self, rule: str, next_run: datetime) -> None:
        with self.leader_transaction() as db:
            db.execute("insert into rules (rule, next_run) values (?, ?) on conflict (rule) do update set next_run = excluded.next_run",
                       (rule, to_text(next_run)))

    def forget_rule(self, rule: str) -> None:
        with self.leader_transaction() as db:
            db.execute("delete from rules where rule = ?", (rule,))
            db.execute("delete from groups where rule = ?", (rule,))
            db.execute("delete from remediations where rule = ?", (rule,))
            db.execute("delete from explanations where rule = ?", (rule,))
            db.execute("delete from baselines where rule = ?", (rule,))

    # --- groups ----------------------------------------------------------------

    def explanations(self, rule: str | None = None) -> dict[str, dict[str, Explanation]]:
        """What explains each dependent alert (``depends_on``), by rule name, then group."""
        query, args = ("select * from explanations where rule = ?", (rule,)) if rule else ("select * from explanations", ())
        out: dict[str, dict[str, Explanation]] = {}
        for row in self._query(query, args):
            out.setdefault(row["rule"], {})[row["grp"]] = Explanation(
                phase=Phase(row["phase"]), rule=row["upstream_rule"], group=row["upstream_group"],
                episode=row["episode"], since=from_text(row["since"]),  # type: ignore[arg-type]
                resolved_at=from_text(row["resolved_at"]), evaluations=row["evaluations"])
        return out

    def groups(self, rule: str | Collection[str] | None = None) -> dict[str, dict[str, GroupState]]:
        """Group states by rule name, then group: of one rule, of the named rules (a collection), or of all (None)."""
        out: dict[str, dict[str, GroupState]] = {}
        for row in self._rows("groups", rule):
            out.setdefault(row["rule"], {})[row["grp"]] = GroupState(
                state=State(row["state"]), severity=Severity(row["severity"]), since=from_text(row["since"]),  # type: ignore[arg-type]
                value=json.loads(row["value"]) if row["value"] is not None else None, summary=row["summary"],
                details=json.loads(row["details"]), episode=row["episode"], notified_at=from_text(row["notified_at"]),
                firing_since=from_text(row["firing_since"]), clear_since=from_text(row["clear_since"]))
        return out

    def record_evaluation(self, rule: str, *, ran_at: datetime, next_run: datetime, duration: float,
                          health: Health, states: Mapping[str, GroupState | None],
                          notifications: Sequence[tuple[str, str, str, Mapping[str, Any]]
                                                  | tuple[str, str, str, Mapping[str, Any], str]],
                          facts: Mapping[str, Any] | None = None, audit: Sequence[tuple[str, str, Mapping[str, Any]]] = (),
                          recorded_at: datetime | None = None,
                          explanations: Mapping[str, Explanation | None] | None = None,
                          baselines: Mapping[str, Baseline] | None = None) -> None:
        """Write one evaluation's outcome atomically.

        ``states`` maps groups to their new state (None deletes it);
        ``explanations`` maps groups to what explains them now (None: nothing);
        ``notifications`` are (group, kind, episode, payload[, receiver]) rows for the outbox,
        stamped ``recorded_at`` (default ``ran_at``): the outbox's group wait starts then;
        ``baselines`` are the learned baselines it changed, by item (the others are left as they are).
        """
        with self.leader_transaction() as db:
            db.execute(
                """insert into rules (rule, last_run, next_run, last_duration, errors, last_error, error_since,
                       error_notified, error_episode, facts)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, '{}'))
                   on conflict (rule) do update set last_run = excluded.last_run, next_run = excluded.next_run,
                       last_duration = excluded.last_duration, errors = excluded.errors, last_error = excluded.last_error,
                       error_since = excluded.error_since, error_notified = excluded.error_notified,
                       error_episode = excluded.error_episode, facts = coalesce(?, rules.facts)""",
                (rule, to_text(ran_at), to_text(next_run), duration, health.errors, health.last_error,
                 to_text(health.error_since), int(health.notified), health.episode,
                 json_text(facts) if facts is not None else None, json_text(facts) if facts is not None else None))
            for group, state in states.items():
                if state is None:
                    db.execute("delete from groups where rule = ? and grp = ?", (rule, group))
                    continue
                db.execute(
                    """insert into groups (rule, grp, state, severity, since, value, summary, details, episode,
                           notified_at, firing_since, clear_since) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       on conflict (rule, grp) do update set state = excluded.state, severity = excluded.severity,
                           since = excluded.since, value = excluded.value, summary = excluded.summary,
                           details = excluded.details, episode = excluded.episode, notified_at = excluded.notified_at,
                           firing_since = excluded.firing_since, clear_since = excluded.clear_since""",
                    (rule, group, state.state.value, state.severity.value, to_text(state.since),
                     None if state.value is None else json_text(state.value), state.summary, json_text(dict(state.details)),
                     state.episode, to_text(state.notified_at), to_text(state.firing_since), to_text(state.clear_since)))
            for group, explanation in (explanations or {}).items():
                if explanation is None:
                    db.execute("delete from explanations where rule = ? and grp = ?", (rule, group))
                    continue
                db.execute(
                    """insert into explanations (rule, grp, phase, upstream_rule, upstream_group, episode, since,
                           resolved_at, evaluations) values (?, ?, ?, ?, ?, ?, ?, ?, ?)
                       on conflict (rule, grp) do update set phase = excluded.phase,
                           upstream_rule = excluded.upstream_rule, upstream_group = excluded.upstream_group,
                           episode = excluded.episode, since = excluded.since, resolved_at = excluded.resolved_at,
                           evaluations = excluded.evaluations""",
                    (rule, group, explanation.phase.value, explanation.rule, explanation.group, explanation.episode,
                     to_text(explanation.since), to_text(explanation.resolved_at), explanation.evaluations))
            created = to_text(recorded_at or ran_at)
            for group, kind, episode, payload, *receiver in notifications:
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                              values (?, ?, ?, ?, ?, ?, ?, ?)""",
                           (created, rule, group, kind, episode, json_text(payload), created, receiver[0] if receiver else ""))
            for group, action, detail in audit:
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (to_text(ran_at), rule, group, action, json_text(detail)))
            for item, baseline in (baselines or {}).items():
                db.execute(
                    """insert into baselines (rule, item, model, history, fetched_at, updated) values (?, ?, ?, ?, ?, ?)
                       on conflict (rule, item) do update set model = excluded.model, history = excluded.history,
                           fetched_at = excluded.fetched_at, updated = excluded.updated""",
                    (rule, item, json_text(dict(baseline.model)), baseline.history, to_text(baseline.fetched_at), created))

    def episode_group(self, episode: str) -> tuple[str, str, GroupState] | None:
        """The (rule, group, state) whose current firing episode is ``episode``, if it still fires."""
        rows = self._query("select rule, grp from groups where episode = ? and state = 'firing'", (episode,))
        if not rows:
            return None
        rule, group = rows[0]["rule"], rows[0]["grp"]
        state = self.groups(rule).get(rule, {}).get(group)
        return (rule, group, state) if state is not None else None

    def firing_count(self) -> int:
        """How many alert groups are firing now (one count, no group decoded)."""
        return int(self._query("select count(*) from groups where state = 'firing'")[0][0])

    # --- learned baselines ---------------------------------------------------------------

    def baselines(self, rule: str) -> dict[str, Baseline]:
        """The learned baselines of ``rule``, by item (a check, or check/group)."""
        rows = self._query("select item, model, history, fetched_at from baselines where rule = ?", (rule,))
        return {r["item"]: Baseline(model=json.loads(r["model"]), history=r["history"],
                                    fetched_at=from_text(r["fetched_at"])) for r in rows}

    # --- audit and retention ----------------------------------------------------------

    def audit(self, rule: str | None = None) -> list[dict[str, Any]]:
        query, args = ("select * from audit where rule = ? order by id", (rule,)) if rule else ("select * from audit order by id", ())
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in self._query(query, args)]

    def prune(self, now: datetime, retention: timedelta = RETENTION) -> None:
        cutoff = to_text(now - retention)
        with self.leader_transaction() as db:
            db.execute("delete from outbox where (sent_at is not null or failed <> 0) and created < ?", (cutoff,))
            db.execute("delete from threads where created < ? and episode not in (select episode from groups)", (cutoff,))
            db.execute("delete from audit where at < ?", (cutoff,))
            db.execute("delete from silences where until < ?", (cutoff,))
            db.execute("delete from silences where episode is not null and episode not in (select episode from groups)")
            db.execute("delete from acks where episode not in (select episode from groups)")
            db.execute("delete from slack_actions where at < ?", (cutoff,))
            db.execute("delete from approvals where requested < ?", (cutoff,))
