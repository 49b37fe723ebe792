"""DMS task rules and remediation against the moto DMS server (with its failure hook) and a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers import moto_dms
from tests.servers.moto_dms import MotoDms
from watchdog.config import DmsSource as DmsConfig
from watchdog.sources.dms import DmsError, DmsSource
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def create_task(moto: MotoDms, name: str = "prod-to-warehouse") -> str:
    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    task = dms.create_replication_task(
        ReplicationTaskIdentifier=name, SourceEndpointArn="arn:src", TargetEndpointArn="arn:tgt",
        ReplicationInstanceArn="arn:ri", MigrationType="cdc", TableMappings="{}")["ReplicationTask"]
    dms.start_replication_task(ReplicationTaskArn=task["ReplicationTaskArn"], StartReplicationTaskType="start-replication")
    moto.requests.clear()
    return str(task["ReplicationTaskArn"])


def fail(name: str = "prod-to-warehouse", **extra: Any) -> None:
    moto_dms.set_task(name, status="failed", StopReason="Stop Reason FATAL_ERROR",
                      LastFailureMessage="Last Error ODBC general error. Task error notification received.", **extra)


def execute(dsn: str, sql: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


@pytest.fixture
def warehouse(pg_db: str) -> str:
    execute(pg_db, "create table refreshes (at timestamptz default now())")
    return pg_db


def project(tmp_path: Path, moto: MotoDms, dsn: str, rules: dict[str, str], *, aws: str = "", extra: str = "") -> Any:
    """A project on the moto DMS server and the warehouse; ``aws`` adds keys to the DMS source, ``extra`` to the config."""
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"{aws}}}
          warehouse: {{type: postgres, dsn: "{dsn}"}}
        rule_refresh_sql: {json.dumps(REFRESH_SQL)}
        """.rstrip(" ") + extra, rules)


# What the config lets these tests' refreshes run (rule_refresh_sql): a refresh writes only what the operator listed.
REFRESH_SQL = ["insert into refreshes default values", "select 1/0", "insert into loads values (now())"]


REMEDIATE = """\
    name: fix-dms
    type: dms_remediate
    source: aws
    tasks: [prod-to-warehouse]
    restart: {{type: resume-processing, max_attempts: {attempts}, within: 6h, wait_running: {wait}}}
    refresh: {{source: warehouse, sql: "{sql}"}}
    dry_run: {dry_run}
    """


def remediate(attempts: int = 3, wait: str = "1s", sql: str = "insert into refreshes default values", dry_run: bool = False) -> str:
    return REMEDIATE.format(attempts=attempts, wait=wait, sql=sql, dry_run=str(dry_run).lower())


def steps(store: StateStore, rule: str = "fix-dms") -> list[tuple[str, str]]:
    return [(r["kind"], r["payload"]) for r in store.db.execute("select kind, payload from outbox where rule = ? order by id", (rule,))]


def kinds(store: StateStore, rule: str = "fix-dms") -> list[str]:
    return [kind for kind, _ in steps(store, rule)]


def test_dms_task_rule_reports_failures_and_missing_tasks(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    create_task(moto, "stopped-by-person")
    moto_dms.set_task("stopped-by-person", status="stopped", StopReason="Stop Reason NORMAL")
    fail(TablesErrored=2)
    rule = "name: dms\ntype: dms_task\nsource: aws\ntasks: [prod-to-warehouse, stopped-by-person, gone]\n"
    engine = engine_for(project(tmp_path, moto, warehouse, {"dms": rule}), Clock(NOW))
    evaluate_now(engine)
    states = engine.store.groups()["dms"]
    assert set(states) == {"prod-to-warehouse", "gone"}
    assert states["prod-to-warehouse"].summary == (
        "task prod-to-warehouse is failed (stop reason FATAL_ERROR): Last Error ODBC general error. "
        "Task error notification received.; 2 table(s) in error")
    assert states["gone"].value == "missing"


def test_happy_path_restart_then_refresh(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail()
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), Clock(NOW))
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
    assert query(warehouse, "select count(*) from refreshes") == [(1,)]
    assert kinds(engine.store) == ["firing", "action", "action", "resolved"]
    texts = [p for _, p in steps(engine.store)]
    assert "failure seen: task prod-to-warehouse is failed (stop reason FATAL_ERROR)" in texts[0]
    assert "restart issued: StartReplicationTask resume-processing (attempt 1 of 3)" in texts[1]
    assert "running again; starting the warehouse refresh" in texts[2]
    assert "warehouse refresh finished" in texts[3]
    assert len({p.split('"episode"')[0] for p in texts}) >= 1
    episodes = {r[0] for r in engine.store.db.execute("select episode from outbox")}
    assert len(episodes) == 1  # one Slack thread
    actions = [a["action"].split(":")[0] for a in engine.store.audit("fix-dms")]
    assert actions == ["firing", "note", "action", "action", "resolved"]  # the note: the intent, before the call
    evaluate_now(engine)  # running: nothing more to do
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"] and len(kinds(engine.store)) == 4


