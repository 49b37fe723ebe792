"""dms_remediate does the least: reload only the tables in error, resume by default, destructive types guarded,
healed only when the task runs, its tables are out of error and (when named) the warehouse is fresh again.

Against the moto server extended with DescribeTableStatistics and ReloadTables, and a real PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers import moto_dms
from tests.servers.moto_dms import MotoDms
from tests.servers.slack_api import SlackServer
from tests.test_crash import daemon, journal, kill, wait_for  # noqa: F401 (daemon is a fixture)
from tests.test_crash import steps as crash_steps
from tests.test_dms import project as dms_project
from tests.test_hostile import assert_inert
from watchdog.config import load_config
from watchdog.lifecycle import State
from watchdog.loader import load_rules
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
TASK = "prod-to-warehouse"


def create_task(moto: MotoDms, name: str = TASK, migration: str = "cdc") -> str:
    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    task = dms.create_replication_task(
        ReplicationTaskIdentifier=name, SourceEndpointArn="arn:src", TargetEndpointArn="arn:tgt",
        ReplicationInstanceArn="arn:ri", MigrationType=migration, TableMappings="{}")["ReplicationTask"]
    dms.start_replication_task(ReplicationTaskArn=task["ReplicationTaskArn"], StartReplicationTaskType="start-replication")
    moto.requests.clear()
    return str(task["ReplicationTaskArn"])


def execute(dsn: str, sql: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def count(dsn: str, table: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        (n,) = cur.fetchone()
    conn.close()
    return int(n)


@pytest.fixture
def warehouse(pg_db: str) -> str:
    execute(pg_db, "create table loads (at timestamptz not null)")
    return pg_db


APPROVERS = """\
        slack:  # never reached here: approvals are decided through the state store
          token: xoxb-test
          app_token: xapp-test
          channel: C0ALERTS
          base_url: http://127.0.0.1:9/api/
          actions: {approvers: [U0LEAD]}
        """


def project(tmp_path: Path, moto: MotoDms, dsn: str, rules: dict[str, str], *, aws: str = "") -> Any:
    return dms_project(tmp_path, moto, dsn, rules, aws=aws, extra=APPROVERS)


def remediate(extra: str = "", restart: str = "{type: resume-processing, max_attempts: 3, within: 6h, wait_running: 1s}",
              refresh: bool = True) -> str:
    text = f"name: fix-dms\ntype: dms_remediate\nsource: aws\ntasks: [{TASK}]\nrestart: {restart}\n"
    if refresh:
        text += 'refresh: {source: warehouse, sql: "insert into loads values (now())"}\n'
    return text + extra


TABLES_RULE = f"name: dms-tables\ntype: dms_task\nsource: aws\ntasks: [{TASK}]\ntables: true\n"


STEP_KINDS = frozenset({"firing", "note", "action", "resolved", "approval"})


def steps(store: StateStore, rule: str = "fix-dms") -> list[tuple[str, str]]:
    """The remediation's steps in the audit log (its intents, actions and outcomes), oldest first."""
    out = [str(a["action"]).split(": ", 1) for a in store.audit(rule)]
    return [(p[0], p[1]) for p in out if len(p) > 1 and p[0] in STEP_KINDS]


def suspend(table: str = "orders") -> None:
    moto_dms.set_tables(TASK, [
        {"SchemaName": "sales", "TableName": "customers", "Inserts": 40},
        {"SchemaName": "sales", "TableName": table, "TableState": "Table error", "Inserts": 120, "Updates": 7},
    ])


