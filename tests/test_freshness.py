"""Freshness rules against a real PostgreSQL.

Load times are written relative to the database's ``now()``, which is the
clock freshness measures by; the engine's clock (the watchdog host's) is set
to arbitrary moments to show that it does not matter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.postgres import LocalPostgres
from watchdog.engine import Engine
from watchdog.ruletypes.freshness_sql import (
    SqlTextError,
    expected_statement,
    parse_table,
    quote_table,
    table_statement,
)
from watchdog.sqlcheck import check_expression
from watchdog.state import StateStore

REPO = Path(__file__).resolve().parent.parent
# An arbitrary moment for an engine clock that must not matter (test_sql_value imports it too).
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
        rule_sql_functions: [pg_sleep, etl.touch, touch]   # granted, to show what the guards at run time still stop
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


def load(dsn: str, table: str, ago: str, source: str | None = None) -> None:
    """Insert a load stamped ``ago`` (an interval such as '3 hours', or '-2 hours' for the future) before the database's now()."""
    if source is None:
        execute(dsn, f"insert into {table} (updated_at) values (now() - %s::interval)", ago)
    else:
        execute(dsn, f"insert into {table} values (%s, now() - %s::interval)", source, ago)


@pytest.fixture
def warehouse(pg_db: str) -> str:
    execute(pg_db, SCHEMA)
    return pg_db


def host_now() -> datetime:
    return datetime.now(UTC)


def project(tmp_path: Path, dsn: str, rule: str, name: str = "fresh", *, clock: Clock | None = None,
            timeout: str = "5s") -> Engine:
    config = write_project(tmp_path, config_text(dsn, timeout), {name: rule})
    return engine_for(config, clock or Clock(host_now()))


def groups(store: StateStore, rule: str = "fresh") -> dict[str, tuple[str, str]]:
    return {g: (s.state.value, s.severity.value) for g, s in store.groups().get(rule, {}).items()}


def summaries(store: StateStore, rule: str = "fresh") -> dict[str, str]:
    return {g: s.summary for g, s in store.groups().get(rule, {}).items()}


def outbox(store: StateStore) -> list[str]:
    return [r["kind"] + ":" + r["grp"] for r in store.db.execute("select * from outbox order by id")]


def outbox_text(store: StateStore, kind: str, group: str) -> str:
    row = store.db.execute("select payload from outbox where kind = ? and grp = ? order by id desc", (kind, group)).fetchone()
    return str(json.loads(row[0])["text"])


def test_each_check_form_and_escalation(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "analytics.fact_logins_daily", "3 hours")
    for source, ago in (("ga", "10 minutes"), ("logs", "7 hours"), ("dms", "5 minutes")):
        load(warehouse, "etl.runs", ago, source)
    engine = project(tmp_path, warehouse, RULE)
    evaluate_now(engine)
    store = engine.store
    assert groups(store) == {"logins": ("firing", "warning"), "per-source/logs": ("firing", "critical")}
    facts = {c["name"]: c for c in store.rule_records()["fresh"].facts["checks"]}
    assert set(facts) == {"logins", "ga", "per-source/logs", "per-source/dms"} and facts["ga"]["age"] == "10m"
    assert facts["per-source/logs"]["check"] == "per-source" and facts["ga"]["status"] == "fresh"

    # Four hours pass for the data: logins is now 7h old (warning -> critical); logs and dms load again.
    execute(warehouse, "update analytics.fact_logins_daily set updated_at = updated_at - interval '4 hours'")
    execute(warehouse, "update etl.runs set finished_at = finished_at - interval '4 hours' where source = 'ga'")
    load(warehouse, "etl.runs", "1 minute", "logs")
    evaluate_now(engine)
    assert groups(store) == {"logins": ("firing", "critical"), "ga": ("firing", "warning")}
    assert outbox(store) == ["firing:logins", "firing:per-source/logs", "firing:ga", "severity:logins",
                             "resolved:per-source/logs"]
    text = outbox_text(store, "severity", "logins")
    assert "logins last loaded 7h ago" in text and "critical after 6h" in text
    assert "logs (check per-source) last loaded 7h ago" in outbox_text(store, "firing", "per-source/logs")

    load(warehouse, "analytics.fact_logins_daily", "0 minutes")
    load(warehouse, "etl.runs", "0 minutes", "ga")
    evaluate_now(engine)
    assert groups(store) == {}