def test_attempt_budget_exhausted(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail(hold_starting=True)
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(attempts=2)}), clock)
    for minute in range(1, 5):
        evaluate_now(engine)
        fail()  # every restart fails again
        clock.now = NOW + timedelta(minutes=minute)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"] * 2
    texts = [p for _, p in steps(engine.store)]
    assert sum("restart issued" in t for t in texts) == 2
    assert sum("gave up: 2 restart(s) within 6h" in t for t in texts) == 1
    assert engine.store.groups()["fix-dms"]["prod-to-warehouse"].value == "gave_up"


def test_task_stopped_by_a_person_is_left_alone(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    moto_dms.set_task("prod-to-warehouse", status="stopped", StopReason="Stop Reason NORMAL")
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), Clock(NOW))
    evaluate_now(engine)
    moto_dms.set_task("prod-to-warehouse", status="starting")  # transitional: never touched either
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == [] and kinds(engine.store) == []


def test_restart_between_restart_issued_and_running_does_not_restart_again(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail(hold_starting=True)
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate(wait="10m")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    # The first evaluation issues the restart and polls for up to 20 s; cut that short by letting it run in the background.
    from watchdog.ruletypes import dms_remediate

    dms_remediate.POLL_IN_EVALUATION = timedelta(seconds=0)
    try:
        evaluate_now(engine)
        assert kinds(engine.store) == ["firing", "action"]
        engine.store.close()  # watchdog stops here (the task is still starting)

        clock.now = NOW + timedelta(minutes=1)
        engine = engine_for(config, clock, store=StateStore(config.state_path))
        evaluate_now(engine)
        assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
        moto_dms.set_task("prod-to-warehouse", status="running")
        clock.now = NOW + timedelta(minutes=2)
        evaluate_now(engine)
    finally:
        dms_remediate.POLL_IN_EVALUATION = timedelta(seconds=20)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
    assert kinds(engine.store) == ["firing", "action", "action", "resolved"]
    assert query(warehouse, "select count(*) from refreshes") == [(1,)]


def test_refresh_failure_is_reported_once(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail()
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(sql="select 1/0")}), clock)
    for minute in range(3):
        clock.now = NOW + timedelta(minutes=minute)
        evaluate_now(engine)
    texts = [p for _, p in steps(engine.store)]
    assert kinds(engine.store) == ["firing", "action", "action", "action"]
    assert "warehouse refresh failed (not retried; run it by hand once fixed): division by zero" in texts[-1]
    assert engine.store.groups()["fix-dms"]["prod-to-warehouse"].value == "refresh_failed"


def test_dry_run_changes_nothing(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail()
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(dry_run=True)}), Clock(NOW))
    evaluate_now(engine)
    evaluate_now(engine)
    assert set(moto.calls()) == {"DescribeReplicationTasks"}
    assert query(warehouse, "select count(*) from refreshes") == [(0,)]
    texts = [p for _, p in steps(engine.store)]
    assert kinds(engine.store) == ["firing", "action"]
    assert "dry run: would restart prod-to-warehouse with resume-processing (attempt 1 of 3)" in texts[1]


TASK = {"ReplicationTaskIdentifier": "t1", "ReplicationTaskArn": "arn:aws:dms:us-east-1:123456789012:task:t1",
        "Status": "failed", "StopReason": "Stop Reason FATAL_ERROR", "MigrationType": "cdc",
        "ReplicationTaskStartDate": NOW - timedelta(days=3)}


def stubbed() -> tuple[DmsSource, Stubber]:
    client = boto3.client("dms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return DmsSource(DmsConfig(name="aws", region="us-east-1"), client=client), Stubber(client)


@pytest.mark.parametrize(("code", "expected"), [
    ("AccessDeniedException", "AWS denied dms:StartReplicationTask (AccessDeniedException): give watchdog's role that permission"),
    ("InvalidResourceStateFault", "dms:StartReplicationTask refused: the task is in a state that does not allow it"),
    ("ThrottlingException", "AWS throttled dms:StartReplicationTask even after retries"),
])
def test_aws_errors_in_plain_words(code: str, expected: str) -> None:
    source, stub = stubbed()
    stub.add_client_error("start_replication_task", service_error_code=code, service_message="nope")
    with stub, pytest.raises(DmsError) as info:
        source.start_task(TASK["ReplicationTaskArn"], "resume-processing")
    assert str(info.value).startswith(expected)


def test_access_denied_restart_is_reported_and_not_retried(tmp_path: Path) -> None:
    source, stub = stubbed()
    stub.add_response("describe_replication_tasks", {"ReplicationTasks": [TASK]})
    stub.add_client_error("start_replication_task", service_error_code="AccessDeniedException", service_message="no")
    stub.add_response("describe_replication_tasks", {"ReplicationTasks": [TASK]})
    (tmp_path / "rules").mkdir()
    from watchdog.engine import Engine
    from watchdog.loader import load_rules

    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\nsources:\n  aws: {type: dms, region: us-east-1}\n",
                           {"fix": "name: fix\ntype: dms_remediate\nsource: aws\n"})

    class Sources:
        def get(self, name: str) -> DmsSource:
            return source

    engine = Engine(load_rules([config.rules_dir], config).rules, StateStore(config.state_path), Sources(), clock=Clock(NOW))
    with stub:
        evaluate_now(engine)
        evaluate_now(engine)
    texts = [p for _, p in steps(engine.store, "fix")]
    assert len(texts) == 2 and "restart 1 of 3 failed: AWS denied dms:StartReplicationTask" in texts[1] and "(not retried)" in texts[1]


