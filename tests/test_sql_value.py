"""sql_value rules against a real PostgreSQL: numbers, grouped rows, tiers, per-check and per-group failures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.test_freshness import NOW, config_text, execute
from watchdog.loader import load_rules
from watchdog.ruletypes.sql_value import CheckError, number

SCHEMA = """
create schema analytics;
create table analytics.loads (day date, source text, rows_loaded bigint);
insert into analytics.loads values
    ('2026-11-20', 'ga', 1000), ('2026-11-27', 'ga', 950),
    ('2026-11-20', 'crm', 500), ('2026-11-27', 'crm', 40),
    ('2026-11-20', 'ads', 300), ('2026-11-27', 'ads', 310);
create table analytics.users (id int, team text, email text);
insert into analytics.users select i, (array['a', 'b'])[1 + i % 2], case when i % 10 = 0 and i % 2 = 1 then null
    when i % 4 = 0 then null else 'x@example.com' end from generate_series(1, 40) i;
create table y (id int);
create function touch() returns int language sql as $$ insert into y values (2); select 1 $$;
"""

RULE = """\
    name: volumes
    type: sql_value
    source: warehouse
    threshold: {below: {warning: 0.8, critical: 0.5}}
    checks:
      - name: week-over-week
        # yesterday's rows per source against the same day a week earlier
        sql: >
          select source, sum(rows_loaded) filter (where day = '2026-11-27')::numeric
                         / nullif(sum(rows_loaded) filter (where day = '2026-11-20'), 0)
          from analytics.loads group by source
      - name: loaded-yesterday
        sql: "select sum(rows_loaded) from analytics.loads where day = '2026-11-27'"
        threshold: {below: 2000}
      - name: null-emails
        sql: "select team, avg((email is null)::int) from analytics.users group by team"
        threshold: {above: 0.2}
    """


@pytest.fixture
def warehouse(pg_db: str) -> str:
    execute(pg_db, SCHEMA)
    return pg_db


def engine(tmp_path: Path, dsn: str, rule: str = RULE, clock: Clock | None = None) -> Any:
    config = write_project(tmp_path, config_text(dsn), {"volumes": rule})
    return engine_for(config, clock or Clock(NOW))


def states(engine: Any) -> dict[str, Any]:
    return {g: s for g, s in engine.store.groups().get("volumes", {}).items() if s.state.value == "firing"}


def test_numbers_grouped_rows_and_tiers(tmp_path: Path, warehouse: str, capsys: Any) -> None:
    eng = engine(tmp_path, warehouse)
    (applied,) = evaluate_now(eng)
    assert applied.error is None
    fired = states(eng)
    # crm: 40 / 500 = 0.08 is critical; ga 0.95 and ads 1.03 are fine; 1300 rows yesterday is under 2000;
    # team a: 10 of 20 emails missing (50%); team b: 2 of 20 (10%)
    assert {g: (round(s.value, 3), s.severity.value) for g, s in fired.items()} == {
        "week-over-week/crm": (0.08, "critical"), "loaded-yesterday": (1300, "warning"), "null-emails/a": (0.5, "warning")}
    assert fired["week-over-week/crm"].summary == "week-over-week/crm is 0.08 (below 0.8 (warning), 0.5 (critical))"
    eng.store.close()
    from watchdog.config import load_config
    from watchdog.status import show_status
    assert show_status(load_config(str(tmp_path / "watchdog.yaml"))) == 0
    out = capsys.readouterr().out
    assert "  value week-over-week/ga: 0.95\n" in out and "  value loaded-yesterday: 1300\n" in out  # ok ones too


def test_each_check_and_each_row_is_its_own_failure(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: volumes
        type: sql_value
        source: warehouse
        threshold: {above: 100}
        checks:
          - {name: missing-table, sql: "select count(*) from analytics.nope"}
          - {name: writes, sql: "select touch()"}
          - {name: text-rows, sql: "select source, case when source = 'ga' then 'lots' else '500' end from analytics.loads where day = '2026-11-27'"}
          - {name: mixed, sql: "select source, case when source = 'crm' then 'x' end from analytics.loads where day = '2026-11-27'"}
          - {name: empty, sql: "select count(*) from analytics.loads where false having false"}
          - {name: fine, sql: "select max(rows_loaded) from analytics.loads"}
        """
    eng = engine(tmp_path, warehouse, rule)
    (applied,) = evaluate_now(eng)
    assert applied.error is None  # no check's failure is the rule's
    summary = {g: s.summary for g, s in states(eng).items()}
    assert summary["missing-table"].startswith("could not check: missing-table: relation \"analytics.nope\" does not exist")
    assert "read-only transaction" in summary["writes"]
    assert summary["text-rows/ga"] == "could not check: text-rows/ga: expected a number, got str 'lots'"
    assert summary["text-rows/crm"].startswith("could not check: text-rows/crm: expected a number, got str '500'")
    assert summary["mixed/crm"] == "could not check: mixed/crm: expected a number, got str 'x'"
    assert summary["mixed/ga"].startswith("mixed/ga returned no value")  # NULL in a row: that group has no value
    assert summary["empty"].startswith("empty returned no value (no rows, or NULL)")
    assert summary["fine"] == "fine is 1000 (above 100)"