def test_never_loaded_is_its_own_finding(tmp_path: Path, warehouse: str) -> None:
    engine = project(tmp_path, warehouse, RULE)
    evaluate_now(engine)
    states = engine.store.groups()["fresh"]
    assert set(states) == {"logins", "ga", "per-source"}  # no rows at all is "never loaded" too
    assert "never been loaded" in states["logins"].summary and states["logins"].severity.value == "critical"


def test_naive_timestamps_are_utc_unless_told(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "insert into analytics.naive_loads (loaded) values ((now() at time zone 'UTC') - interval '30 minutes')")
    rule = """\
        name: naive
        type: freshness
        source: warehouse
        checks:
          - {name: utc, table: analytics.naive_loads, loaded_at: loaded}
          - {name: tokyo, table: analytics.naive_loads, loaded_at: loaded, timezone: Asia/Tokyo}
        warn_after: 2h
        """
    engine = project(tmp_path, warehouse, rule, "naive")
    evaluate_now(engine)
    assert groups(engine.store, "naive") == {"tokyo": ("firing", "warning")}  # 9h "older" read as Tokyo time


# --- 1. expected groups, never loaded, no longer reported -------------------------------------------------------

GROUPED = """\
    name: fresh
    type: freshness
    source: warehouse
    checks:
      - name: per-source
        sql: "select source, max(finished_at) from etl.runs group by source"
        {expect}
    warn_after: 2h
    error_after: 6h
    """


def test_a_firing_source_that_vanishes_stays_firing_until_it_loads_again(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "etl.runs", "8 hours", "hubspot")
    load(warehouse, "etl.runs", "10 minutes", "stripe")
    engine = project(tmp_path, warehouse, GROUPED.format(expect=""))
    store = engine.store
    evaluate_now(engine)
    assert groups(store) == {"per-source/hubspot": ("firing", "critical")}

    execute(warehouse, "delete from etl.runs where source = 'hubspot'")
    for _ in range(2):  # it stays: never resolved by vanishing, and no new notification
        evaluate_now(engine)
        assert groups(store) == {"per-source/hubspot": ("firing", "critical")}
    summary = summaries(store)["per-source/hubspot"]
    assert summary.startswith("hubspot (check per-source) is no longer reported (the check returns no row for it); "
                              "its last load seen was 8h ago")
    assert outbox(store) == ["firing:per-source/hubspot"]
    facts = {c["name"]: c for c in store.rule_records()["fresh"].facts["checks"]}
    assert facts["per-source/hubspot"]["status"] == "no longer reported" and facts["per-source/hubspot"]["last_loaded"]

    load(warehouse, "etl.runs", "1 minute", "hubspot")
    evaluate_now(engine)
    assert groups(store) == {} and outbox(store) == ["firing:per-source/hubspot", "resolved:per-source/hubspot"]


def test_a_source_that_was_fresh_and_vanishes_without_expect_is_forgotten(tmp_path: Path, warehouse: str) -> None:
    """The documented choice: without expect, only groups that were alerting are remembered."""
    load(warehouse, "etl.runs", "10 minutes", "stripe")
    engine = project(tmp_path, warehouse, GROUPED.format(expect=""))
    evaluate_now(engine)
    execute(warehouse, "delete from etl.runs where source = 'stripe'")
    evaluate_now(engine)
    assert groups(engine.store) == {"per-source": ("firing", "critical")}  # no rows at all: never loaded


@pytest.mark.parametrize("expect", ["expect: [stripe, hubspot, salesforce]",
                                    "expect: {sql: 'select name from etl.sources where enabled'}"])