def test_describe_follows_pagination_markers() -> None:
    source, stub = stubbed()
    stub.add_response("describe_replication_tasks", {"ReplicationTasks": [TASK], "Marker": "m1"},
                      {"WithoutSettings": True, "MaxRecords": 100})
    stub.add_response("describe_replication_tasks", {"ReplicationTasks": [{**TASK, "ReplicationTaskIdentifier": "t2",
                                                                           "ReplicationTaskArn": "arn:t2"}]},
                      {"WithoutSettings": True, "MaxRecords": 100, "Marker": "m1"})
    with stub:
        tasks = source.describe_tasks()
    assert [t["ReplicationTaskIdentifier"] for t in tasks] == ["t1", "t2"]


def test_intent_whose_call_never_reached_aws_is_carried_out_once(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    arn = create_task(moto)
    fail()
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate()})
    store = StateStore(config.state_path)
    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    (task,) = dms.describe_replication_tasks()["ReplicationTasks"]
    from watchdog.ruletypes.dms_remediate import start_date

    # watchdog recorded the intent, then died before its call left the machine.
    intent = {"type": "resume-processing", "at": "2026-11-28T02:59:00Z", "start_date": start_date(task), "attempt": 1}
    store.record_step("fix-dms", "prod-to-warehouse", {"state": "restarting", "episode": "e1", "since": "2026-11-28T02:59:00Z",
                                                      "attempts": ["2026-11-28T02:59:00Z"], "intent": intent}, NOW, None, None)
    engine = engine_for(config, Clock(NOW), store=store)
    evaluate_now(engine)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]  # made once, not forgotten, not repeated
    assert query(warehouse, "select count(*) from refreshes") == [(1,)]
    assert query(warehouse, "select episode from watchdog_refresh_ledger") == [("e1",)]
    assert [k for k in kinds(store) if k != "note"] == ["action", "action", "resolved"]
    assert "attempt 1 of 3" in steps(store)[0][1]
    assert arn


def test_refresh_ledger_skips_an_episode_that_committed(tmp_path: Path, warehouse: str) -> None:
    from watchdog.config import PostgresSource as PostgresConfig
    from watchdog.sources.postgres import PostgresSource

    source = PostgresSource(PostgresConfig(name="warehouse", dsn=warehouse))
    assert source.run_refresh("insert into refreshes default values", 10, episode="e1", rule="r", task="t") is None
    done = source.run_refresh("insert into refreshes default values", 10, episode="e1", rule="r", task="t")
    assert done is not None
    assert source.run_refresh("insert into refreshes default values", 10, episode="e2", rule="r", task="t") is None
    with pytest.raises(Exception, match="division by zero"):
        source.run_refresh("insert into refreshes default values; select 1/0", 10, episode="e3", rule="r", task="t")
    assert query(warehouse, "select count(*) from refreshes") == [(2,)]  # the failed one rolled back with its ledger row
    assert query(warehouse, "select episode from watchdog_refresh_ledger order by episode") == [("e1",), ("e2",)]


def test_start_call_without_an_answer_is_never_retried_blindly(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    fail()
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate()}, aws=", timeout: 1s")
    moto.delays["StartReplicationTask"] = 2.5  # longer than the read timeout; AWS still carries the call out
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]  # tried once: no botocore retry
    assert engine.store.remediations("fix-dms")["prod-to-warehouse"]["state"] == "restarting"
    moto.delays.clear()
    import time

    time.sleep(2)  # AWS finishes the call the client gave up on
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
    assert query(warehouse, "select count(*) from refreshes") == [(1,)]
    texts = [p for _, p in steps(engine.store)]
    assert kinds(engine.store) == ["firing", "action", "action", "action", "resolved"]
    assert "restart call got no answer" in texts[1] and "AWS reports the task running" in texts[2]


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=30), st.integers(), st.datetimes(timezones=st.just(UTC)),
                 st.lists(st.integers(), max_size=3)))
def test_any_start_date_aws_answers_compares_as_text(value: object) -> None:
    from watchdog.ruletypes.dms_remediate import start_date

    first = start_date({"ReplicationTaskStartDate": value})
    assert isinstance(first, str) and first == start_date({"ReplicationTaskStartDate": value})
    assert start_date({}) == ""
