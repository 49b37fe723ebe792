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
from watchdog.sqlcheck import ALLOWED_NODES, RefreshGrant, check_expression, check_query, check_refresh, function_allowed

READ_ONLY = [
    "select max(finished_at) from etl.runs",
    "select source, max(finished_at) from etl.runs group by source",
    "with r as (select * from etl.runs) select max(finished_at) from r",
    "values (now())",
    "table etl.runs",
    "select 1;",
    "select max(x) from (select 1 as x union all select 2) s",
    "select pg_catalog.lower(x), extract(epoch from now() - max(t)), date_trunc('day', t)::date from s group by 3",
    "select count(*) filter (where x is distinct from y) over (partition by z order by t), coalesce(a, b) from s",
    "select x from s where x like 'a%' and y between 1 and 2 and z = any(array[1, 2]) and w ->> 'k' = 'v'",
    "select * from generate_series(1, 3) g(i) join s on s.id = g.i order by i using <",
    "select current_date - 1, current_timestamp, interval '1 day', greatest(1, 2), nullif(a, 0)::numeric from s",
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
    # SQL given as text, or acting on the server: refused by an allow-list, not by name
    ("select * from ts_stat('select to_tsvector(x) from t')", "function ts_stat()"),
    ("select ts_rewrite('a'::tsquery, 'select q, r from t')", "function ts_rewrite()"),
    ("select database_to_xml(true, true, '')", "function database_to_xml()"),
    ("select pg_try_advisory_lock(2003071590)", "function pg_try_advisory_lock()"),
    ("select analytics.cleanup_old_rows()", "function analytics.cleanup_old_rows()"),
    ("select pg_sleep(1), now()", "function pg_sleep()"),
    ("select pg_catalog.pg_read_file('/etc/passwd')", "function pg_read_file()"),
    ("select evil.lower(x) from t", "function evil.lower()"),  # a built-in's name in another schema
    ("select rolpassword from pg_authid", "reads pg_authid, a catalog that holds secrets"),
    ("select * from pg_catalog.pg_shadow", "reads pg_shadow"),
    ("select x::analytics.secret_type from t", "a cast to type analytics.secret_type"),
    ("select 1 operator(analytics.@#@) 2", "operator analytics.@#@ is not a built-in operator"),
    ("select 1 @#@ 2", "operator @#@ is not a built-in operator"),
    ("select $1", "a parameter ($1)"),
    ("select * from t tablesample system (10)", "TABLESAMPLE"),
    ("select xmlelement(name a)", "an XML function"),
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


def test_the_function_in_the_message_is_what_the_config_may_allow() -> None:
    problem = check_query("select pg_sleep(1)")
    assert problem is not None and problem.endswith("the operator may allow it in the config with "
                                                    "rule_sql_functions: [pg_sleep]")
    assert check_query("select pg_sleep(1)", functions={"pg_sleep"}) is None
    assert check_query("select analytics.days_since(x) from t", functions={"analytics.*"}) is None
    assert check_query("select analytics.days_since(x) from t", functions={"analytics.days_since"}) is None
    assert check_query("select analytics.days_since(x) from t", functions={"days_since"}) is not None
    assert check_query("select other.days_since(x) from t", functions={"analytics.*"}) is not None
    assert check_expression("analytics.days_since(x) > 1", functions={"analytics.*"}) is None
    assert "days_since()" in (check_expression("days_since(x) > 1") or "")


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


GRANT = RefreshGrant.from_entries(["CALL analytics.refresh()", "analytics.refresh_table",
                                   "refresh materialized view analytics.mv; analyze analytics.mv"])


@pytest.mark.parametrize("sql", ["call  analytics.refresh( ) -- nightly", "CALL analytics.refresh_table('orders', 3)",
                                 "call analytics.refresh_table(name => 'orders')",
                                 "REFRESH MATERIALIZED VIEW analytics.mv;\nAnalyze analytics.mv",
                                 "analyze analytics.mv; call analytics.refresh()"])
def test_a_listed_refresh_runs(sql: str) -> None:
    assert check_refresh(sql, grant=GRANT) is None


@pytest.mark.parametrize(("sql", "which"), [
    ("drop table analytics.victim", "this statement (DROP TABLE analytics.victim)"),
    ("copy (select 1) to program 'id'", "this statement"),
    ("do $$ begin create table x (); end $$", "this statement"),
    ("call analytics.refresh(); drop table t", "statement 2 of 2 (DROP TABLE t)"),
    ("call analytics.refresh_table((select pg_terminate_backend(1)))", "this statement"),  # arguments: constants only
    ("call analytics.refresh(1)", "this statement"),
    ("call analytics.refresh_table_evil()", "this statement"),
    ("refresh materialized view concurrently analytics.mv", "this statement"),
])
def test_an_unlisted_refresh_is_refused(sql: str, which: str) -> None:
    problem = check_refresh(sql, grant=GRANT)
    assert problem is not None and problem.startswith(which) and "'rule_refresh_sql'" in problem, problem
    assert check_refresh(sql, grant=RefreshGrant()) is not None  # the default lists nothing
    quiet = check_refresh(sql, grant=GRANT, quote=False)  # SQL from a file is never repeated
    assert quiet is not None and "(" not in quiet.split(" is not one")[0]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_checks_never_raise(text: str) -> None:
    for check in (check_query, check_expression, check_refresh,
                  lambda t: check_refresh(t, grant=RefreshGrant.from_entries([t, "a.b"]))):
        result = check(text)
        assert result is None or (isinstance(result, str) and result)


FRAGMENTS = ["select", "now()", "1", ";", "commit", "begin", "delete from y", "insert into y values (1)",
             "update y set id = 1", "returning *", "with d as (", ")", "(", "from y", "for update", "into t",
             "union all", "set_config('a', 'b', false)", ",", "--", "\n", "'", "values", "ts_stat('select 1')",
             "lower(x)", "max(x)", "pg_sleep(1)", "x::int", "x::evil", "pg_authid", "from pg_authid", "analytics.f(1)", "$1", "over ()"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(" ".join))
def test_an_accepted_query_is_one_select_that_cannot_write(text: str) -> None:
    if check_query(text) is None:
        (raw,) = parse_sql(text)
        assert isinstance(raw.stmt, ast.SelectStmt)
        tree = str(raw.stmt)
        for forbidden in ("InsertStmt", "UpdateStmt", "DeleteStmt", "intoClause", "lockingClause", "set_config"):
            assert forbidden not in tree, text
        for node in _all_nodes(raw.stmt):  # only the nodes of a read-only query, calling only allowed functions
            assert type(node) in ALLOWED_NODES, text
            if isinstance(node, ast.FuncCall):
                assert function_allowed([n.sval for n in node.funcname]), text
            if isinstance(node, ast.RangeVar):  # a column may be called pg_authid; the catalog is never read
                assert node.relname != "pg_authid", text


def _all_nodes(node: object) -> list[ast.Node]:
    found: list[ast.Node] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            found.append(item)
            stack.extend(getattr(item, name, None) for name in type(item).__slots__)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
    return found


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