def test_expected_sources_never_loaded_and_vanished(tmp_path: Path, warehouse: str, expect: str) -> None:
    execute(warehouse, "create table etl.sources (name text, enabled bool); insert into etl.sources values "
                       "('stripe', true), ('hubspot', true), ('salesforce', true), ('legacy', false)")
    load(warehouse, "etl.runs", "10 minutes", "stripe")
    load(warehouse, "etl.runs", "1 hour", "hubspot")
    engine = project(tmp_path, warehouse, GROUPED.format(expect=expect))
    store = engine.store
    evaluate_now(engine)
    assert groups(store) == {"per-source/salesforce": ("firing", "critical")}
    assert summaries(store)["per-source/salesforce"].startswith(
        "salesforce (check per-source) has never been loaded (expected, but the check returns no row for it)")

    # hubspot was fresh: once expected, vanishing is a finding even though it never fired before.
    execute(warehouse, "delete from etl.runs where source = 'hubspot'")
    evaluate_now(engine)
    assert groups(store)["per-source/hubspot"] == ("firing", "warning")  # last seen 1h ago: at least the first tier
    assert "is no longer reported" in summaries(store)["per-source/hubspot"]


def test_a_firing_source_no_longer_expected_resolves(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "create table etl.sources (name text)")
    execute(warehouse, "insert into etl.sources values ('stripe'), ('hubspot')")
    load(warehouse, "etl.runs", "10 minutes", "stripe")
    load(warehouse, "etl.runs", "8 hours", "hubspot")
    engine = project(tmp_path, warehouse, GROUPED.format(expect="expect: {sql: 'select name from etl.sources'}"))
    evaluate_now(engine)
    execute(warehouse, "delete from etl.runs where source = 'hubspot'")
    evaluate_now(engine)
    assert groups(engine.store) == {"per-source/hubspot": ("firing", "critical")}
    execute(warehouse, "delete from etl.sources where name = 'hubspot'")  # retired on purpose
    evaluate_now(engine)
    assert groups(engine.store) == {}
    assert "hubspot (check per-source) is no longer expected, and the check returns no row for it" in \
        outbox_text(engine.store, "resolved", "per-source/hubspot")


def test_group_by_on_a_table_with_expect(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "etl.runs", "3 hours", "stripe")
    load(warehouse, "etl.runs", "20 minutes", "test")
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: src, table: etl.runs, loaded_at: finished_at, group_by: source, filter: "source <> 'test'",
             expect: [stripe, hubspot]}
        warn_after: 2h
        """
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    assert groups(engine.store) == {"src/stripe": ("firing", "warning"), "src/hubspot": ("firing", "warning")}


def test_a_table_check_with_expect_reads_only_the_expected_groups(tmp_path: Path, warehouse: str) -> None:
    """Each expected group through the (source, finished_at) index; a stale group nobody expects is not read."""
    execute(warehouse, "create index runs_source_finished on etl.runs (source, finished_at)")
    load(warehouse, "etl.runs", "3 hours", "stripe")
    load(warehouse, "etl.runs", "5 minutes", "stripe")
    load(warehouse, "etl.runs", "3 hours", "O'Brien; drop table y")
    load(warehouse, "etl.runs", "9 hours", "legacy")  # stale, but not expected
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: src, table: etl.runs, loaded_at: finished_at, group_by: source,
             expect: [stripe, "O'Brien; drop table y", hubspot]}
        warn_after: 2h
        """
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    assert groups(engine.store) == {"src/O'Brien; drop table y": ("firing", "warning"), "src/hubspot": ("firing", "warning")}
    assert "expected, but the check returns no row for it" in summaries(engine.store)["src/hubspot"]
    execute(warehouse, "select 1 from y")  # a value is a literal, never SQL


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
                     min_size=1, max_size=5),
       expect=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
                       min_size=1, max_size=5))
def test_the_expected_statement_reads_what_the_grouped_scan_reads(warehouse: str, keys: list[str],
                                                                  expect: list[str]) -> None:
    """Per expected value, the indexed read gives the grouped scan's max (no row: absent, never a wrong group)."""
    execute(warehouse, "delete from etl.runs")
    for i, key in enumerate(keys):
        execute(warehouse, "insert into etl.runs values (%s, now() - %s::interval)", key, f"{i} hours")
    with psycopg2.connect(warehouse) as conn, conn.cursor() as cur:
        cur.execute(table_statement(("etl", "runs"), "finished_at", "source", None))
        scan = {k: v for k, v in cur.fetchall() if k in set(expect)}
        cur.execute(expected_statement(("etl", "runs"), "finished_at", "source", None, sorted(set(expect))))
        indexed = {k: v for k, v in cur.fetchall() if v is not None}
    conn.close()
    assert indexed == scan