def test_suspended_table_alerts_and_is_healed_by_reloading_that_table_alone(
        tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(), "dms-tables": TABLES_RULE}), clock)
    evaluate_now(engine)

    # The alert names the table; the remediation reloaded it alone, never restarting the task.
    assert moto_dms.reloads == [{"task": moto_dms._task(TASK, "us-east-1").arn, "tables": [("sales", "orders")],
                                 "option": "data-reload"}]
    assert moto.calls("StartReplicationTask") == []
    assert engine.store.groups()["fix-dms"][TASK].value == "reloading"
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)  # the next evaluation finds the table loaded again
    log = steps(engine.store)
    assert [kind for kind, _ in log] == ["firing", "note", "action", "action", "resolved"]
    assert log[0][1] == f"task {TASK} is running but 1 table(s) are in error (suspended): sales.orders"
    assert log[1][1] == f"intent: reload sales.orders of {TASK} (attempt 1 of 3)"
    assert log[2][1].startswith("reload issued: ReloadTables data-reload for sales.orders (attempt 1 of 3) because they "
                                f"are in error while task {TASK} runs; the task is not restarted")
    assert log[3][1] == f"sales.orders of task {TASK} reloaded and out of error; starting the warehouse refresh"
    assert log[4][1].startswith("warehouse refresh finished in")
    assert count(warehouse, "loads") == 1

    # The table alert of the dms_task rule fired and resolved now that the table is out of error.
    table_steps = [r[0] for r in engine.store.db.execute("select kind from outbox where rule = 'dms-tables' order by id")]
    assert table_steps == ["firing", "resolved"]
    assert {g: s.state for g, s in engine.store.groups().get("dms-tables", {}).items()
            if s.state == State.FIRING} == {}
    assert len(moto_dms.reloads) == 1 and moto.calls("StartReplicationTask") == []


def test_a_slow_reload_is_waited_for_then_healed(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    moto_dms.set_task(TASK, hold_reload=True)
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), clock)
    evaluate_now(engine)
    assert engine.store.groups()["fix-dms"][TASK].value == "reloading"
    clock.now = NOW + timedelta(minutes=2)
    evaluate_now(engine)  # "Table is being reloaded": still waiting, no second reload
    assert len(moto_dms.reloads) == 1 and engine.store.groups()["fix-dms"][TASK].value == "reloading"
    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": "orders", "TableState": "Table completed"}])
    clock.now = NOW + timedelta(minutes=4)
    evaluate_now(engine)
    assert [k for k, _ in steps(engine.store)][-1] == "resolved" and count(warehouse, "loads") == 1
    assert moto.calls("StartReplicationTask") == []


def test_a_reload_that_does_not_take_is_retried_within_the_budget_then_given_up(
        tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    moto_dms.set_task(TASK, hold_reload=True)
    rule = remediate("tables: {wait_reloaded: 5m}\n",
                     restart="{type: resume-processing, max_attempts: 2, within: 6h, wait_running: 1s}")
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": rule}), clock)
    for minute in range(0, 20, 3):
        clock.now = NOW + timedelta(minutes=minute)
        evaluate_now(engine)
    assert len(moto_dms.reloads) == 2 and moto.calls("StartReplicationTask") == []
    texts = [t for _, t in steps(engine.store)]
    assert any(t.startswith("gave up: 2 attempt(s) within 6h did not bring sales.orders") for t in texts)
    assert engine.store.groups()["fix-dms"][TASK].value == "gave_up"


def test_failed_task_resumes_then_reloads_the_table_still_in_error(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    moto_dms.set_task(TASK, status="failed", StopReason="Stop Reason FATAL_ERROR", LastFailureMessage="boom")
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), clock)
    evaluate_now(engine)
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
    assert [r["tables"] for r in moto_dms.reloads] == [[("sales", "orders")]]
    texts = [t for _, t in steps(engine.store)]
    assert any(t.startswith("restart issued: StartReplicationTask resume-processing (attempt 1 of 3) because the task "
                            "is failed;") for t in texts)
    assert f"task {TASK} is running again, but sales.orders are in error" in texts
    assert [k for k, _ in steps(engine.store)][-1] == "resolved"


