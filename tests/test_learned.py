"""Learned checks on a real PostgreSQL: freshness ``learn:`` and sql_value ``anomaly:``.

Ages are measured on the database's clock, so the tests set it: a function
``testclock.now()`` placed before ``pg_catalog`` in the database's
search_path answers every unqualified ``now()`` of watchdog's queries with a
chosen moment (a Sunday, noon UTC), and the load histories are generated
relative to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.helpers import evaluate_now, write_project
from tests.test_freshness import config_text, execute, groups, project, summaries
from watchdog.config import Config, load_config
from watchdog.loader import load_rules
from watchdog.state import StateStore
from watchdog.status import show_status

SUNDAY = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

CLOCK = """
create schema testclock;
create table testclock.at (now timestamptz not null);
insert into testclock.at values (%s);
create function testclock.now() returns timestamptz language sql stable as 'select now from testclock.at';
create schema analytics;
"""


def with_clock(dsn: str, now: datetime) -> None:
    """Make ``now()`` answer ``now`` on every new connection to ``dsn``'s database."""
    execute(dsn, CLOCK, now)
    dbname = dict(part.split("=", 1) for part in dsn.split())["dbname"]
    execute(dsn, f'alter database "{dbname}" set search_path = testclock, pg_catalog, public')


def engine_config(tmp_path: Path) -> Config:
    return load_config(str(tmp_path / "watchdog.yaml"))


def set_clock(dsn: str, now: datetime) -> None:
    execute(dsn, "update testclock.at set now = %s", now)


def facts(store: StateStore, rule: str) -> dict[str, dict[str, object]]:
    record = store.rule_records()[rule]
    return {str(f.get("name") or f.get("group")): f for f in record.facts.get("checks", record.facts.get("values", []))}


TABLES = """
create table analytics.hourly (loaded_at timestamptz);
create table analytics.nightly (loaded_at timestamptz);
create table analytics.weekdays (loaded_at timestamptz);
create table analytics.young (loaded_at timestamptz);
-- hourly at :05, for 28 days, the last 3h12m before now (three loads missed)
insert into analytics.hourly select t from generate_series(now() - interval '28 days 12 minutes', now() - interval '3 hours 12 minutes',
    interval '1 hour') as t;
-- nightly at 18:00 (a few minutes late some days), the last yesterday: 18h ago
insert into analytics.nightly select d + interval '18 hours' + (extract(day from d)::int % 3) * interval '4 minutes'
    from generate_series(date_trunc('day', now()) - interval '28 days', date_trunc('day', now()) - interval '1 day',
    interval '1 day') as d;
-- hourly on weekdays only, the last on Friday evening (now is Sunday noon)
insert into analytics.weekdays select t from generate_series(now() - interval '28 days', now(), interval '1 hour') as t
    where extract(isodow from t) < 6;
-- two loads so far
insert into analytics.young values (now() - interval '2 hours'), (now() - interval '1 hour');
"""

RULE = """\
    name: learned
    type: freshness
    source: warehouse
    learn: {history: 28d}
    checks:
      - {name: hourly, table: analytics.hourly, loaded_at: loaded_at}
      - {name: nightly, table: analytics.nightly, loaded_at: loaded_at}
      - {name: weekdays, table: analytics.weekdays, loaded_at: loaded_at}
      - {name: young, table: analytics.young, loaded_at: loaded_at}
      - {name: young-fixed, table: analytics.young, loaded_at: loaded_at, warn_after: 30m}
    """


def test_cadences_learned_from_the_tables_own_history(tmp_path: Path, pg_db: str, capsys: Any) -> None:
    with_clock(pg_db, SUNDAY)
    execute(pg_db, TABLES)
    engine = project(tmp_path, pg_db, RULE, "learned")
    store = engine.store
    evaluate_now(engine)
    # Only the hourly table is late; the young one is learning, yet its fixed threshold fires.
    assert groups(store, "learned") == {"hourly": ("firing", "critical"), "young-fixed": ("firing", "warning")}
    summary = summaries(store, "learned")["hourly"]
    assert summary.startswith("hourly loads about every 1h after Sunday loads around 08:00 (")
    assert summary.endswith(" gaps under 1h15m); last load 3h12m ago (2026-11-29T08:48:00Z)")
    seen = facts(store, "learned")
    assert seen["nightly"]["status"] == "fresh" and str(seen["nightly"]["learned"]).startswith("loads about every 1d ")
    assert seen["weekdays"]["status"] == "fresh" and "after Friday loads around 23:00" in str(seen["weekdays"]["learned"])
    assert seen["young"]["status"] == "learning"
    assert seen["young"]["learned"] == "learning: 2 loads over 2h so far; needs 5 more loads and 2d22h more history"
    kept = store.baselines("learned")
    assert set(kept) == {"hourly", "nightly", "weekdays", "young", "young-fixed"}
    assert kept["hourly"].fetched_at is not None and kept["young"].model["learning"] is True
    show_status(engine_config(tmp_path))
    out = capsys.readouterr().out
    assert ("check young: learning (learning: 2 loads over 2h so far; needs 5 more loads and 2d22h more history); "
            "last load 2026-11-29T11:00:00Z") in out

    # The hourly table loads again: the alert resolves, stating the age now and what was learned.
    execute(pg_db, "insert into analytics.hourly values (now() - interval '1 minute')")
    evaluate_now(engine)
    assert "hourly" not in groups(store, "learned")
    # The tables' histories were read once: within the hour, what watchdog observes is added without a query.
    again = store.baselines("learned")
    assert again["nightly"].fetched_at == kept["nightly"].fetched_at == SUNDAY
    assert again["hourly"].model["last"] == SUNDAY.timestamp() - 60
    resolved = store.db.execute("select payload from outbox where kind = 'resolved' and grp = 'hourly'").fetchone()
    assert resolved is not None and "loaded 1m ago now" in resolved[0] and "loads about every 1h" in resolved[0]