# --- 2. each check its own unit of failure ------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "reason"), [
    ("{name: t, table: analytics.nope, loaded_at: updated_at}", 'relation "analytics.nope" does not exist'),
    ("{name: t, table: analytics.fact_logins_daily, loaded_at: nope}", 'column "nope" does not exist'),
    ("{name: t, sql: 'select 42'}", "expected a timestamp, got int 42"),
    ("{name: t, sql: 'select 1, 2, now()'}", "the query returns 3 columns; return one timestamp, or (group, timestamp) rows"),
    ("{name: t, sql: 'select pg_sleep(3), now()'}", "canceling statement due to statement timeout"),
    ("{name: t, sql: 'select max(finished_at) from etl.runs where source = 1'}", "operator does not exist: text = integer"),
    ("{name: t, sql: 'select etl.touch()'}", "cannot execute INSERT in a read-only transaction"),
])
def test_a_failing_check_beside_a_stale_one(tmp_path: Path, warehouse: str, check: str, reason: str) -> None:
    load(warehouse, "etl.runs", "8 hours", "ga")
    rule = (f"name: broken\ntype: freshness\nsource: warehouse\nchecks:\n  - {check}\n"
            "  - {name: after, sql: \"select max(finished_at) from etl.runs\"}\nwarn_after: 2h\nerror_after: 6h\n")
    engine = project(tmp_path, warehouse, rule, "broken", timeout="1s")
    for _ in range(3):
        (applied,) = evaluate_now(engine)
        assert applied.error is None  # never "RULE ERROR: failed 3 times in a row"
    assert groups(engine.store, "broken") == {"t": ("firing", "critical"), "after": ("firing", "critical")}
    assert summaries(engine.store, "broken")["t"] == f"could not check t: {reason}"
    assert outbox_text(engine.store, "firing", "t").endswith(f"could not check t: {reason}")
    assert [k for k in outbox(engine.store) if k.startswith("error")] == []


def test_a_grouped_check_that_starts_failing_keeps_its_alerts(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "etl.runs", "8 hours", "hubspot")
    engine = project(tmp_path, warehouse, GROUPED.format(expect=""))
    evaluate_now(engine)
    execute(warehouse, "alter table etl.runs rename to runs_old")
    evaluate_now(engine)
    store = engine.store
    assert groups(store) == {"per-source/hubspot": ("firing", "critical"), "per-source": ("firing", "critical")}
    assert "hubspot (check per-source) last loaded 8h ago" in summaries(store)["per-source/hubspot"]  # kept as it was
    assert outbox(store) == ["firing:per-source/hubspot", "firing:per-source"]
    execute(warehouse, "alter table etl.runs_old rename to runs")
    evaluate_now(engine)
    assert groups(store) == {"per-source/hubspot": ("firing", "critical")}  # could-not-check resolves, the stale stays
    assert "check per-source runs again: 1 group(s) returned" in outbox_text(store, "resolved", "per-source")


def test_a_statement_timeout_does_not_abort_the_checks_after_it(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "etl.runs", "8 hours", "ga")
    rule = """\
        name: slow
        type: freshness
        source: warehouse
        checks:
          - {name: slow, sql: "select now() from pg_sleep(4)"}
          - {name: next, sql: "select max(finished_at) from etl.runs"}
          - {name: last, table: etl.runs, loaded_at: finished_at}
        error_after: 6h
        """
    engine = project(tmp_path, warehouse, rule, "slow", timeout="1s")
    (applied,) = evaluate_now(engine)
    assert applied.error is None
    assert groups(engine.store, "slow") == {"slow": ("firing", "critical"), "next": ("firing", "critical"),
                                             "last": ("firing", "critical")}