def test_destructive_start_type_is_refused_without_allow_destructive(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    config = project(tmp_path, moto, warehouse, {
        "reload": remediate(restart="{type: reload-target}").replace("fix-dms", "reload"),
        "fresh": remediate(restart="{type: start-replication}").replace("fix-dms", "fresh"),
        "allowed": remediate(restart="{type: reload-target, allow_destructive: true}", extra="approve: true\n")
        .replace("fix-dms", "allowed"),
        "unapproved": remediate(restart="{type: reload-target, allow_destructive: true}").replace("fix-dms", "unapproved"),
    })
    result = load_rules([config.rules_dir], config)
    assert [r.name for r in result.rules] == ["allowed"]
    messages = sorted(str(p) for p in result.problems)
    assert len(messages) == 3 and sum("set 'allow_destructive: true' under 'restart'" in m for m in messages) == 2
    assert all("restart.type" in m or "restart" in m for m in messages)
    assert any("unapproved.yaml" in m and "add 'approve: true'" in m for m in messages)


def test_destructive_restart_with_allow_destructive_says_so(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto, migration="full-load-and-cdc")
    moto_dms.set_task(TASK, status="failed", StopReason="Stop Reason FATAL_ERROR")
    rule = remediate(restart="{type: reload-target, allow_destructive: true, wait_running: 1s}", refresh=False,
                     extra="approve: true\n")
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": rule}), Clock(NOW))
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == []  # a destructive restart waits for a person
    (_, text), = [s for s in steps(engine.store) if s[0] == "approval"]
    assert text.startswith(f"approval needed: restart {TASK} with reload-target (destructive")
    episode = engine.store.remediations("fix-dms")[TASK]["episode"]
    assert engine.store.decide_remediation("click-1", episode, approve=True, user="U0LEAD", now=NOW) == ("approved", None)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
    texts = [t for _, t in steps(engine.store)]
    assert any("reload-target" in t and "(destructive: it re-applies the table-preparation mode; allowed by "
               "allow_destructive); approved by Slack user U0LEAD" in t for t in texts)


@pytest.mark.parametrize("restart", ["{type: resume-processing}", "{type: start-replication, allow_destructive: true}\napprove: true"])
def test_no_restart_of_a_task_that_has_not_completed_its_first_run(
        tmp_path: Path, moto: MotoDms, warehouse: str, restart: str) -> None:
    create_task(moto, migration="full-load-and-cdc")
    moto_dms.set_task(TASK, status="failed", StopReason="Stop Reason FATAL_ERROR", Stats={"FullLoadProgressPercent": 40})
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(restart=restart)}), Clock(NOW))
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == []
    (_, text), = [s for s in steps(engine.store) if s[0] == "action"]
    assert text.startswith(f"not restarting {TASK}: it has not completed its first run")
    assert engine.store.groups()["fix-dms"][TASK].value == "gave_up"


FRESHNESS = """\
    name: warehouse-fresh
    type: freshness
    source: warehouse
    checks:
      - {name: loads, sql: "select max(at) from loads"}
    warn_after: 1h
    """


def test_healed_only_when_the_named_freshness_rule_shows_the_warehouse_fresh(
        tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    execute(warehouse, "insert into loads values (now() - interval '5 hours')")
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)
    rules = {"fix-dms": remediate("healed_when: {fresh: warehouse-fresh, within: 30m}\n"), "warehouse-fresh": FRESHNESS}
    engine = engine_for(project(tmp_path, moto, warehouse, rules), clock)
    evaluate_now(engine)  # reload issued
    clock.now = start + timedelta(minutes=1)
    evaluate_now(engine)  # reloaded, refreshed
    assert engine.store.groups()["fix-dms"][TASK].value == "verifying"  # not yet confirmed fresh
    for minute in (2, 3):
        clock.now = start + timedelta(minutes=minute)
        evaluate_now(engine)
    log = steps(engine.store)
    assert log[-1][0] == "resolved"
    assert log[-1][1].startswith(f"healed: task {TASK} is running, no table is in error, and freshness rule "
                                 "warehouse-fresh shows the warehouse fresh")
    assert count(warehouse, "loads") == 2


def test_still_stale_after_the_remediation_is_reported(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    execute(warehouse, "insert into loads values (now() - interval '5 hours')")
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)
    rules = {"fix-dms": remediate("healed_when: {fresh: warehouse-fresh, within: 10m}\n", refresh=False),
             "warehouse-fresh": FRESHNESS}
    engine = engine_for(project(tmp_path, moto, warehouse, rules), clock)
    for minute in (0, 1, 5, 12):
        clock.now = start + timedelta(minutes=minute)
        evaluate_now(engine)
    log = steps(engine.store)
    assert log[-1][0] == "action" and log[-1][1].startswith("the warehouse is still not fresh 10m after the remediation "
                                                            "(freshness rule warehouse-fresh alerts for: loads)")
    assert engine.store.groups()["fix-dms"][TASK].value == "stale"
    execute(warehouse, "insert into loads values (now())")
    for minute in (13, 14):
        clock.now = start + timedelta(minutes=minute)
        evaluate_now(engine)
    assert steps(engine.store)[-1][0] == "resolved"