VOLUME = """
create table analytics.orders (day date primary key, n integer not null);
insert into analytics.orders select d, case when extract(isodow from d) >= 6 then 400 else 1000 end
    + (extract(day from d)::int % 5) * 10 from generate_series(now()::date - 28, now()::date, interval '1 day') as d;
"""

VOLUME_RULE = """\
    name: volume
    type: sql_value
    source: warehouse
    checks:
      - name: orders
        sql: "select n from analytics.orders where day = now()::date"
        anomaly:
          history: 28d
          direction: below
          history_sql: "select day + interval '12 hours', n from analytics.orders where day < now()::date"
    """


def test_a_volume_that_halves_fires_and_a_weekend_dip_does_not(tmp_path: Path, pg_db: str) -> None:
    with_clock(pg_db, SUNDAY)
    execute(pg_db, VOLUME)
    engine = project(tmp_path, pg_db, VOLUME_RULE, "volume")
    store = engine.store
    evaluate_now(engine)
    assert groups(store, "volume") == {}  # Sunday's 400 is what Sundays load
    assert str(facts(store, "volume")["orders"]["learned"]).startswith("usually 4")

    set_clock(pg_db, datetime(2026, 12, 2, 12, 0, tzinfo=UTC))  # Wednesday: half the usual volume
    execute(pg_db, "insert into analytics.orders values ('2026-12-02', 500)")
    evaluate_now(engine)
    assert groups(store, "volume") == {"orders": ("firing", "critical")}
    summary = summaries(store, "volume")["orders"]
    assert summary.startswith("orders is 500 (usually 10") and "on Wednesdays around 12:00" in summary


def test_history_sql_must_be_read_only(tmp_path: Path) -> None:
    rule = VOLUME_RULE.replace("select day + interval '12 hours', n from analytics.orders where day < now()::date",
                               "delete from analytics.orders returning day, n")
    config = write_project(tmp_path, config_text("host=127.0.0.1 dbname=unused"), {"volume": rule})
    problems = load_rules([config.rules_dir], config).problems
    assert len(problems) == 1 and "history_sql" in str(problems[0]) and "read-only" in str(problems[0])


def test_test_rule_replays_a_learned_check_tick_by_tick(tmp_path: Path, pg_db: str) -> None:
    from datetime import timedelta

    from watchdog.sources import Sources
    from watchdog.testrule import present_only, replay

    with_clock(pg_db, SUNDAY)
    execute(pg_db, TABLES)
    config = write_project(tmp_path, config_text(pg_db), {"learned": RULE})
    (rule,) = load_rules([config.rules_dir], config).rules
    assert not present_only(rule)
    sources = Sources(config.sources)
    try:
        result = replay(rule, sources, SUNDAY - timedelta(hours=6), SUNDAY)
    finally:
        sources.close()
    assert result.mode == "learned" and result.requests == 5 and len(result.ticks) == 361 and not result.errors
    fired = {(t["group"], t["to"], t["severity"]): t["at"] for t in result.transitions}
    # The hourly table's last load was 08:48: late (warning) past about 1h15m, critical past about 1h30m, not before.
    assert "2026-11-29T09:55:00Z" <= fired[("hourly", "firing", "warning")] <= "2026-11-29T10:15:00Z"
    assert fired[("hourly", "firing/critical", "critical")] <= "2026-11-29T10:35:00Z"
    # The young table had no row before its first load at 10:00 (never loaded, then); learning, it never fires,
    # while its fixed threshold (30m) does.
    assert fired[("young", "resolved", "critical")] == "2026-11-29T10:00:00Z"
    assert fired[("young-fixed", "firing", "warning")] == "2026-11-29T11:31:00Z"
    assert {g for g, _, _ in fired} == {"hourly", "young", "young-fixed"}
    assert any(n["group"] == "hourly" and "loads about every 1h" in n["text"] for n in result.notifications)