def test_database_stopped_and_started_again(tmp_path: Path) -> None:
    pg = LocalPostgres.create()
    try:
        pg.psql(SCHEMA)
        load(pg.dsn, "etl.runs", "5 minutes", "ga")
        rule = "name: fresh\ntype: freshness\nsource: warehouse\nchecks:\n  - {name: ga, sql: \"select max(finished_at) from etl.runs\"}\nwarn_after: 1h\n"
        engine = project(tmp_path, pg.dsn, rule)
        assert evaluate_now(engine)[0].error is None
        pg.stop()
        (down,) = evaluate_now(engine)  # the database, not a check, is the problem: a rule error
        assert down.error and "check 'ga'" in down.error
        pg.start()
        (up,) = evaluate_now(engine)
        assert up.error is None and engine.store.rule_records()["fresh"].health.errors == 0
    finally:
        pg.destroy()


# --- 3. groups named by check and group ---------------------------------------------------------------------------

def test_two_checks_returning_the_same_group_never_merge(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "create table etl.crm (source text, finished_at timestamptz)")
    load(warehouse, "etl.runs", "8 hours", "hubspot")
    execute(warehouse, "insert into etl.crm values ('hubspot', now() - interval '3 hours')")
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: runs, sql: "select source, max(finished_at) from etl.runs group by source"}
          - {name: crm, sql: "select source, max(finished_at) from etl.crm group by source"}
        warn_after: 2h
        error_after: 6h
        """
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    store = engine.store
    assert groups(store) == {"runs/hubspot": ("firing", "critical"), "crm/hubspot": ("firing", "warning")}
    assert "[CRITICAL] FIRING: fresh [runs/hubspot]: hubspot (check runs) last loaded 8h ago" in outbox_text(store, "firing", "runs/hubspot")
    assert "hubspot (check crm) last loaded 3h ago" in outbox_text(store, "firing", "crm/hubspot")


# --- 4. the database's clock ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [timedelta(hours=3), timedelta(hours=-3)])
def test_the_host_clock_does_not_matter(tmp_path: Path, warehouse: str, shift: timedelta) -> None:
    load(warehouse, "analytics.fact_logins_daily", "10 minutes")
    load(warehouse, "etl.runs", "90 minutes", "ga")
    load(warehouse, "etl.runs", "5 minutes", "stripe")
    engine = project(tmp_path, warehouse, RULE, clock=Clock(host_now() + shift))
    evaluate_now(engine)
    assert groups(engine.store) == {}
    facts = {c["name"]: c["age"] for c in engine.store.rule_records()["fresh"].facts["checks"]}
    assert facts == {"logins": "10m", "ga": "1h30m", "per-source/stripe": "5m"}


def test_the_process_clock_shifted_by_faketime(tmp_path: Path, warehouse: str) -> None:
    """The real daemon with its process clock 3 h ahead (libfaketime): fresh tables stay fresh."""
    import glob
    import os

    preload = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert preload, "libfaketime is not installed: run scripts/setup test"
    load(warehouse, "analytics.fact_logins_daily", "10 minutes")
    load(warehouse, "etl.runs", "90 minutes", "ga")
    load(warehouse, "etl.runs", "5 minutes", "stripe")
    write_project(tmp_path, config_text(warehouse), {"fresh": RULE})
    env = {**os.environ, "LD_PRELOAD": preload[0], "FAKETIME": "+3h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    result = subprocess.run([sys.executable, "-m", "watchdog", "run", "--once", "-c", str(tmp_path / "watchdog.yaml")],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    store = StateStore(str(tmp_path / "state.db"))
    record = store.rule_records()["fresh"]
    assert record.last_run is not None and record.last_run > host_now() + timedelta(hours=2)  # the clock was shifted
    assert groups(store) == {}
    assert {c["name"]: c["age"] for c in record.facts["checks"]} == {"logins": "10m", "ga": "1h30m", "per-source/stripe": "5m"}


# --- 4b. future timestamps ----------------------------------------------------------------------------------------

def test_a_load_in_the_future_is_its_own_finding(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "analytics.fact_logins_daily", "8 hours")
    load(warehouse, "analytics.fact_logins_daily", "-2 hours")  # stamped 2 h ahead
    load(warehouse, "etl.runs", "-2 minutes", "ga")  # within the tolerance: just loaded
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: logins, table: analytics.fact_logins_daily, loaded_at: updated_at}
          - {name: ga, sql: "select max(finished_at) from etl.runs"}
        warn_after: 2h
        error_after: 6h
        """
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    store = engine.store
    assert groups(store) == {"logins": ("firing", "critical")}
    summary = summaries(store)["logins"]
    assert summary.startswith("logins last load is 2h in the future (") or summary.startswith("logins last load is 1h59m in the future (")
    assert "clock skew or bad data" in summary
    facts = {c["name"]: c["status"] for c in store.rule_records()["fresh"].facts["checks"]}
    assert facts == {"logins": "in the future", "ga": "fresh"}


