"""The ``postgres`` source: read-only queries on the warehouse, and the refresh transaction.

One connection per source, opened on first use with ``application_name=watchdog``,
the source's statement timeout and (for queries) read-only transactions;
reopened after a failure, so a database restart costs one failed run at most.

Every query runs in its own transaction, so one failing statement (an SQL
error, a missing table, a statement timeout) never affects the next: rule
types that run several checks make each check its own unit of failure by
catching ``QueryError`` per check and letting ``PostgresUnavailable`` (a
``SourceUnavailable``: the database cannot be reached at all) fail the whole rule.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql as pgsql

from watchdog.config import PostgresSource as PostgresConfig
from watchdog.logfmt import log
from watchdog.redact import cut_body
from watchdog.ruletypes.base import RuleError, SourceUnavailable

logger = logging.getLogger("watchdog.postgres")

# pg_advisory_xact_lock key held while a warehouse refresh runs ("wdrf" in ASCII).
REFRESH_LOCK_KEY = 0x77647266
# One row per remediation episode whose refresh committed, written in the refresh's own transaction.
REFRESH_LEDGER = "watchdog_refresh_ledger"
LEDGER_DDL = pgsql.SQL("""create table if not exists {} (
    episode text primary key, rule text not null, task text not null,
    refreshed_at timestamptz not null default now())""").format(pgsql.Identifier(REFRESH_LEDGER))


class QueryError(RuleError):
    """A query failed; the message is PostgreSQL's, first line, without the password."""


class PostgresUnavailable(QueryError, SourceUnavailable):
    """The server could not be reached, did not answer within connect_timeout, or the connection was lost."""


@dataclass(frozen=True)
class Reading:
    """The rows of one statement and the database's ``now()``, read in the same statement.

    ``columns`` is the number of columns the statement returns, known even
    when it returns no row.
    """

    now: datetime
    columns: int
    rows: list[tuple[Any, ...]]


# The statement is a subquery, so it must be a single query (no second
# statement, no INSERT/DELETE), and the outer join yields one row even when it
# returns none, so now() is always read. The newline ends a trailing comment.
_READ_AT_NOW = pgsql.SQL(
    "select now(), q.* from (values (1)) as watchdog_one(x) left join "
    "(select true as watchdog_row, u.* from (\n{}\n) as u) as q on true")


def as_statement(text: str) -> pgsql.Composable:
    """Rule-written SQL as a statement to wrap (trailing semicolons and blanks removed)."""
    return pgsql.SQL(text.strip().rstrip(";").rstrip())


def _message(exc: psycopg2.Error) -> str:
    """PostgreSQL's message, first line, redacted (libpq quotes a malformed DSN, password and all)."""
    text = (exc.pgerror or str(exc) or type(exc).__name__).strip()
    if text.startswith(("invalid dsn", "missing \"=\"", "invalid connection option")) or "connection info string" in text:
        return "the connection string (dsn) does not parse; libpq's message is not shown, as it may quote the password"
    lines = [line for line in text.splitlines() if line.strip()]
    return cut_body(lines[0].removeprefix("ERROR:").strip(), 500) if lines else type(exc).__name__


# After the deadline's cancel, how long a refresh may take to stop before its backend is terminated
# (a PL/pgSQL handler can catch the cancel; nothing in SQL can catch a terminate).
CANCEL_GRACE_SECONDS = 2.0


class _DeadlinePassed(Exception):
    pass


class _Deadline:
    """One deadline for a whole transaction, kept by the client, so no SQL in it can lift it.

    At the deadline the running statement is cancelled (libpq's cancel
    request); if the backend is still busy ``CANCEL_GRACE_SECONDS`` later
    (the SQL caught the cancel), it is terminated from a second connection.
    ``set statement_timeout = 0`` in the SQL changes neither. Use as a context
    manager around the transaction; ``check()`` before committing.
    """

    def __init__(self, source: PostgresSource, conn: psycopg2.extensions.connection, seconds: float):
        self.source = source
        self.conn = conn
        self.seconds = seconds
        self.passed = False
        self.done = threading.Event()
        self.pid = conn.get_backend_pid()
        self.timer = threading.Thread(target=self._watch, name="refresh-deadline", daemon=True)

    def __enter__(self) -> _Deadline:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.timer.join()

    def check(self) -> None:
        """Raise when the deadline has passed (so a transaction that ran past it is not committed)."""
        if self.passed:
            raise _DeadlinePassed("deadline passed")

    def _watch(self) -> None:
        if self.done.wait(self.seconds):
            return
        self.passed = True
        with contextlib.suppress(psycopg2.Error):
            self.conn.cancel()
        if self.done.wait(CANCEL_GRACE_SECONDS):
            return
        log(logger, logging.WARNING, "refresh ignored its cancel; terminating its backend", source=self.source.config.name,
            pid=self.pid)
        try:
            other = self.source._connect()
        except psycopg2.Error as exc:
            log(logger, logging.ERROR, "cannot terminate the refresh", source=self.source.config.name, error=_message(exc))
            return
        try:
            other.autocommit = True
            with other.cursor() as cur:
                cur.execute("select pg_terminate_backend(%s)", (self.pid,))
        except psycopg2.Error as exc:
            log(logger, logging.ERROR, "cannot terminate the refresh", source=self.source.config.name, error=_message(exc))
        finally:
            other.close()