def test_a_group_that_disappears_is_no_longer_reported(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: volumes
        type: sql_value
        source: warehouse
        checks:
          - {name: per-source, sql: "select source, sum(rows_loaded) from analytics.loads group by source"}
        threshold: {below: 10}
        """
    eng = engine(tmp_path, warehouse, rule)
    evaluate_now(eng)
    assert states(eng) == {}
    execute(warehouse, "delete from analytics.loads where source = 'ads'")
    evaluate_now(eng)
    assert {g: s.summary for g, s in states(eng).items()} == {
        "per-source/ads": "no longer reported: per-source/ads: it was reported before and is missing from the query's rows"}
    evaluate_now(eng)  # still missing: still firing, never resolved by vanishing
    assert set(states(eng)) == {"per-source/ads"}
    execute(warehouse, "insert into analytics.loads values ('2026-11-28', 'ads', 300)")
    evaluate_now(eng)
    assert states(eng) == {}


def test_statement_timeout_is_the_checks_failure(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: volumes
        type: sql_value
        source: warehouse
        threshold: {above: 0}
        checks:
          - {name: slow, sql: "select count(*) from pg_sleep(5)"}
          - {name: quick, sql: "select 1"}
        """
    config = write_project(tmp_path, config_text(warehouse, statement_timeout="1s"), {"volumes": rule})
    eng = engine_for(config, Clock(NOW))
    evaluate_now(eng)
    summary = {g: s.summary for g, s in states(eng).items()}
    assert "statement timeout" in summary["slow"] and summary["quick"] == "quick is 1 (above 0)"


@pytest.mark.parametrize(("sql", "message"), [
    ("select 1; select 2", "give exactly one query"),
    ("delete from analytics.loads", "only a query"),
    ("select set_config('statement_timeout', '0', false)", "set_config"),
    ("with d as (delete from y returning 1) select count(*) from d", "DELETE"),
])
def test_validation_refuses_anything_but_one_read_only_query(tmp_path: Path, sql: str, message: str) -> None:
    config = write_project(tmp_path, config_text("host=127.0.0.1"), {"volumes": f"""\
        name: volumes
        type: sql_value
        source: warehouse
        threshold: {{above: 1}}
        checks: [{{name: c, sql: "{sql}"}}]
        """})
    result = load_rules([config.rules_dir], config)
    (problem,) = result.problems
    assert problem.path == "checks[0].sql" and message in problem.message, problem


def test_a_check_needs_a_threshold(tmp_path: Path) -> None:
    config = write_project(tmp_path, config_text("host=127.0.0.1"), {"volumes": """\
        name: volumes
        type: sql_value
        source: warehouse
        checks: [{name: c, sql: "select 1"}]
        """})
    (problem,) = load_rules([config.rules_dir], config).problems
    assert problem.path == "checks[0]" and "has no threshold" in problem.message


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.decimals(), st.text(max_size=20),
                 st.binary(max_size=5)))
def test_number_is_total(value: object) -> None:
    try:
        result = number(value)
    except CheckError:
        assert value is not None
        return
    assert result is None if value is None else (isinstance(result, float) and result == float(value))  # type: ignore[arg-type]
    assert not isinstance(value, (bool, str, bytes))
    if isinstance(value, Decimal | float):
        assert value.is_finite() if isinstance(value, Decimal) else value == value


@pytest.mark.parametrize("value", [Decimal("sNaN"), Decimal("NaN"), Decimal("Infinity"), float("nan"), float("-inf")])
def test_non_finite_numbers_are_the_groups_failure(value: object) -> None:
    """Regression: Decimal('sNaN') (numeric 'NaN' arrives as Decimal('NaN')) made float() raise ValueError."""
    with pytest.raises(CheckError, match="finite number"):
        number(value)