def test_dry_run_plans_the_reload_and_changes_nothing(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate("dry_run: true\n")}), Clock(NOW))
    evaluate_now(engine)
    assert moto_dms.reloads == [] and count(warehouse, "loads") == 0
    assert steps(engine.store)[-1][1].startswith(f"dry run: would reload sales.orders of {TASK} (ReloadTables data-reload")



@pytest.mark.parametrize("table", ["orders  2024\n", "*bold* <!channel> `x`", "ta\u202eble"])
def test_hostile_table_names_are_reloaded_exactly_and_shown_as_plain_text(
        tmp_path: Path, moto: MotoDms, warehouse: str, table: str) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": table, "TableState": "Table error"}])
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), Clock(NOW))
    evaluate_now(engine)
    assert [r["tables"] for r in moto_dms.reloads] == [[("sales", table)]]  # AWS gets its own name back, byte for byte
    for _, text in steps(engine.store):
        assert "\n" not in text and "\u202e" not in text


def test_requests_per_evaluation_of_a_healthy_task(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": "orders"}])
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate()}), clock)
    for minute in range(3):
        clock.now = NOW + timedelta(minutes=minute)
        moto.requests.clear()
        evaluate_now(engine)
        assert sorted(moto.calls()) == ["DescribeReplicationTasks", "DescribeTableStatistics"]


def reload_intent(store: StateStore) -> None:
    """What the journal holds when watchdog died after recording its intent to reload, before the call's outcome."""
    store.record_step("fix-dms", TASK, {"state": "reloading", "episode": "e1", "since": "2026-11-28T02:59:00Z",
                                        "attempts": ["2026-11-28T02:59:00Z"], "reload_at": "2026-11-28T02:59:00Z",
                                        "issued": False, "tables": [["sales", "orders"]],
                                        "deadline": "2026-11-28T03:29:00Z"}, NOW, None, None)


def test_reload_intent_whose_call_never_reached_aws_is_carried_out_once(
        tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate()})
    store = StateStore(config.state_path)
    reload_intent(store)
    clock = Clock(NOW)
    engine = engine_for(config, clock, store=store)
    evaluate_now(engine)  # the table is still in error and not loading: the call never arrived; made now
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert len(moto_dms.reloads) == 1
    texts = [t for k, t in steps(store) if k == "action"]
    assert texts[0].startswith("reload issued: ReloadTables data-reload for sales.orders (attempt 1 of 3) because")
    assert steps(store)[-1][0] == "resolved"


def test_reload_intent_whose_call_reached_aws_is_not_repeated(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": "orders", "TableState": "Table is being reloaded"}])
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate()})
    store = StateStore(config.state_path)
    reload_intent(store)
    clock = Clock(NOW)
    engine = engine_for(config, clock, store=store)
    evaluate_now(engine)
    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": "orders", "TableState": "Table completed"}])
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert moto_dms.reloads == []  # AWS had the call: never a second reload
    texts = [t for k, t in steps(store) if k == "action"]
    assert "its outcome was unknown, and AWS shows the tables reloading or loaded, so it took effect" in texts[0]
    assert steps(store)[-1][0] == "resolved" and count(warehouse, "loads") == 1


def test_kill_during_the_reload_call_reloads_once(tmp_path: Path, moto: MotoDms, warehouse: str,
                                                  daemon: Callable[[], subprocess.Popen[bytes]]) -> None:
    create_task(moto)
    suspend()
    project(tmp_path, moto, warehouse, {"fix-dms": remediate("schedule: {every: 1s}\n")})
    state = tmp_path / "state.db"
    moto.delays["ReloadTables"] = 2.0  # AWS is slow to answer: the kill lands while the call is in flight
    first = daemon()
    wait_for(lambda: moto.calls("ReloadTables"), what="the reload call")
    kill(first)
    assert journal(state)["state"] == "reloading" and journal(state)["issued"] is False  # the intent, no outcome
    wait_for(lambda: moto_dms.reloads, what="AWS to carry the call out")

    second = daemon()
    wait_for(lambda: any(kind == "resolved" for kind, _ in crash_steps(state)), what="the remediation to finish")
    kill(second)
    assert len(moto_dms.reloads) == 1 and moto.calls("StartReplicationTask") == []
    assert count(warehouse, "loads") == 1
    texts = [text for kind, text in crash_steps(state) if kind == "action"]
    assert "its outcome was unknown, and AWS shows the tables reloading or loaded, so it took effect" in texts[0]


