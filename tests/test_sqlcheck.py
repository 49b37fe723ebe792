"""Freshness SQL is one read-only query; refresh SQL stays in watchdog's transaction (checked by PostgreSQL's parser)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pglast import ast, parse_sql

from watchdog.cli import main
from watchdog.sqlcheck import check_expression, check_query, check_refresh

READ_ONLY = [
    "select max(finished_at) from etl.runs",
    "select source, max(finished_at) from etl.runs group by source",
    "with r as (select * from etl.runs) select max(finished_at) from r",
    "values (now())",
    "table etl.runs",
    "select 1;",
    "select max(x) from (select 1 as x union all select 2) s",
    "select pg_sleep(1), now()",  # the statement timeout bounds it
    "select max(finished_at) from etl.runs -- trailing comment",
]

REFUSED = [
    ("commit; create table x (i int); insert into x values (1); select now()", "it holds 4 statements"),
    ("select 1; select 2", "it holds 2 statements"),
    ("with gone as (delete from y returning *) select now()", "contains DELETE"),
    ("with w as (insert into y values (2) returning 1) select now()", "contains INSERT"),
    ("with w as (update y set id = 3 returning 1) select now()", "contains UPDATE"),
    ("select now() into copy_of_now", "SELECT INTO creates a table"),
    ("select * from y for update", "FOR UPDATE/FOR SHARE"),
    ("select (select id from y for share)", "FOR UPDATE/FOR SHARE"),
    ("select set_config('default_transaction_read_only', 'off', false)", "function set_config()"),
    ("select pg_catalog.pg_terminate_backend(1)", "function pg_terminate_backend()"),
    ("select pg_advisory_lock(1)", "function pg_advisory_lock()"),
    ("select nextval('s')", "function nextval()"),
    ("select query_to_xml('delete from y', true, true, '')", "function query_to_xml()"),
    ("select lo_export(1, '/tmp/x')", "function lo_export()"),
    ("select * from dblink('host=x', 'delete from y') as t(i int)", "function dblink()"),
    ("delete from y returning now()", "not a query but a DELETE statement"),
    ("call analytics.refresh()", "not a query but a CALL statement"),
    ("explain analyze delete from y", "not a query but an EXPLAIN statement"),
    ("set statement_timeout = 0", "not a query"),
    ("create table t as select now()", "not a query"),
    ("copy y to '/tmp/y'", "not a query"),
    ("", "no SQL statement"),
    ("-- only a comment", "no SQL statement"),
    ("selec 1", 'not valid SQL: syntax error at or near "selec"'),
    ("select '\ud800'", "not valid Unicode"),
    ("select 1\x00", "NUL"),
]


@pytest.mark.parametrize("sql", READ_ONLY)
def test_read_only_queries_pass(sql: str) -> None:
    assert check_query(sql) is None


@pytest.mark.parametrize(("sql", "expected"), REFUSED)
def test_anything_else_is_refused_with_the_reason(sql: str, expected: str) -> None:
    problem = check_query(sql)
    assert problem is not None and expected in problem, problem


@pytest.mark.parametrize("text", ["updated_at", "coalesce(updated_at, created_at)", "status = 'done'",
                                  "(select max(x) from t)", "x -- note\n", "a.b::timestamptz at time zone 'UTC'"])
def test_expressions_pass(text: str) -> None:
    assert check_expression(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("1) from t where (true", "not one SQL expression"),
    ("1), (2", "not one SQL expression"),
    ("1) union select (2", "not one SQL expression"),
    ("x --", "not valid SQL"),  # would comment out what follows it
    ("x /*", "not valid SQL"),
    ("1)--", "ends in a -- comment"),  # regression: 'select (1)--)' parses, hiding the ')' (found by Hypothesis)
    ("x) --", "ends in a -- comment"),
    ("x); delete from y; select (1", "not one SQL expression"),
    ("a as b", "not valid SQL"),
    ("nextval('s') > 0", "function nextval()"),
    ("(select 1 from y for update) = 1", "FOR UPDATE"),
    ("", "empty"),
    ("  ", "empty"),
])
def test_anything_but_one_expression_is_refused(text: str, expected: str) -> None:
    problem = check_expression(text)
    assert problem is not None and expected in problem, problem


@pytest.mark.parametrize(("sql", "expected"), [
    ("call analytics.refresh()", None),
    ("insert into refreshes default values; update y set id = 2", None),
    ("commit; insert into y values (3)", "ends or opens a transaction"),
    ("insert into y values (3); rollback", "ends or opens a transaction"),
    ("begin; insert into y values (3)", "ends or opens a transaction"),
    ("", "no SQL statement"),
    ("insert into", "not valid SQL"),
])
def test_refresh_sql_stays_in_one_transaction(sql: str, expected: str | None) -> None:
    problem = check_refresh(sql)
    assert problem == expected if expected is None else (problem is not None and expected in problem)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_checks_never_raise(text: str) -> None:
    for check in (check_query, check_expression, check_refresh):
        result = check(text)
        assert result is None or (isinstance(result, str) and result)


FRAGMENTS = ["select", "now()", "1", ";", "commit", "begin", "delete from y", "insert into y values (1)",
             "update y set id = 1", "returning *", "with d as (", ")", "(", "from y", "for update", "into t",
             "union all", "set_config('a', 'b', false)", ",", "--", "\n", "'", "values"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(" ".join))
def test_an_accepted_query_is_one_select_that_cannot_write(text: str) -> None:
    if check_query(text) is None:
        (raw,) = parse_sql(text)
        assert isinstance(raw.stmt, ast.SelectStmt)
        tree = str(raw.stmt)
        for forbidden in ("InsertStmt", "UpdateStmt", "DeleteStmt", "intoClause", "lockingClause", "set_config"):
            assert forbidden not in tree, text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("()';-/*\n x1selctfromwhe")), max_size=30))
def test_an_accepted_expression_stays_inside_its_parentheses(text: str) -> None:
    """Whatever passes check_expression, composed as (text), is one expression in one query."""
    if check_expression(text) is None:
        assert check_query(f"select max(({text})) from t") is None


def test_validate_rejects_writing_and_multi_statement_freshness_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(
        "rules_dir: rules\nstate_path: state.db\nsources:\n  warehouse: {type: postgres, dsn: 'host=127.0.0.1'}\n")
    (tmp_path / "rules" / "fresh.yaml").write_text(textwrap.dedent("""\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - name: sneaky
            sql: "commit; create table x (i int); insert into x values (1); select now()"
        warn_after: 1h
        """))
    (tmp_path / "rules" / "cte.yaml").write_text(textwrap.dedent("""\
        name: cte
        type: freshness
        source: warehouse
        checks:
          - {name: gone, sql: "with d as (delete from y returning 1) select now()"}
        warn_after: 1h
        """))
    code = main(["validate", "-c", "watchdog.yaml", "--format", "json"])
    assert code != 0
    problems = {(p["file"], p["path"]): p for p in json.loads(capsys.readouterr().out)["errors"]}
    sneaky = problems[("rules/fresh.yaml", "checks[0].sql")]
    assert sneaky["line"] == 6
    assert sneaky["message"] == ("must be one read-only query: it holds 4 statements; give exactly one query "
                                 "(no ';' between statements)")
    assert "contains DELETE (a data-modifying WITH)" in problems[("rules/cte.yaml", "checks[0].sql")]["message"]


def test_refused_sql_never_reaches_the_warehouse(tmp_path: Path, pg_db: str) -> None:
    """The issue's attack, end to end: the rule is refused, so the table is never created."""
    from tests.helpers import write_project
    from watchdog.loader import load_rules

    rule = """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: t, sql: "commit; create table pwned (i int); select now()"}
        warn_after: 1h
        """
    config = write_project(tmp_path, f"rules_dir: rules\nstate_path: state.db\nsources:\n"
                                     f"  warehouse: {{type: postgres, dsn: '{pg_db}'}}\n", {"fresh": rule})
    result = load_rules([config.rules_dir], config)
    assert result.rules == [] and "it holds 3 statements" in result.problems[0].message
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('pwned')")
        assert cur.fetchone() == (None,)
    conn.close()