def test_test_rule_shows_what_one_evaluation_would_do_now(tmp_path: Path, warehouse: str) -> None:
    import json
    import subprocess
    import sys

    write_project(tmp_path, config_text(warehouse), {"volumes": RULE})
    result = subprocess.run([sys.executable, "-m", "watchdog", "test-rule", str(tmp_path / "rules" / "volumes.yaml"),
                             "-c", str(tmp_path / "watchdog.yaml"), "--format", "json"],
                            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "present" and doc["errors"] == []
    assert sorted(t["group"] for t in doc["transitions"]) == ["loaded-yesterday", "null-emails/a", "week-over-week/crm"]
    assert not (tmp_path / "state.db").exists()


def test_a_failing_check_keeps_its_groups_and_resolutions_state_the_value_now(tmp_path: Path, warehouse: str) -> None:
    rule = """\
        name: volumes
        type: sql_value
        source: warehouse
        checks:
          - {name: per-source, sql: "select source, sum(rows_loaded) from analytics.loads group by source"}
        threshold: {below: 600}
        """
    eng = engine(tmp_path, warehouse, rule)
    evaluate_now(eng)
    assert {g: s.value for g, s in states(eng).items()} == {"per-source/crm": 540}
    execute(warehouse, "alter table analytics.loads rename to loads_old")
    (applied,) = evaluate_now(eng)
    assert applied.error is None
    fired = states(eng)
    assert set(fired) == {"per-source", "per-source/crm"}  # the failure is a finding; crm is unknown, still firing
    assert fired["per-source"].summary.startswith("could not check: per-source: relation \"analytics.loads\" does not exist")
    assert fired["per-source/crm"].value == 540
    execute(warehouse, "alter table analytics.loads_old rename to loads; "
                       "insert into analytics.loads values ('2026-11-28', 'crm', 1000)")
    evaluate_now(eng)
    assert states(eng) == {}
    texts = dict(eng.store.db.execute(
        "select grp, json_extract(payload, '$.text') from outbox where rule = 'volumes' and kind = 'resolved'").fetchall())
    assert "per-source/crm is 1540 now (below 600)" in texts["per-source/crm"]
    assert "check per-source runs again: 3 group(s) returned" in texts["per-source"]


def test_an_unreachable_database_is_the_rules_error(tmp_path: Path) -> None:
    rule = """\
        name: volumes
        type: sql_value
        source: warehouse
        threshold: {above: 1}
        checks: [{name: a, sql: "select 1"}, {name: b, sql: "select 2"}]
        """
    eng = engine(tmp_path, "host=127.0.0.1 port=9 dbname=none user=none", rule)
    (applied,) = evaluate_now(eng)
    assert applied.error and "check 'a'" in applied.error
    assert states(eng) == {}


# --- anomaly: history_sql rows are the world's data -------------------------------------------------------------

_cells = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
                   st.datetimes(timezones=st.just(UTC)), st.datetimes(), st.decimals(allow_nan=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_cells, min_size=0, max_size=4).map(tuple), max_size=8))
def test_history_sql_rows_are_read_or_refused_in_words(rows: list[tuple[object, ...]]) -> None:
    from watchdog.ruletypes.sql_value import CheckError, history_points

    try:
        points = history_points(rows)
    except CheckError as exc:
        assert str(exc).startswith(("history_sql", "expected a"))
        return
    for key, series in points.items():
        assert key is None or isinstance(key, str)
        assert all(at.tzinfo is not None and isinstance(value, float) for at, value in series)


def test_a_threshold_and_an_anomaly_judge_together_and_the_more_severe_wins() -> None:
    from datetime import timedelta

    from watchdog.baseline import learn_value
    from watchdog.ruletypes.learned import Anomaly
    from watchdog.ruletypes.sql_value import judge
    from watchdog.ruletypes.sql_value_options import ValueCheck
    from watchdog.ruletypes.thresholds import Threshold

    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    usual = learn_value([(now - timedelta(days=d), 1000.0 + d) for d in range(1, 29)], now, direction="below")
    check = ValueCheck(name="orders", sql="select 1", threshold=Threshold.from_mapping({"below": 100}),
                       anomaly=Anomaly(direction="below"))
    finding, fact = judge(check, "orders", 500.0, usual)
    assert finding.severity is not None and finding.severity.value == "critical" and fact["status"] == "breach"
    assert finding.summary.startswith("orders is 500 (below 100; usually 10")
    quiet, fact = judge(check, "orders", 990.0, usual)
    assert fact["status"] == "ok" and quiet.summary.startswith("orders is 990 now (below 100; usually 10")
    fixed, _ = judge(check, "orders", 50.0, None)  # learning or not: the fixed threshold fires
    assert fixed.summary.startswith("orders is 50 (below 100)")
