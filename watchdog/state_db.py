"""The database under the state store: one SQL text, two dialects (SQLite, PostgreSQL).

``state.StateStore`` writes its SQL once, with ``?`` placeholders and what
both databases accept (``on conflict ... do update``, ``returning``, text,
integer, bigint, real and double precision columns). A ``Database`` runs it:
``SqliteDatabase`` as it is, ``PostgresDatabase`` with ``%s`` placeholders,
identity columns for the few ``integer primary key autoincrement`` of the
first migrations, and a ``julianday(text)`` SQL function of its own so that
moments compare as moments in both. Every driver error becomes one
``StoreError``, so no caller names a driver.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql as pgsql

from watchdog.escape import storable
from watchdog.redact import redact


class StoreError(Exception):
    """The state database could not be read or written (either driver's error, its message kept).

    ``sqlite_errorcode``/``sqlite_errorname`` are SQLite's when it raised
    (``storage`` tells a damaged file from a full disk by them).
    """

    def __init__(self, message: str, *, sqlite_errorcode: int | None = None, sqlite_errorname: str = ""):
        super().__init__(message)
        self.sqlite_errorcode = sqlite_errorcode
        self.sqlite_errorname = sqlite_errorname


class Deposed(StoreError):
    """A leader's write refused: another instance holds the lease now (its fencing epoch moved on)."""


def _from_sqlite(exc: sqlite3.Error) -> StoreError:
    return StoreError(str(exc), sqlite_errorcode=getattr(exc, "sqlite_errorcode", None),
                      sqlite_errorname=getattr(exc, "sqlite_errorname", ""))


def _from_postgres(exc: psycopg2.Error) -> StoreError:
    # libpq's connection errors never quote the password; the first line is the message, the rest context
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(redact(text))


class Row(Protocol):
    """A result row: by position and by column name (``sqlite3.Row``, psycopg2's ``DictRow``)."""

    def __getitem__(self, key: int | str) -> Any: ...

    def keys(self) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """What the store needs of a connection; ``execute`` raises StoreError."""

    dialect: str
    where: str  # the database in words, for messages (never a password)
    lock: threading.RLock
    clock_sql: str  # the database's clock, seconds since the epoch (leases expire by it)

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor: ...

    def transaction(self) -> Any: ...

    def prepare(self) -> None:
        """The dialect's own setup, run in the migration's transaction on every start, before any migration."""

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

    def ddl(self, statement: str) -> str: ...

    def tables(self) -> list[str]: ...

    def identity_follows(self, table: str, column: str) -> None: ...

    def close(self) -> None: ...


def _text(value: Any) -> Any:
    return redact(storable(value)) if isinstance(value, str) else value


def bindable(args: Sequence[Any] | Mapping[str, Any]) -> Any:
    """Statement parameters with every string made storable (``escape.storable``) and redacted (``redact``).

    Data (group values, error texts) may hold lone surrogates, which UTF-8
    cannot, and error texts may quote credentials; this is the one place
    text enters the database, so any string can be stored and no secret is.
    """
    if isinstance(args, Mapping):
        return {k: _text(v) for k, v in args.items()}
    return tuple(_text(v) for v in args)


class SqliteDatabase:
    """One SQLite connection (WAL), shared by threads under ``lock``."""

    dialect = "sqlite"
    clock_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: str):
        self.where = path
        self.lock = threading.RLock()
        self.round_trips = 0  # statements run (the benchmark's measure; in-process, no network)
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("pragma journal_mode=wal")
            self.db.execute("pragma synchronous=normal")  # WAL + normal survives process crashes
            self.db.execute("pragma foreign_keys=on")
        except sqlite3.Error as exc:
            raise _from_sqlite(exc) from exc

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        self.round_trips += 1
        try:
            return self.db.execute(sql, bindable(args))
        except sqlite3.Error as exc:
            raise _from_sqlite(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[SqliteDatabase]:
        with self.lock:
            self.execute("begin immediate")
            try:
                yield self
            except BaseException:
                self.execute("rollback")
                raise
            self.execute("commit")

    def prepare(self) -> None:
        """Nothing: SQLite has ``julianday()`` of its own."""

    def schema_version(self) -> int:
        return int(self.execute("pragma user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.execute(f"pragma user_version = {int(version)}")

    def ddl(self, statement: str) -> str:
        return statement

    def tables(self) -> list[str]:
        """The database's tables (its own ``sqlite_`` ones left out)."""
        rows = self.execute("select name from sqlite_master where type = 'table' and name not like 'sqlite^_%' escape '^'")
        return sorted(str(r[0]) for r in rows.fetchall())

    def identity_follows(self, table: str, column: str) -> None:
        """After rows were copied with their ids: the next id follows them (SQLite's autoincrement does so itself)."""

    def close(self) -> None:
        self.db.close()


@functools.lru_cache(maxsize=512)
def _postgres_sql(sql: str) -> str:
    """``?`` placeholders as psycopg2's ``%s`` (a literal ``%`` doubled). Our SQL has no ``?`` in a literal."""
    return sql.replace("%", "%%").replace("?", "%s")


_IDENTITY = re.compile(r"integer primary key autoincrement", re.IGNORECASE)

# Moments are ISO-8601 text (``times.to_text``); as in SQLite, julianday() makes them comparable numbers.
_JULIANDAY = """
create or replace function julianday(moment text) returns double precision
language sql stable strict parallel safe
as $$ select extract(epoch from moment::timestamptz) / 86400.0 + 2440587.5 $$
"""


class PostgresDatabase:
    """One PostgreSQL connection (autocommit; explicit transactions), shared by threads under ``lock``.

    The store's tables live in ``schema`` (created when missing and allowed);
    the connection's ``search_path`` is set to it once per session. A lost
    connection (a restarted server, ``pg_terminate_backend``) fails the
    statement it happened in and is opened again by the next one.
    """

    dialect = "postgres"
    clock_sql = "extract(epoch from clock_timestamp())::double precision"

    def __init__(self, dsn: str, schema: str = "watchdog", *, timeout: float = 10.0):
        self.dsn = dsn
        self.schema = schema
        self.timeout = timeout
        self.lock = threading.RLock()
        info = _dsn_info(dsn)
        self.where = f"PostgreSQL {info} schema {schema}"
        self.in_transaction = False
        self.conn: Any = None
        self.round_trips = 0  # statements sent (the benchmark's measure)
        self._connect()

    def _connect(self) -> None:
        try:
            # A database that stops answering (a partition) fails a statement within ``timeout``, never hangs it;
            # a transaction left open by a frozen process is ended by the server, so its row locks go with it.
            millis = max(1000, int(self.timeout * 1000))
            conn = psycopg2.connect(self.dsn, connect_timeout=max(1, int(self.timeout)),
                                    cursor_factory=psycopg2.extras.DictCursor, application_name="watchdog",
                                    keepalives=1, keepalives_idle=max(1, int(self.timeout / 2)), keepalives_interval=1,
                                    keepalives_count=3, tcp_user_timeout=millis)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("select set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                            "set_config('idle_in_transaction_session_timeout', %s, false)",
                            (str(millis), str(millis), str(millis)))
                cur.execute("select 1 from pg_namespace where nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    cur.execute(pgsql.SQL("create schema {}").format(pgsql.Identifier(self.schema)))
                cur.execute(pgsql.SQL("set search_path to {}").format(pgsql.Identifier(self.schema)))
        except psycopg2.Error as exc:
            raise _from_postgres(exc) from exc
        self.conn = conn

    def _cursor(self) -> Any:
        if self.conn is None or self.conn.closed:
            if self.in_transaction:
                raise StoreError(f"the connection to {self.where} was lost in a transaction")
            self._connect()
        return self.conn.cursor()

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Run one statement. Outside a transaction (a read, or the ``begin`` of one) a connection found lost is
        opened again and the statement sent once more: nothing of it had reached the server."""
        with self.lock:
            params = [_no_nul(v) for v in bindable(args)] if args else None
            for attempt in (1, 2):
                cur = self._cursor()
                try:
                    self.round_trips += 1
                    cur.execute(_postgres_sql(sql) if args else sql, params)
                    return cur  # type: ignore[no-any-return]
                except psycopg2.Error as exc:
                    lost = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and (
                        self.conn is None or self.conn.closed != 0)
                    if not lost or self.in_transaction:
                        raise _from_postgres(exc) from exc
                    self._drop()
                    if attempt == 2:
                        raise _from_postgres(exc) from exc
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self.conn is not None:
            with suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        with self.lock:
            self.execute("begin")
            self.in_transaction = True
            try:
                yield self
            except BaseException:
                self.in_transaction = False
                try:
                    self.execute("rollback")
                except StoreError:
                    self._drop()  # the connection is gone: the server rolled back
                raise
            self.in_transaction = False
            try:
                self.execute("commit")
            except StoreError:
                self._drop()
                raise

    def schema_version(self) -> int:
        self.execute("create table if not exists schema_version (version integer not null)")
        row = self.execute("select version from schema_version").fetchone()
        if row is None:
            self.execute("insert into schema_version (version) values (0)")
            return 0
        return int(row[0])

    def prepare(self) -> None:
        """Create the ``julianday(text)`` function where it is missing: a database made by any version gets it
        (it was made by migration 1 until then, so older databases have it already)."""
        if self.execute("select to_regprocedure('julianday(text)') is null").fetchone()[0]:
            self.execute(_JULIANDAY)

    def set_schema_version(self, version: int) -> None:
        self.execute("update schema_version set version = ?", (int(version),))

    def ddl(self, statement: str) -> str:
        return _IDENTITY.sub("bigint generated by default as identity primary key", statement)

    def tables(self) -> list[str]:
        rows = self.execute("select table_name from information_schema.tables where table_schema = ?", (self.schema,))
        return sorted(str(r[0]) for r in rows.fetchall())

    def identity_follows(self, table: str, column: str) -> None:
        """After rows were copied with their ids: the identity's next value follows the largest."""
        self.execute(f"select setval(pg_get_serial_sequence('{table}', '{column}'), "  # names are ours, not input
                     f"greatest((select max({column}) from {table}), 1))")

    def close(self) -> None:
        with self.lock:
            self._drop()


def _no_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; SQLite can. U+FFFD stands for it, as for a lone surrogate.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _dsn_info(dsn: str) -> str:
    """Host and database of a DSN, for messages (never its password)."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return "(DSN not parsed)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', parts.get('user', ''))}"