# --- 5. severity, expressions, filters, table names ------------------------------------------------------------------

@pytest.mark.parametrize(("ages", "severity", "expected"), [
    ("error_after: 6h", "", "critical"),
    ("error_after: 6h", "severity: warning", "warning"),
    ("warn_after: 2h", "", "warning"),
    ("warn_after: 2h", "severity: critical", "critical"),
    ("warn_after: 2h\nerror_after: 6h", "severity: info", "critical"),  # two tiers set their own levels
])
def test_one_age_takes_the_rule_severity(tmp_path: Path, warehouse: str, ages: str, severity: str, expected: str) -> None:
    load(warehouse, "analytics.fact_logins_daily", "8 hours")
    rule = (f"name: fresh\ntype: freshness\nsource: warehouse\n{severity}\n"
            f"checks:\n  - {{name: logins, table: analytics.fact_logins_daily, loaded_at: updated_at}}\n{ages}\n")
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    assert groups(engine.store) == {"logins": ("firing", expected)}


def test_error_after_alone_is_quiet_below_it(tmp_path: Path, warehouse: str) -> None:
    load(warehouse, "analytics.fact_logins_daily", "3 hours")
    rule = ("name: fresh\ntype: freshness\nsource: warehouse\n"
            "checks:\n  - {name: logins, table: analytics.fact_logins_daily, loaded_at: updated_at}\nerror_after: 6h\n")
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    assert groups(engine.store) == {}


def test_loaded_at_expressions_and_filters(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, "create table analytics.daily (loaded_on date, updated_at timestamptz, created_at timestamptz, kind text)")
    execute(warehouse, "insert into analytics.daily values (current_date - 3, null, now() - interval '30 minutes', 'real'), "
                       "(current_date, now(), now(), 'test')")
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: by-date, table: analytics.daily, loaded_at: "loaded_on::timestamp", filter: "kind = 'real'"}
          - {name: coalesced, table: analytics.daily, loaded_at: "coalesce(updated_at, created_at)", filter: "kind <> 'test'"}
          - {name: unfiltered, table: analytics.daily, loaded_at: "coalesce(updated_at, created_at)"}
        warn_after: 1d
        error_after: 2d
        """
    engine = project(tmp_path, warehouse, rule)
    evaluate_now(engine)
    assert groups(engine.store) == {"by-date": ("firing", "critical")}
    facts = {c["name"]: c["age"] for c in engine.store.rule_records()["fresh"].facts["checks"]}
    assert facts["coalesced"] == "30m" and facts["unfiltered"] == "0s"


def test_quoted_dotted_table_names_and_schema_key(tmp_path: Path, warehouse: str) -> None:
    execute(warehouse, 'create schema "Sales"; create table "Sales"."Orders.v2" ("Loaded At" timestamptz)')
    execute(warehouse, """insert into "Sales"."Orders.v2" values (now() - interval '3 hours')""")
    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: quoted, table: '"Sales"."Orders.v2"', loaded_at: '"Loaded At"'}
          - {name: keys, schema: Sales, table: Orders.v2, loaded_at: '"Loaded At"'}
        warn_after: 2h
        """
    engine = project(tmp_path, warehouse, rule)
    (applied,) = evaluate_now(engine)
    assert applied.error is None
    assert groups(engine.store) == {"quoted": ("firing", "warning"), "keys": ("firing", "warning")}