class PostgresSource:
    def __init__(self, config: PostgresConfig):
        self.config = config
        self.conn: psycopg2.extensions.connection | None = None
        self.lock = threading.Lock()

    def _connect(self) -> psycopg2.extensions.connection:
        timeout_ms = int(self.config.statement_timeout.total_seconds() * 1000)
        conn: psycopg2.extensions.connection = psycopg2.connect(
            self.config.dsn, **self.config.params,
            connect_timeout=max(1, int(self.config.connect_timeout.total_seconds())),
            application_name="watchdog",
            options=f"-c statement_timeout={timeout_ms}",
        )
        conn.autocommit = False
        return conn

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                finally:
                    self.conn = None

    def query(self, statement: str | pgsql.Composable, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one read-only statement in its own transaction and return its rows.

        Reconnects once when the connection was lost. Raises QueryError with
        PostgreSQL's message when the statement fails (the connection stays
        usable for the next one), PostgresUnavailable when it cannot connect.
        """
        return self._run(statement, params)[1]

    def read_at_now(self, statement: pgsql.Composable) -> Reading:
        """Run one read-only query and read the database's ``now()`` in the same statement.

        ``statement`` must be a single query (it runs as a subquery); its
        rows come back without the two leading columns this adds. Raises as
        ``query`` does.
        """
        columns, rows = self._run(_READ_AT_NOW.format(statement), None)
        if not rows or not isinstance(rows[0][0], datetime):  # pragma: no cover - the outer join always yields a row
            raise QueryError("the database did not return its time")
        now = rows[0][0]
        return Reading(now=now, columns=columns - 2, rows=[row[2:] for row in rows if row[1] is not None])

    def _run(self, statement: str | pgsql.Composable, params: Sequence[Any] | None) -> tuple[int, list[tuple[Any, ...]]]:
        """(number of columns, rows) of one statement in its own read-only transaction."""
        with self.lock:
            for attempt in (1, 2):
                fresh = self.conn is None
                try:
                    if self.conn is None:
                        self.conn = self._connect()
                    self.conn.set_session(readonly=True)
                    with self.conn.cursor() as cur:
                        cur.execute(statement, params)
                        width = len(cur.description) if cur.description is not None else 0
                        rows = cur.fetchall() if cur.description is not None else []
                    self.conn.rollback()
                    return width, rows
                except psycopg2.Error as exc:
                    if self._usable():
                        # The statement failed (SQL error, timeout): the connection is fine.
                        raise QueryError(_message(exc)) from None
                    self._drop()
                    if not fresh and attempt == 1:
                        log(logger, logging.INFO, "reconnecting", source=self.config.name, error=_message(exc))
                        continue
                    raise PostgresUnavailable(_message(exc)) from None
            raise QueryError("unreachable")  # pragma: no cover

    def _usable(self) -> bool:
        """After a failed statement: whether the connection survived (rolled back and ready)."""
        if self.conn is None or self.conn.closed:
            return False
        try:
            self.conn.rollback()
        except psycopg2.Error:
            return False
        return True

    def run_refresh(self, statement: str, timeout_seconds: float, *, episode: str = "", rule: str = "",
                    task: str = "") -> datetime | None:
        """Run ``statement`` in one read-write transaction under REFRESH_LOCK_KEY, once per ``episode``.

        The transaction-scoped advisory lock means two refreshes (from two
        watchdogs, or a cron job that takes the same lock) never overlap; the
        second waits. The same transaction records ``episode`` in the ledger
        table REFRESH_LEDGER (created on first use): when the episode is
        already there, the refresh committed before (watchdog stopped before
        recording it) and is not run again. Uses its own connection, never the
        read-only one.

        Returns None when the refresh ran now, or the time the earlier run of
        this episode committed. Raises QueryError with PostgreSQL's message.
        """
        try:
            conn = self._connect()
        except psycopg2.Error as exc:
            raise QueryError(_message(exc)) from None
        deadline = _Deadline(self, conn, timeout_seconds)
        try:
            with deadline, conn.cursor() as cur:
                cur.execute("select set_config('statement_timeout', %s, true)", (str(int(timeout_seconds * 1000)),))
                cur.execute("select pg_advisory_xact_lock(%s)", (REFRESH_LOCK_KEY,))
                if episode:
                    cur.execute(LEDGER_DDL)
                    cur.execute(pgsql.SQL("select refreshed_at from {} where episode = %s").format(
                        pgsql.Identifier(REFRESH_LEDGER)), (episode,))
                    row = cur.fetchone()
                    if row is not None:
                        conn.rollback()
                        done: datetime = row[0]
                        return done
                cur.execute(statement)
                if episode:
                    cur.execute(pgsql.SQL("insert into {} (episode, rule, task) values (%s, %s, %s)").format(
                        pgsql.Identifier(REFRESH_LEDGER)), (episode, rule, task))
                deadline.check()
                conn.commit()
            return None
        except (psycopg2.Error, _DeadlinePassed) as exc:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
            if deadline.passed:
                raise QueryError(f"the refresh did not finish within {timeout_seconds:g}s (its deadline for the "
                                 f"whole transaction); it was cancelled and rolled back") from None
            raise QueryError(_message(exc) if isinstance(exc, psycopg2.Error) else str(exc)) from None
        finally:
            conn.close()

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None