def test_hostile_table_names_reach_slack_as_text(tmp_path: Path, moto: MotoDms, warehouse: str, slack: SlackServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "<!channel>", "TableName": "*x* <https://evil.example|click> ```",
                                "TableState": "Table error"}])
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}
          warehouse: {{type: postgres, dsn: "{warehouse}"}}
        slack: {{token: xoxb-test, channel: '#alerts', base_url: '{slack.base_url}'}}
        rule_refresh_sql: ["insert into loads values (now())"]
        """, {"fix-dms": remediate(), "dms-tables": TABLES_RULE})
    config = load_config(str(tmp_path / "watchdog.yaml"))
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert config.slack is not None
    Outbox(engine.store, SlackNotifier(config.slack), clock=engine.clock, quiet_until=engine.quiet_until).deliver_due()
    posts = slack.calls("chat.postMessage")
    assert posts and any("evil.example" in json.dumps(p.body) for p in posts)
    for post in posts:
        assert_inert(post.body)
    assert [r["tables"] for r in moto_dms.reloads] == [[("<!channel>", "*x* <https://evil.example|click> ```")]]


def test_an_unanswered_reload_is_tried_once_then_reconciled(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    config = project(tmp_path, moto, warehouse, {"fix-dms": remediate()}, aws=", timeout: 1s")
    moto.delays["ReloadTables"] = 2.5  # longer than the read timeout; AWS still carries the call out
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert moto.calls("ReloadTables") == ["ReloadTables"]  # tried once: no botocore retry
    moto.delays.clear()
    wait_for(lambda: moto_dms.reloads, what="AWS to finish the call the client gave up on")
    for minute in (1, 2):
        clock.now = NOW + timedelta(minutes=minute)
        evaluate_now(engine)
    assert moto.calls("ReloadTables") == ["ReloadTables"] and len(moto_dms.reloads) == 1
    texts = [t for k, t in steps(engine.store) if k == "action"]
    assert texts[0].startswith("reload call got no answer")
    assert "its outcome was unknown, and AWS shows the tables reloading or loaded, so it took effect" in texts[1]
    assert steps(engine.store)[-1][0] == "resolved"


def test_with_approve_a_table_reload_waits_for_a_person_too(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    suspend()
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(extra="approve: true\n")}), Clock(NOW))
    evaluate_now(engine)
    evaluate_now(engine)  # still waiting: asked once
    assert moto_dms.reloads == []
    asks = [t for k, t in steps(engine.store) if k == "approval"]
    assert asks == [f"approval needed: reload sales.orders of {TASK} (ReloadTables data-reload; the task is not "
                    "restarted; attempt 1 of 3). Nothing is done until someone approves."]
    episode = engine.store.remediations("fix-dms")[TASK]["episode"]
    assert engine.store.decide_remediation("click-1", episode, approve=True, user="U0LEAD", now=NOW) == ("approved", None)
    evaluate_now(engine)
    assert [r["tables"] for r in moto_dms.reloads] == [[("sales", "orders")]]


def test_a_declined_remediation_does_nothing_until_the_task_runs_again(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    create_task(moto)
    moto_dms.set_task(TASK, status="failed", StopReason="Stop Reason FATAL_ERROR")
    engine = engine_for(project(tmp_path, moto, warehouse, {"fix-dms": remediate(extra="approve: true\n")}), Clock(NOW))
    evaluate_now(engine)
    episode = engine.store.remediations("fix-dms")[TASK]["episode"]
    assert engine.store.decide_remediation("click-1", episode, approve=False, user="U0LEAD", now=NOW) == ("declined", None)
    assert engine.store.decide_remediation("click-2", episode, approve=True, user="U0LEAD", now=NOW)[1].startswith(
        "declined by <@U0LEAD>")  # the first decision counts
    evaluate_now(engine)
    evaluate_now(engine)
    assert moto.calls("StartReplicationTask") == []
    assert [t for k, t in steps(engine.store) if k == "action"] == [
        f"declined by Slack user U0LEAD: not restarting {TASK}; nothing more for this failure until the task runs again"]
