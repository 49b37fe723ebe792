"""The warehouse refresh has one deadline for its whole transaction, which its SQL cannot lift (real PostgreSQL)."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg2
import pytest

from watchdog.config import PostgresSource as PostgresConfig
from watchdog.sources.postgres import PostgresSource, QueryError


def source(dsn: str) -> PostgresSource:
    return PostgresSource(PostgresConfig(name="warehouse", dsn=dsn, statement_timeout=timedelta(seconds=30)))


def rows(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from refreshed")
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


@pytest.fixture
def warehouse(pg_db: str) -> str:
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("create table refreshed (step int)")
    conn.close()
    return pg_db


STEP = "insert into refreshed values ({n}); select pg_sleep(1.5);"


@pytest.mark.parametrize("prefix", [
    "",
    "set local statement_timeout = 0;",  # the SQL tries to lift the limit
    "select set_config('statement_timeout', '0', true);",
])
def test_three_slow_statements_past_the_deadline_are_cancelled_and_rolled_back(warehouse: str, prefix: str) -> None:
    sql = prefix + "".join(STEP.format(n=n) for n in (1, 2, 3))  # 4.5 s in all, each well under 2 s
    started = time.monotonic()
    with pytest.raises(QueryError) as info:
        source(warehouse).run_refresh(sql, 2.0)
    took = time.monotonic() - started
    assert "did not finish within 2s" in str(info.value) and "rolled back" in str(info.value)
    assert 1.9 <= took < 3.5
    assert rows(warehouse) == 0


def test_sql_that_catches_the_cancel_is_terminated(warehouse: str) -> None:
    sql = """
        insert into refreshed values (1);
        do $$ begin
            loop
                begin perform pg_sleep(0.2); exception when query_canceled then null; end;
            end loop;
        end $$;
    """
    started = time.monotonic()
    with pytest.raises(QueryError) as info:
        source(warehouse).run_refresh(sql, 1.0)
    assert "did not finish within 1s" in str(info.value)
    assert time.monotonic() - started < 1.0 + 2.0 + 2.0  # deadline, grace, then the terminate
    assert rows(warehouse) == 0


def test_a_refresh_within_its_deadline_commits(warehouse: str) -> None:
    assert source(warehouse).run_refresh(STEP.format(n=1) + STEP.format(n=2).replace("1.5", "0.1"), 3.0) is None
    assert rows(warehouse) == 2