def test_identifiers_from_yaml_are_quoted(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: hostile
        type: freshness
        source: warehouse
        checks:
          - {name: t, table: "x; drop table y", loaded_at: updated_at}
        warn_after: 2h
        """
    engine = project(tmp_path, warehouse, rule, "hostile")
    evaluate_now(engine)
    assert summaries(engine.store, "hostile")["t"] == 'could not check t: relation "x; drop table y" does not exist'
    with psycopg2.connect(warehouse) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from y")
        assert cur.fetchone() == (1,)


def validate(tmp_path: Path, dsn: str, check: str, ages: str = "warn_after: 2h") -> list[dict[str, Any]]:
    from watchdog.loader import load_rules

    config = write_project(tmp_path, config_text(dsn), {"r": f"name: r\ntype: freshness\nsource: warehouse\nchecks:\n  - {check}\n{ages}\n"})
    return [p.to_dict() for p in load_rules([config.rules_dir], config).problems]


@pytest.mark.parametrize(("check", "ages", "path", "message"), [
    ("{name: t, table: y, loaded_at: 'updated_at); drop table y; --'}", "warn_after: 2h", "checks[0].loaded_at",
     "must be a column name or one read-only SQL expression: not one SQL expression (it must not close the parenthesis around it or add clauses)"),
    ("{name: t, table: y, loaded_at: x, filter: '1) from y where (true'}", "warn_after: 2h", "checks[0].filter",
     "must be one read-only SQL expression (a where-clause): not one SQL expression (it must not close the parenthesis around it or add clauses)"),
    ("{name: t, table: y, loaded_at: x, filter: '1); drop table y; select (1'}", "warn_after: 2h", "checks[0].filter",
     "must be one read-only SQL expression (a where-clause): not one SQL expression (it must not close the parenthesis around it or add clauses)"),
    ("{name: t, sql: 'delete from y returning now()'}", "warn_after: 2h", "checks[0].sql",
     "must be one read-only query: it is not a query but a DELETE statement; only a query (SELECT, WITH ... SELECT, VALUES) is allowed"),
    ("{name: t, sql: 'select now(); drop table y'}", "warn_after: 2h", "checks[0].sql",
     "must be one read-only query: it holds 2 statements; give exactly one query (no ';' between statements)"),
    ("{name: t, table: y, loaded_at: x, group_by: 'set_config(''a.b'', ''1'', false)'}", "warn_after: 2h",
     "checks[0].group_by", "must be a column name or one read-only SQL expression: function set_config() has side "
     "effects or runs SQL from text; it is not allowed here"),
    ("{name: t, sql: 'select 1', expect: {sql: 'select nextval(''s'')'}}", "warn_after: 2h", "checks[0].expect.sql",
     "must be one read-only query: function nextval() has side effects or runs SQL from text; it is not allowed here"),
    ("{name: t, table: 'a.b.c', loaded_at: x}", "warn_after: 2h", "checks[0].table",
     "'a.b.c' is not a table name: 3 dotted parts; give schema.table, or quote a name that holds dots: '\"Sales\".\"Orders.v2\"'"),
    ("{name: t, table: y, loaded_at: x}", "", "", "give warn_after or error_after (or both), here or on the rule, "
         "or learn: {history: 28d}"),
    ("{name: t, table: y, loaded_at: x, expect: [a]}", "warn_after: 2h", "checks[0].expect",
     "expect needs a grouped check: add group_by, or use sql returning (group, timestamp) rows"),
    ("{name: a/b, table: y, loaded_at: x}", "warn_after: 2h", "checks[0].name",
     "'a/b' is not a check name: it may not contain '/' (groups of a grouped check are named check/group)"),
])
def test_bad_checks_are_rejected_at_validation(tmp_path: Path, warehouse: str, check: str, ages: str, path: str,
                                               message: str) -> None:
    (problem,) = validate(tmp_path, warehouse, check, ages)
    assert (problem["path"], problem["message"]) == (path, message)


def test_error_after_alone_validates(tmp_path: Path, warehouse: str) -> None:
    assert validate(tmp_path, warehouse, "{name: t, table: y, loaded_at: x}", "error_after: 6h") == []


# --- 6. test-rule ---------------------------------------------------------------------------------------------------

def test_rule_on_freshness_evaluates_now_and_rejects_a_past_end(tmp_path: Path, warehouse: str, capsys: Any) -> None:
    from watchdog.cli import main

    load(warehouse, "analytics.fact_logins_daily", "3 hours")
    write_project(tmp_path, config_text(warehouse), {"fresh": RULE})
    args = ["test-rule", str(tmp_path / "rules" / "fresh.yaml"), "-c", str(tmp_path / "watchdog.yaml")]
    assert main([*args, "--end", "-6h"]) == 2
    err = capsys.readouterr().err
    assert "--end is in the past" in err and "freshness rules evaluate the present only" in err

    assert main([*args, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ticks"], doc["requests"], doc["mode"], doc["start"]) == (1, 0, "present", doc["end"])
    assert {n["group"] for n in doc["notifications"]} == {"logins", "ga", "per-source"}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: freshness rules evaluate the present only" in out and "search request" not in out
    assert "rule fresh (freshness): " in out and "1 tick(s), present" in out


def test_rule_on_dms_rejects_an_end_other_than_now(tmp_path: Path, capsys: Any) -> None:
    """Refused before any source is contacted: the region's endpoint is never called."""
    from watchdog.cli import main

    config = ("rules_dir: rules\nstate_path: state.db\nsources:\n"
              "  aws: {type: dms, region: us-east-1, endpoint_url: 'http://127.0.0.1:9'}\n")
    write_project(tmp_path, config, {"tasks": "name: tasks\ntype: dms_task\nsource: aws\n"})
    args = ["test-rule", str(tmp_path / "rules" / "tasks.yaml"), "-c", str(tmp_path / "watchdog.yaml")]
    assert main([*args, "--end", "2026-01-01T00:00:00Z"]) == 2
    err = capsys.readouterr().err
    assert "--end is in the past (2026-01-01T00:00:00Z), but dms_task rules evaluate the present only" in err


# --- properties: rule text and table contents the world controls ------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(names, min_size=1, max_size=2))
def test_any_quoted_table_name_reads_back(parts: list[str]) -> None:
    assert parse_table(quote_table(tuple(parts))) == tuple(parts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_table_text_parses_or_is_rejected_clearly(text: str) -> None:
    try:
        parts = parse_table(text)
    except SqlTextError as exc:
        assert str(exc).startswith(f"'{text}' is not a table name")
    else:
        assert 1 <= len(parts) <= 2 and all(parts)


sql_bits = st.sampled_from(["(", ")", ";", "--", "\n", "/*", "*/", "'", '"', "select", "drop table y", "1", "x", "or",
                            "$$", "E'\\'", " ", ",", "from", "where"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=st.one_of(st.text(max_size=40), st.lists(sql_bits, max_size=12).map("".join)))
def test_an_accepted_expression_is_one_statement_that_only_reads(warehouse: str, expression: str) -> None:
    """Whatever text passes the expression check composes into exactly one read-only query."""
    import pglast

    if check_expression(expression) is not None:
        return
    with psycopg2.connect(warehouse) as conn:
        composed = table_statement(("y",), "id", expression, expression).as_string(conn)
        statements = pglast.parse_sql(composed)
        assert len(statements) == 1 and type(statements[0].stmt).__name__ == "SelectStmt"
        with conn.cursor() as cur:
            cur.execute("set transaction read only")
            try:
                cur.execute(composed)
            except psycopg2.Error:
                pass
    conn.close()
    execute(warehouse, "select 1 from y")  # y still there


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                                                   max_size=15)), min_size=1, max_size=5))
def test_group_values_from_the_table_are_data(tmp_path_factory: Any, warehouse: str, keys: list[str | None]) -> None:
    """Any group value (slashes, quotes, braces, NULL) becomes check/value, and stale values are all reported."""
    execute(warehouse, "delete from etl.runs")
    for key in keys:
        execute(warehouse, "insert into etl.runs values (%s, now() - interval '3 hours')", key)
    tmp = tmp_path_factory.mktemp("p")
    engine = project(tmp, warehouse, GROUPED.format(expect=""))
    (applied,) = evaluate_now(engine)
    assert applied.error is None
    expected = {"per-source/" + ("(null)" if k is None else k) for k in keys}
    assert set(groups(engine.store)) == expected
