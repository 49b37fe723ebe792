"""The state store: SQLite (standard library, WAL) at ``state_path``, or PostgreSQL (``state: {type: postgres}``).

It keeps each rule's runs and health, each group's lifecycle state, silences,
the notification outbox and an audit log. A transition and the notifications
it causes are written in one transaction, so after ``kill -9`` nothing
notified is notified again and nothing decided is lost. Its SQL is written
once for both databases (``state_db`` runs it); with several instances on one
PostgreSQL state, the leader's writes are fenced by its lease (``lease``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchdog.baseline import Baseline
from watchdog.dependencies import Explanation, Phase
from watchdog.lifecycle import GroupState, Health, State
from watchdog.rule import Severity
from watchdog.state_db import Database, Row, SqliteDatabase
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
)

# Names bound per ``in (...)`` list: well under SQLite's and PostgreSQL's limits on parameters.
_IN_CHUNK = 500

# A state copied to another database leaves these behind: they belong to the database (its schema version) or to
# the instances running on it (the lease).
_NOT_COPIED = frozenset({"schema_version", "ha_lease", "ha_instances"})

# Sent notifications, threads and audit rows older than this are pruned.
RETENTION = timedelta(days=30)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


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


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str
    group: str | None
    until: datetime
    reason: str
    created: datetime

    episode: str | None = None  # "until resolved": covers only this firing episode
    created_by: str = ""  # a Slack user id when silenced from Slack

    def covers(self, rule: str, group: str, now: datetime, episode: str | None = None) -> bool:
        if self.episode is not None and episode != self.episode:
            return False
        return self.rule == rule and self.group in (None, group) and self.until > now


@dataclass(frozen=True)
class Ack:
    """An acknowledged firing episode: no repeats until it resolves or its severity rises above ``severity``."""

    episode: str
    rule: str
    group: str
    by: str  # Slack user id
    at: datetime
    severity: Severity


@dataclass(frozen=True)
class LeaseView:
    """The lease as one attempt left it: who holds it, at which epoch, and for how long yet (database clock)."""

    holder: str
    epoch: int
    remaining: float  # seconds; negative: expired


@dataclass(frozen=True)
class Instance:
    """An instance that shares this state, as it last reported itself."""

    instance: str
    leading: bool
    started: datetime
    last_seen: datetime
    seen_ago: float  # seconds before the database's clock now


@dataclass(frozen=True)
class OutboxItem:
    id: int
    created: datetime
    rule: str
    group: str
    kind: str
    episode: str
    payload: Mapping[str, Any]
    attempts: int
    message: str | None = None  # the message of its first attempt: a retry sends that message again, as it was
    receiver: str = ""  # '' is the main notifier (Slack, else the console)


class StateStore:
    """The state: SQLite at ``path`` (the default), or the ``db`` given (``open_store``: PostgreSQL).

    One instance may be shared by threads (its database serializes them).
    ``fence``, when set, makes every write of the leader's (evaluations,
    outbox claims and marks, journal steps) check in its own transaction that
    this instance still holds the lease: a deposed leader's write raises
    ``Deposed`` and changes nothing.
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

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read; serialized with writes, since worker threads share this connection."""
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def _rows(self, table: str, rule: str | Collection[str] | None) -> list[Row]:
        """The rows of ``table`` (``rules`` or ``groups``) of one rule, of the named rules, or of all (None).

        A dispatch reads only its batch's rules, so its cost does not grow with the rule set.
        """
        if rule is None:
            return self._query(f"select * from {table}")
        names = [rule] if isinstance(rule, str) else sorted(set(rule))
        rows: list[Row] = []
        for start in range(0, len(names), _IN_CHUNK):
            chunk = names[start:start + _IN_CHUNK]
            rows.extend(self._query(f"select * from {table} where rule in ({', '.join('?' * len(chunk))})", chunk))
        return rows

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A transaction (SQLite: ``begin immediate``); for writes anyone may make (silences, Slack actions)."""
        with self.db.transaction() as db:
            yield db

    @contextmanager
    def leader_transaction(self) -> Iterator[Database]:
        """A transaction that first checks the fence (see the class); raises Deposed when it no longer holds."""
        with self.db.transaction() as db:
            if self.fence is not None:
                self.fence.check(db)
            yield db

    # --- the leader lease (see ``lease``) ---------------------------------------------------

    def claim_lease(self, instance: str, epoch: int, lease_seconds: float) -> LeaseView:
        """Renew the lease (``instance`` holds it at ``epoch``), or take it over when it has expired (or was held by
        an earlier process of the same name, when ``epoch`` is 0), incrementing the epoch; note the instance seen.
        Returns the lease as it stands afterwards."""
        clock = self.db.clock_sql
        lease = f"holder, epoch, expires_at - {clock}"
        with self.lock:  # one connection: no other thread's statement runs between these
            # A renewal (the holder, every third of the lease) is two statements, each its own transaction: the
            # update is conditional on holder and epoch, so it extends only a lease still held at this epoch.
            rows = self.db.execute(
                f"update ha_lease set expires_at = {clock} + ? where name = 'leader' and holder = ? and epoch = ? "
                f"returning {lease}", (lease_seconds, instance, epoch)).fetchall() if epoch > 0 else []
            if rows:
                view = _lease(rows[0])
                self._seen(self.db, instance, leading=True)
                return view
            with self.transaction() as db:
                rows = db.execute(
                    f"""update ha_lease set holder = ?, epoch = epoch + 1, expires_at = {clock} + ?
                        where name = 'leader' and (expires_at < {clock} or (holder = ? and ? = 0)) returning {lease}""",
                    (instance, lease_seconds, instance, epoch)).fetchall()
                if not rows:
                    db.execute(f"insert into ha_lease (name, holder, epoch, expires_at) values ('leader', ?, 1, {clock} + ?) "
                               "on conflict do nothing", (instance, lease_seconds))
                    rows = db.execute(f"select {lease} from ha_lease where name = 'leader'").fetchall()
                view = _lease(rows[0])
                self._seen(db, instance, leading=view.holder == instance)
                return view

    def _seen(self, db: Database, instance: str, *, leading: bool) -> None:
        """Note ``instance`` seen now (and whether it leads), for ``instances``."""
        clock = self.db.clock_sql
        db.execute(f"""insert into ha_instances (instance, started, last_seen, is_leader) values (?, {clock}, {clock}, ?)
                       on conflict (instance) do update set last_seen = excluded.last_seen, is_leader = excluded.is_leader""",
                   (instance, int(leading)))

    def release_lease(self, instance: str, epoch: int) -> None:
        """End ``instance``'s lease now (a clean stop): the next attempt of another instance takes it over."""
        with self.transaction() as db:
            db.execute(f"update ha_lease set expires_at = {self.db.clock_sql} - 1 where name = 'leader' and holder = ? "
                       "and epoch = ?", (instance, epoch))
            db.execute("update ha_instances set is_leader = 0 where instance = ?", (instance,))

    def lease(self) -> LeaseView | None:
        """The lease as it stands (None: no instance ever took it)."""
        rows = self._query(f"select holder, epoch, expires_at - {self.db.clock_sql} from ha_lease where name = 'leader'")
        return _lease(rows[0]) if rows else None

    def instances(self) -> list[Instance]:
        """The instances that reported themselves, most recently seen first."""
        clock = self.db.clock_sql
        rows = self._query(f"select instance, is_leader, started, last_seen, {clock} - last_seen from ha_instances "
                           "order by last_seen desc")
        return [Instance(instance=str(r[0]), leading=bool(r[1]), started=_moment(r[2]), last_seen=_moment(r[3]),
                         seen_ago=float(r[4])) for r in rows]

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

    def unsent(self, episode: str, receiver: str = "") -> int:
        """How many notifications of ``episode`` are still waiting to be sent to ``receiver``."""
        return self._waiting(receiver=receiver, episode=episode)

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
                 _json(facts) if facts is not None else None, _json(facts) if facts is not None else None))
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
                     None if state.value is None else _json(state.value), state.summary, _json(dict(state.details)),
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
                           (created, rule, group, kind, episode, _json(payload), created, receiver[0] if receiver else ""))
            for group, action, detail in audit:
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (to_text(ran_at), rule, group, action, _json(detail)))
            for item, baseline in (baselines or {}).items():
                db.execute(
                    """insert into baselines (rule, item, model, history, fetched_at, updated) values (?, ?, ?, ?, ?, ?)
                       on conflict (rule, item) do update set model = excluded.model, history = excluded.history,
                           fetched_at = excluded.fetched_at, updated = excluded.updated""",
                    (rule, item, _json(dict(baseline.model)), baseline.history, to_text(baseline.fetched_at), created))

    # --- silences ----------------------------------------------------------------

    def add_silence(self, rule: str, group: str | None, until: datetime, reason: str, now: datetime) -> int:
        with self.transaction() as db:
            return _insert_silence(db, rule, group, until, reason, now)

    def remove_silence(self, silence_id: int) -> bool:
        with self.transaction() as db:
            return db.execute("delete from silences where id = ?", (silence_id,)).rowcount > 0

    def silences(self, now: datetime) -> list[Silence]:
        rows = self._query("select * from silences where julianday(until) > julianday(?) order by id", (to_text(now),))
        return [_silence(r) for r in rows]

    def silence(self, silence_id: int) -> Silence | None:
        rows = self._query("select * from silences where id = ?", (silence_id,))
        return _silence(rows[0]) if rows else None

    # --- Slack actions -------------------------------------------------------------

    def acks(self, rule: str) -> dict[str, Ack]:
        """The acknowledgements of ``rule``'s episodes, by group."""
        rows = self._query("select * from acks where rule = ?", (rule,))
        return {r["grp"]: Ack(episode=r["episode"], rule=r["rule"], group=r["grp"], by=r["by_user"],
                              at=from_text(r["at"]), severity=Severity(r["severity"])) for r in rows}  # type: ignore[arg-type]

    def episode_group(self, episode: str) -> tuple[str, str, GroupState] | None:
        """The (rule, group, state) whose current firing episode is ``episode``, if it still fires."""
        rows = self._query("select rule, grp from groups where episode = ? and state = 'firing'", (episode,))
        if not rows:
            return None
        rule, group = rows[0]["rule"], rows[0]["grp"]
        state = self.groups(rule).get(rule, {}).get(group)
        return (rule, group, state) if state is not None else None

    def action_outcome(self, key: str) -> str | None:
        """What an already handled click did (None: not handled yet)."""
        rows = self._query("select outcome from slack_actions where key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def act(self, key: str, now: datetime, *, rule: str, group: str, action: str, detail: Mapping[str, Any],
            effect: Callable[[Database], str], episode: str = "",
            notification: tuple[str, Mapping[str, Any]] | None = None,
            forward: Sequence[tuple[str, str, Mapping[str, Any]]] = ()) -> str | None:
        """Apply one Slack action exactly once: its effect, its audit row and its notification, atomically.

        ``effect`` runs inside the transaction and returns the outcome text;
        ``notification`` is (kind, payload) for the outbox; ``forward`` are
        (receiver, kind, payload) rows for other receivers (an acknowledgement
        passed on to PagerDuty). Returns the outcome, or None when ``key`` was
        handled before (a redelivery).
        """
        at = to_text(now)
        with self.transaction() as db:
            if db.execute("select 1 from slack_actions where key = ?", (key,)).fetchone():
                return None
            outcome = effect(db)
            db.execute("insert into slack_actions (key, at, outcome) values (?, ?, ?)", (key, at, outcome))
            db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                       (at, rule, group, action, _json({**detail, "outcome": outcome})))
            if notification is not None:
                kind, payload = notification
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt)
                              values (?, ?, ?, ?, ?, ?, ?)""", (at, rule, group, kind, episode, _json(payload), at))
            for receiver, kind, payload in forward:
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                              values (?, ?, ?, ?, ?, ?, ?, ?)""",
                           (at, rule, group, kind, episode, _json(payload), at, receiver))
            return outcome

    # --- approvals (dms_remediate approve: true) ------------------------------------------

    def approval(self, episode: str) -> dict[str, Any] | None:
        """The approval request of a remediation episode: decision (None while waiting), by, decided."""
        rows = self._query("select * from approvals where episode = ?", (episode,))
        if not rows:
            return None
        r = rows[0]
        return {"rule": r["rule"], "task": r["task"], "requested": from_text(r["requested"]), "decision": r["decision"],
                "by": r["by_user"], "decided": from_text(r["decided"])}

    def approval_payload(self, episode: str) -> dict[str, Any] | None:
        """The notification payload that asked for the approval (to redraw its message)."""
        rows = self._query("select payload from approvals where episode = ?", (episode,))
        return json.loads(rows[0][0]) if rows else None

    def decide_remediation(self, key: str, episode: str, *, approve: bool, user: str,
                           now: datetime) -> tuple[str | None, str | None] | None:
        """Record the first decision on a waiting remediation, with its audit row, atomically.

        Returns None for a click handled before (a redelivery); else
        (decision, None) when this click decided, (None, earlier decision)
        when someone decided first, or (None, None) when nothing waits.
        """
        at = to_text(now)
        decision = "approved" if approve else "declined"
        with self.transaction() as db:
            if db.execute("select 1 from slack_actions where key = ?", (key,)).fetchone():
                return None
            row = db.execute("select * from approvals where episode = ?", (episode,)).fetchone()
            if row is None:
                result: tuple[str | None, str | None] = (None, None)
            elif row["decision"] is not None:
                result = (None, f"{row['decision']} by <@{row['by_user']}> at {row['decided']}")
            else:
                db.execute("update approvals set decision = ?, by_user = ?, decided = ? where episode = ?",
                           (decision, user, at, episode))
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (at, row["rule"], row["task"], f"remediation {decision}", _json({"user": user, "episode": episode})))
                result = (decision, None)
            db.execute("insert into slack_actions (key, at, outcome) values (?, ?, ?)",
                       (key, at, result[0] or "no effect"))
            return result

    # --- outbox --------------------------------------------------------------------

    def pending(self, now: datetime, limit: int = 100, receiver: str = "") -> list[OutboxItem]:
        """Unsent notifications for ``receiver`` due for an attempt, oldest first."""
        rows = self._query(
            # Moments are compared as moments: as text, "02:15:00Z" sorts after "02:15:00.500Z" (see times.to_text).
            """select * from outbox where sent_at is null and failed = 0 and receiver = ?
               and julianday(next_attempt) <= julianday(?) order by id limit ?""",
            (receiver, to_text(now), limit))
        return [OutboxItem(id=r["id"], created=from_text(r["created"]), rule=r["rule"], group=r["grp"], kind=r["kind"],  # type: ignore[arg-type]
                           episode=r["episode"], payload=json.loads(r["payload"]), attempts=r["attempts"],
                           message=r["message"], receiver=r["receiver"]) for r in rows]

    def earlier_unsent(self, item: OutboxItem) -> int:
        """How many older notifications of the same episode for the same receiver are still waiting (order)."""
        return self._waiting(receiver=item.receiver, episode=item.episode, before=item.id)

    def next_attempt_at(self, after: datetime | None = None, receiver: str | None = None) -> datetime | None:
        """The earliest moment an unsent notification is due (only those due after ``after``, and only
        ``receiver``'s, if given)."""
        where, args = "sent_at is null and failed = 0", []
        if after is not None:
            where, args = where + " and julianday(next_attempt) > julianday(?)", [to_text(after)]
        if receiver is not None:
            where, args = where + " and receiver = ?", args + [receiver]
        rows = self._query(f"select next_attempt from outbox where {where} order by julianday(next_attempt) limit 1", args)
        return from_text(rows[0][0]) if rows else None

    def outbox_depth(self, receiver: str | None = None) -> int:
        """Notifications waiting to be sent (to ``receiver`` only, if given)."""
        return self._waiting(receiver=receiver)

    def _waiting(self, *, receiver: str | None = None, episode: str | None = None, before: int | None = None) -> int:
        """How many notifications wait to be sent: to ``receiver``, of ``episode``, older than id ``before``
        (each only when given)."""
        where = "sent_at is null and failed = 0"
        args: list[str | int] = []
        for clause, value in (("receiver = ?", receiver), ("episode = ?", episode), ("id < ?", before)):
            if value is not None:
                where, args = f"{where} and {clause}", [*args, value]
        return int(self._query(f"select count(*) from outbox where {where}", args)[0][0])

    def given(self, episode: str) -> dict[str, datetime]:
        """Each receiver given a notification of ``episode`` (recorded, sent or not), and when it last was."""
        rows = self._query("select receiver, max(created) from outbox where episode = ? group by receiver", (episode,))
        return {str(row[0]): when for row in rows if (when := from_text(row[1])) is not None}

    def receivers_of(self, episode: str) -> set[str]:
        """The receivers given any notification of ``episode``."""
        return set(self.given(episode))

    def mark_attempt(self, items: Sequence[OutboxItem], message: str) -> None:
        """Count an attempt before it is made, and fix the entries' message at their first attempt.

        After a crash or a lost answer, ``attempts > 0`` tells the outbox that
        the receiver may already hold the message (so it asks before sending
        again), and ``message`` keeps the retry to the same entries.
        """
        with self.leader_transaction() as db:
            for item in items:
                db.execute("update outbox set attempts = attempts + 1, message = coalesce(message, ?) where id = ?",
                           (message, item.id))

    def mark_sent(self, item: OutboxItem, now: datetime, notifier: str, ref: Mapping[str, Any] | None,
                  follow_ups: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> None:
        """Record ``item`` as delivered, its thread's ref, and any follow-up (kind, payload) as new outbox entries,
        in one transaction."""
        with self.leader_transaction() as db:
            db.execute("update outbox set sent_at = ?, last_error = null where id = ?", (to_text(now), item.id))
            if ref is not None:
                db.execute("insert into threads (episode, notifier, ref, created) values (?, ?, ?, ?) on conflict do nothing",
                           (item.episode, notifier, _json(ref), to_text(now)))
            for kind, payload in follow_ups:
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                              values (?, ?, ?, ?, ?, ?, ?, ?)""",
                           (to_text(now), item.rule, item.group, kind, item.episode, _json(payload), to_text(now),
                            item.receiver))

    def mark_retry(self, item: OutboxItem, error: str, next_attempt: datetime) -> None:
        with self.leader_transaction() as db:
            db.execute("update outbox set last_error = ?, next_attempt = ? where id = ?",
                       (error, to_text(next_attempt), item.id))

    def shift_retries(self, step: timedelta, now: datetime) -> None:
        """Move unsent notifications' next attempts by a wall-clock ``step`` (never before ``now``)."""
        with self.leader_transaction() as db:
            for row in db.execute("select id, next_attempt from outbox where sent_at is null and failed = 0").fetchall():
                planned = from_text(row["next_attempt"])
                if planned is not None:
                    db.execute("update outbox set next_attempt = ? where id = ?",
                               (to_text(max(now, planned + step)), row["id"]))

    def mark_failed(self, item: OutboxItem, error: str) -> None:
        with self.leader_transaction() as db:
            db.execute("update outbox set last_error = ?, failed = 1 where id = ?", (error, item.id))

    def acknowledge_failed(self) -> int:
        """Hide the failed notifications listed so far from status (they stay until pruned); returns how many."""
        with self.transaction() as db:
            return db.execute("update outbox set failed = 2 where failed = 1").rowcount

    def failed_notifications(self, receiver: str | None = None) -> list[dict[str, Any]]:
        """Notifications that failed for good and were not acknowledged (kept until pruned), newest first: the 100
        newest, of ``receiver`` alone when given."""
        only = "and receiver = ? " if receiver is not None else ""
        rows = self._query(f"""select id, created, rule, grp, kind, attempts, last_error, receiver from outbox
                               where failed = 1 {only}order by id desc limit 100""",
                           (receiver,) if receiver is not None else ())
        return [dict(r) for r in rows]

    def firing_count(self) -> int:
        """How many alert groups are firing now (one count, no group decoded)."""
        return int(self._query("select count(*) from groups where state = 'firing'")[0][0])

    def thread_ref(self, episode: str, notifier: str) -> dict[str, Any] | None:
        rows = self._query("select ref from threads where episode = ? and notifier = ?", (episode, notifier))
        return json.loads(rows[0][0]) if rows else None

    def thread_refs_of(self, rule: str, group: str, notifier: str) -> list[dict[str, Any]]:
        """The threads ``notifier`` holds for any episode of ``rule``'s ``group`` still in the outbox (newest first)."""
        rows = self._query("select t.ref from threads t where t.notifier = ? and t.episode in "
                           "(select o.episode from outbox o where o.rule = ? and o.grp = ?) order by t.created desc",
                           (notifier, rule, group))
        return [json.loads(row[0]) for row in rows]

    def set_notifier_status(self, name: str, error: str | None, now: datetime, *, refused: bool = False) -> None:
        """Record a receiver's last outcome: ok (``error`` None), failing, or refusing watchdog's credentials."""
        with self.transaction() as db:
            db.execute("""insert into notifier_status (name, ok, error, at, refused) values (?, ?, ?, ?, ?)
                          on conflict (name) do update set ok = excluded.ok, error = excluded.error, at = excluded.at,
                              refused = excluded.refused""",
                       (name, int(error is None), error, to_text(now), int(refused)))

    def notifier_status(self) -> dict[str, dict[str, Any]]:
        """Each receiver's last outcome: ok, error, at, refused (its credentials refused)."""
        return {r["name"]: {"ok": bool(r["ok"]), "error": r["error"], "at": r["at"], "refused": bool(r["refused"])}
                for r in self._query("select * from notifier_status")}

    # --- remediation journal -------------------------------------------------------------

    def remediations(self, rule: str) -> dict[str, dict[str, Any]]:
        rows = self._query("select task, record from remediations where rule = ?", (rule,))
        return {r["task"]: json.loads(r["record"]) for r in rows}

    def record_step(self, rule: str, task: str, record: Mapping[str, Any], now: datetime,
                    notification: tuple[str, str, Mapping[str, Any]] | None, audit: tuple[str, Mapping[str, Any]] | None,
                    *, approval: bool = False, receivers: Sequence[tuple[str, Mapping[str, Any]]] | None = None) -> None:
        """Save a remediation record with the notification and audit row of its step, atomically.

        ``notification`` is (kind, episode, payload); ``audit`` is (action, detail);
        ``approval`` opens an approval request for the record's episode;
        ``receivers`` are (receiver, payload) rows of the notification (default:
        the main notifier's only).
        """
        at = to_text(now)
        with self.leader_transaction() as db:
            db.execute("insert into remediations (rule, task, record, updated) values (?, ?, ?, ?) on conflict (rule, task) "
                       "do update set record = excluded.record, updated = excluded.updated",
                       (rule, task, _json(record), at))
            if notification is not None:
                kind, episode, payload = notification
                for receiver, routed in receivers if receivers is not None else [("", payload)]:
                    db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                                  values (?, ?, ?, ?, ?, ?, ?, ?)""",
                               (at, rule, task, kind, episode, _json(routed), at, receiver))
            if audit is not None:
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (at, rule, task, audit[0], _json(audit[1])))
            if approval and record.get("episode"):
                payload = notification[2] if notification is not None else {}
                db.execute("insert into approvals (episode, rule, task, requested, payload) values (?, ?, ?, ?, ?) "
                           "on conflict do nothing",
                           (record["episode"], rule, task, at, _json(payload)))

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


def _lease(row: Row) -> LeaseView:
    """The lease of a (holder, epoch, seconds remaining) row."""
    return LeaseView(holder=str(row[0]), epoch=int(row[1]), remaining=float(row[2]))


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def _silence(row: Row) -> Silence:
    return Silence(id=row["id"], rule=row["rule"], group=row["grp"], until=from_text(row["until"]),  # type: ignore[arg-type]
                   reason=row["reason"], created=from_text(row["created"]), episode=row["episode"],  # type: ignore[arg-type]
                   created_by=row["created_by"])


def _insert_silence(db: Database, rule: str, group: str | None, until: datetime, reason: str, now: datetime,
                    episode: str | None = None, created_by: str = "") -> int:
    cur = db.execute("insert into silences (rule, grp, until, reason, created, episode, created_by) "
                     "values (?, ?, ?, ?, ?, ?, ?) returning id",
                     (rule, group, to_text(until), reason, to_text(now), episode, created_by))
    return int(cur.fetchone()[0])


def insert_ack(db: Database, ack: Ack) -> None:
    """Record an acknowledgement inside a transaction of ``StateStore.act``."""
    db.execute("insert into acks (episode, rule, grp, by_user, at, severity) values (?, ?, ?, ?, ?, ?) "
               "on conflict (episode) do update set rule = excluded.rule, grp = excluded.grp, by_user = excluded.by_user, "
               "at = excluded.at, severity = excluded.severity",
               (ack.episode, ack.rule, ack.group, ack.by, to_text(ack.at), ack.severity.value))


def insert_silence(db: Database, rule: str, group: str | None, until: datetime, reason: str, now: datetime,
                   episode: str | None, created_by: str) -> int:
    """Create a silence inside a transaction of ``StateStore.act``; returns its id."""
    return _insert_silence(db, rule, group, until, reason, now, episode, created_by)


def delete_silence(db: Database, silence_id: int) -> bool:
    """Remove a silence inside a transaction of ``StateStore.act``."""
    return db.execute("delete from silences where id = ?", (silence_id,)).rowcount > 0
