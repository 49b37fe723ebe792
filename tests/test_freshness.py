"""Freshness rules against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.postgres import LocalPostgres
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)

SCHEMA = """
create schema analytics;
create schema etl;
create table analytics.fact_logins_daily (id serial, updated_at timestamptz);
create table analytics.naive_loads (id serial, loaded timestamp);
create table etl.runs (source text, finished_at timestamptz);
create table y (id int);
insert into y values (1);
-- passes validation (one query) but writes: the read-only transaction stops it at run time
create function etl.touch() returns timestamptz language sql as $$ insert into y values (2); select now() $$;
"""


def config_text(dsn: str, statement_timeout: str = "5s") -> str:
    return f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{dsn}", statement_timeout: {statement_timeout}, connect_timeout: 2s}}
        """


RULE = """\
    name: fresh
    type: freshness
    source: warehouse
    checks:
      - {name: logins, table: analytics.fact_logins_daily, loaded_at: updated_at}
      - {name: ga, sql: "select max(finished_at) from etl.runs where source = 'ga'"}
      - {name: per-source, sql: "select source, max(finished_at) from etl.runs where source <> 'ga' group by source"}
    warn_after: 2h
    error_after: 6h
    """


def execute(dsn: str, sql: str, *args: object) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
    conn.close()


@pytest.fixture
def warehouse(pg_db: str) -> str:
    execute(pg_db, SCHEMA)
    return pg_db


def groups(store: StateStore, rule: str = "fresh") -> dict[str, tuple[str, str]]:
    return {g: (s.state.value, s.severity.value) for g, s in store.groups().get(rule, {}).items()}


def test_each_check_form_and_escalation(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "insert into analytics.fact_logins_daily (updated_at) values (%s)", NOW - timedelta(hours=3))
    execute(warehouse, "insert into etl.runs values ('ga', %s), ('logs', %s), ('dms', %s)",
            NOW - timedelta(minutes=10), NOW - timedelta(hours=7), NOW - timedelta(minutes=5))
    config = write_project(tmp_path, config_text(warehouse), {"fresh": RULE})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    store = engine.store
    assert groups(store) == {"logins": ("firing", "warning"), "logs": ("firing", "critical")}
    facts = {c["name"]: c for c in store.rule_records()["fresh"].facts["checks"]}
    assert set(facts) == {"logins", "ga", "logs", "dms"} and facts["ga"]["age"] == "10m"

    clock.now = NOW + timedelta(hours=4)  # logins now 7h old: warning -> critical
    execute(warehouse, "insert into etl.runs values ('logs', %s), ('dms', %s)", clock.now - timedelta(minutes=1), clock.now)
    evaluate_now(engine)
    assert groups(store) == {"logins": ("firing", "critical"), "ga": ("firing", "warning")}
    kinds = [r["kind"] + ":" + r["grp"] for r in store.db.execute("select * from outbox order by id")]
    assert kinds == ["firing:logins", "firing:logs", "firing:ga", "severity:logins", "resolved:logs"]

    execute(warehouse, "insert into analytics.fact_logins_daily (updated_at) values (%s)", clock.now)
    execute(warehouse, "insert into etl.runs values ('ga', %s)", clock.now)
    evaluate_now(engine)
    assert groups(store) == {}
    payload = store.db.execute("select payload from outbox where kind = 'severity'").fetchone()[0]
    assert "logins last loaded 7h ago" in payload and "critical after 6h" in payload


def test_never_loaded_is_its_own_finding(tmp_path: Path, warehouse: str) -> None:
    config = write_project(tmp_path, config_text(warehouse), {"fresh": RULE})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    states = engine.store.groups()["fresh"]
    assert set(states) == {"logins", "ga", "per-source"}  # no rows at all is "never loaded" too
    assert "never been loaded" in states["logins"].summary and states["logins"].severity.value == "critical"


def test_naive_timestamps_are_utc_unless_told(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "insert into analytics.naive_loads (loaded) values (%s)", (NOW - timedelta(minutes=30)).replace(tzinfo=None))
    rule = """\
        name: naive
        type: freshness
        source: warehouse
        checks:
          - {name: utc, table: analytics.naive_loads, loaded_at: loaded}
          - {name: tokyo, table: analytics.naive_loads, loaded_at: loaded, timezone: Asia/Tokyo}
        warn_after: 2h
        """
    config = write_project(tmp_path, config_text(warehouse), {"naive": rule})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert groups(engine.store, "naive") == {"tokyo": ("firing", "warning")}  # 9h "older" read as Tokyo time


@pytest.mark.parametrize(("check", "message"), [
    ("{name: t, table: analytics.nope, loaded_at: updated_at}", 'check \'t\': relation "analytics.nope" does not exist'),
    ("{name: t, table: analytics.fact_logins_daily, loaded_at: nope}", 'check \'t\': column "nope" does not exist'),
    ("{name: t, sql: 'select max(finished_at) from etl.runs where source = 1'}",
     "check 't': operator does not exist: text = integer"),
    ("{name: t, sql: 'select 42'}", "check 't': expected a timestamp, got int 42"),
    ("{name: t, sql: 'select pg_sleep(3), now()'}", "check 't': canceling statement due to statement timeout"),
    ("{name: t, sql: 'select etl.touch()'}", "check 't': cannot execute INSERT in a read-only transaction"),
])
def test_errors_name_the_check_and_the_cause(tmp_path: Path, warehouse: str, check: str, message: str) -> None:
    rule = f"name: broken\ntype: freshness\nsource: warehouse\nchecks:\n  - {check}\nwarn_after: 2h\n"
    config = write_project(tmp_path, config_text(warehouse, statement_timeout="1s"), {"broken": rule})
    engine = engine_for(config, Clock(NOW))
    (applied,) = evaluate_now(engine)
    assert applied.error == message
    assert engine.store.rule_records()["broken"].health.last_error == message


def test_identifiers_from_yaml_are_quoted(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: hostile
        type: freshness
        source: warehouse
        checks:
          - {name: t, table: "x; drop table y", loaded_at: "updated_at); drop table y; --"}
        warn_after: 2h
        """
    config = write_project(tmp_path, config_text(warehouse), {"hostile": rule})
    (applied,) = evaluate_now(engine_for(config, Clock(NOW)))
    assert applied.error == 'check \'t\': relation "x; drop table y" does not exist'
    with psycopg2.connect(warehouse) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from y")
        assert cur.fetchone() == (1,)


def test_database_stopped_and_started_again(tmp_path: Path) -> None:
    pg = LocalPostgres.create()
    try:
        pg.psql(SCHEMA)
        execute(pg.dsn, "insert into etl.runs values ('ga', %s)", NOW - timedelta(minutes=5))
        rule = "name: fresh\ntype: freshness\nsource: warehouse\nchecks:\n  - {name: ga, sql: \"select max(finished_at) from etl.runs\"}\nwarn_after: 1h\n"
        config = write_project(tmp_path, config_text(pg.dsn), {"fresh": rule})
        engine = engine_for(config, Clock(NOW))
        assert evaluate_now(engine)[0].error is None
        pg.stop()
        (down,) = evaluate_now(engine)
        assert down.error and "check 'ga'" in down.error
        pg.start()
        (up,) = evaluate_now(engine)
        assert up.error is None and engine.store.rule_records()["fresh"].health.errors == 0
    finally:
        pg.destroy()
