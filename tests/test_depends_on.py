"""depends_on with the real stand-ins: moto DMS failing a task, PostgreSQL tables going stale, the local Slack API.

One failure, one incident: the stale tables of a rule that depends on the
DMS task rule appear in the DMS alert's thread, never on their own, and close
there; a stale table of a rule without depends_on gets its own message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import test_dms_least as least
from tests.helpers import Clock, engine_for, wait_idle, write_project
from tests.servers import moto_dms
from tests.servers.moto_dms import MotoDms
from tests.servers.slack_api import SlackServer
from tests.test_dms import create_task, execute, fail
from watchdog.config import Config, SlackConfig, load_config
from watchdog.engine import Engine
from watchdog.loader import load_rules
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.sources import Sources
from watchdog.status import status_document
from watchdog.testrule import format_text, replay

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
TABLES = ("fact_orders", "fact_logins", "dim_users")

RULES = {
    "dms-tasks": """\
        name: dms-tasks
        type: dms_task
        source: aws
        tasks: [prod-to-warehouse]
        severity: critical
        """,
    "warehouse-freshness": """\
        name: warehouse-freshness
        type: freshness
        source: warehouse
        depends_on: [dms-tasks]
        checks:
          - {name: fact_orders, table: analytics.fact_orders, loaded_at: loaded_at}
          - {name: fact_logins, table: analytics.fact_logins, loaded_at: loaded_at}
          - {name: dim_users, table: analytics.dim_users, loaded_at: loaded_at}
        warn_after: 1h
        severity: critical
        """,
    "crm-freshness": """\
        name: crm-freshness
        type: freshness
        source: warehouse
        checks:
          - {name: accounts, table: crm.accounts, loaded_at: loaded_at}
        warn_after: 1h
        """,
}


@pytest.fixture
def warehouse(pg_db: str) -> str:
    """A warehouse with the loads table of ``test_dms_least``'s rules."""
    execute(pg_db, "create table loads (at timestamptz not null)")
    return pg_db


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def prepare(tmp_path: Path, moto: MotoDms, dsn: str, rules: dict[str, str] = RULES) -> Config:
    """The warehouse's tables (loaded 5 minutes ago), the DMS task (running) and the project's files."""
    execute(dsn, "create schema analytics; create schema crm;"
            + "".join(f"create table analytics.{t} (loaded_at timestamptz);" for t in TABLES)
            + "create table crm.accounts (loaded_at timestamptz);")
    load(dsn, *TABLES, "accounts", ago="5 minutes")
    create_task(moto)
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}
          warehouse: {{type: postgres, dsn: "{dsn}"}}
        """, rules)


def setup(tmp_path: Path, moto: MotoDms, dsn: str, slack: SlackServer,
          rules: dict[str, str] = RULES) -> tuple[Clock, Engine, Outbox]:
    config = prepare(tmp_path, moto, dsn, rules)
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    outbox = Outbox(engine.store, SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url,
                                                            group_wait=timedelta(0), mention_critical="<!here>")),
                    clock=clock)
    return clock, engine, outbox


def load(dsn: str, *tables: str, ago: str) -> None:
    """A load of each table stamped ``ago`` before the database's now() (the clock freshness measures by)."""
    for table in tables:
        schema = "crm" if table == "accounts" else "analytics"
        execute(dsn, f"truncate {schema}.{table}; insert into {schema}.{table} values (now() - '{ago}'::interval)")


def run(clock: Clock, engine: Engine, outbox: Outbox, *names: str) -> None:
    """One minute later: evaluate the named rules (observers first, as the daemon's cycle does) and deliver."""
    clock.now += timedelta(minutes=1)
    for name in names:
        engine.dispatch([engine.rules[name]], clock.now)
        wait_idle(engine)
    outbox.deliver_due()


def posts(slack: SlackServer) -> list[dict[str, Any]]:
    return [r.body for r in slack.calls("chat.postMessage")]


def text_of(body: dict[str, Any]) -> str:
    return str(body.get("text", "")) + "\n" + json.dumps(body.get("blocks", []))


def test_one_failure_one_thread(tmp_path: Path, moto: MotoDms, pg_db: str, slack: SlackServer) -> None:
    clock, engine, outbox = setup(tmp_path, moto, pg_db, slack)
    fail()
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness", "crm-freshness")
    (first,) = posts(slack)
    assert "prod-to-warehouse" in first["text"] and "thread_ts" not in first and "<!here>" in first["text"]
    thread = next(ts for (channel, ts), body in slack.messages.items() if body is first or body == first)

    # Minutes later the three tables the task feeds go stale, and so does a table of a rule without depends_on.
    load(pg_db, *TABLES, "accounts", ago="5 hours")
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness", "crm-freshness")
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness", "crm-freshness")  # (repeats of explained: none)
    new = posts(slack)[1:]
    replies = [p for p in new if p.get("thread_ts") == thread]
    alone = [p for p in new if "thread_ts" not in p]
    assert len(replies) == 1, new  # one reply for the three tables
    assert all(t in replies[0]["text"] for t in TABLES) and "also affected" in replies[0]["text"]
    assert "dms-tasks [prod-to-warehouse]" in replies[0]["text"] and "<!here>" not in replies[0]["text"]
    assert len(alone) == 1 and "crm-freshness" in alone[0]["text"] and "accounts" in alone[0]["text"]
    assert not any("warehouse-freshness" in p["text"] for p in alone)
    rows = engine.store.db.execute("select kind, episode from outbox where rule = 'warehouse-freshness'").fetchall()
    assert [r["kind"] for r in rows] == ["explained"]  # marked for receivers that page: explained, never paged
    doc = status_document(load_config(str(tmp_path / "watchdog.yaml")), engine.store, clock.now)
    (entry,) = [r for r in doc["rules"] if r["name"] == "warehouse-freshness"]
    assert {g["group"]: g["explained_by"]["alert"] for g in entry["groups"]} == \
        {t: "dms-tasks [prod-to-warehouse]" for t in TABLES}

    # The task runs again and the tables load: everything closes in the one thread.
    moto_dms.set_task("prod-to-warehouse", status="running", StopReason="", LastFailureMessage="")
    load(pg_db, *TABLES, ago="1 minute")
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness", "crm-freshness")
    late = posts(slack)[1 + len(new):]
    assert late and all(p.get("thread_ts") == thread for p in late), late
    closing = [p for p in late if "back to normal after dms-tasks [prod-to-warehouse]" in p["text"]]
    assert len(closing) == 1 and all(t in closing[0]["text"] for t in TABLES)
    assert any("RESOLVED" in p["text"] and "prod-to-warehouse" in p["text"] for p in late)
    assert [u.body["ts"] for u in slack.calls("chat.update")] == [thread]  # the task's first message, struck through
    assert engine.store.explanations("warehouse-freshness") == {}
    assert not engine.store.groups("warehouse-freshness")


def test_still_stale_after_the_task_recovered_and_a_link_for_what_fired_first(
        tmp_path: Path, moto: MotoDms, pg_db: str, slack: SlackServer) -> None:
    rules = {**RULES, "crm-freshness": RULES["crm-freshness"] + "depends_on: [dms-tasks]\n"}
    clock, engine, outbox = setup(tmp_path, moto, pg_db, slack, rules)
    load(pg_db, "accounts", ago="5 hours")  # stale before the task fails: announced on its own
    run(clock, engine, outbox, "dms-tasks", "crm-freshness")
    fail()
    load(pg_db, "fact_orders", ago="5 hours")
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness", "crm-freshness")
    messages = posts(slack)
    crm, dms = messages[0], messages[1]
    assert "crm-freshness" in crm["text"] and "prod-to-warehouse" in dms["text"]
    crm_ts = next(ts for (_, ts), body in slack.messages.items() if body == crm)
    links = [p for p in messages if p.get("thread_ts") == crm_ts]
    assert len(links) == 1 and "fired after this alert" in links[0]["text"]
    assert "https://test.slack.com/archives/" in json.dumps(links[0]["blocks"])

    moto_dms.set_task("prod-to-warehouse", status="running", StopReason="", LastFailureMessage="")
    run(clock, engine, outbox, "dms-tasks", "warehouse-freshness")  # settle: 1 of 2 evaluations, nothing alone
    assert not [p for p in posts(slack)[len(messages):] if "thread_ts" not in p]
    run(clock, engine, outbox, "warehouse-freshness")  # 2 of 2: still stale, announced alone
    alone = [p for p in posts(slack)[len(messages):] if "thread_ts" not in p]
    assert len(alone) == 1 and "still stale after dms-tasks [prod-to-warehouse] recovered" in alone[0]["text"]
    assert "<!here>" in alone[0]["text"]  # announced alone, it pages as any critical alert


def test_test_rule_shows_an_explained_notification_as_such(tmp_path: Path, moto: MotoDms, pg_db: str) -> None:
    config = prepare(tmp_path, moto, pg_db)
    fail()
    load(pg_db, "fact_orders", ago="5 hours")
    rules = {r.name: r for r in load_rules([config.rules_dir], config).rules}
    sources = Sources(config.sources)
    try:
        result = replay(rules["warehouse-freshness"], sources, NOW, NOW, others=list(rules.values()))
        alone = replay(rules["warehouse-freshness"], sources, NOW, NOW)  # (without the other rules: as before)
    finally:
        sources.close()
    (note,) = result.notifications
    assert note["kind"] == "explained" and note["group"] == "fact_orders"
    assert "also affected, explained by dms-tasks [prod-to-warehouse]: warehouse-freshness [fact_orders]" in note["text"]
    assert "  " + NOW.strftime("%Y-%m-%dT%H:%M:%SZ") + " explained: [CRITICAL] also affected" in \
        format_text(result, rules["warehouse-freshness"])
    assert [n["kind"] for n in alone.notifications] == ["firing"]


def test_the_healed_when_fresh_rule_is_explained_by_the_remediation_without_saying_so(
        tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    """A remediation's healed_when.fresh rule depends on it: stale while it works, told in its thread, closed there."""
    least.create_task(moto)
    least.suspend()
    execute(warehouse, "insert into loads values (now() - interval '5 hours')")
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(start)
    rules = {"fix-dms": least.remediate("healed_when: {fresh: warehouse-fresh, within: 30m}\n"),
             "warehouse-fresh": least.FRESHNESS}
    engine = engine_for(least.project(tmp_path, moto, warehouse, rules), clock)
    for minute in range(4):
        clock.now = start + timedelta(minutes=minute)
        engine.dispatch([engine.rules["warehouse-fresh"]], clock.now)  # (observers first, as the daemon's --once)
        wait_idle(engine)
        engine.dispatch([engine.rules["fix-dms"]], clock.now)
        wait_idle(engine)
    thread = next(r["episode"] for r in engine.store.db.execute("select episode from outbox where rule = 'fix-dms'"))
    rows = [(r["kind"], r["episode"]) for r in engine.store.db.execute(
        "select kind, episode from outbox where rule = 'warehouse-fresh' order by id")]
    # stale before the remediation fired: alone; then the refresh loads it and it resolves, alone too
    assert rows[0][0] == "firing" and rows[0][1] != thread
    assert least.steps(engine.store)[-1][0] == "resolved"

    # The task fails again: the remediation is at work when the warehouse goes stale, so it is told in its thread.
    execute(warehouse, "delete from loads; insert into loads values (now() - interval '5 hours')")
    least.suspend("payments")
    before = len(rows)
    for minute in range(4, 8):
        clock.now = start + timedelta(minutes=minute)
        engine.dispatch([engine.rules["fix-dms"]], clock.now)  # (the remediation fires first this time)
        wait_idle(engine)
        engine.dispatch([engine.rules["warehouse-fresh"]], clock.now)
        wait_idle(engine)
    thread = [r["episode"] for r in engine.store.db.execute("select episode from outbox where rule = 'fix-dms'")][-1]
    rows = [(r["kind"], r["episode"]) for r in engine.store.db.execute(
        "select kind, episode from outbox where rule = 'warehouse-fresh' order by id")][before:]
    assert rows == [("explained", thread), ("explained_resolved", thread)], rows


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_explanations_are_kept_by_both_stores(tmp_path: Path, pg_db: str, dialect: str) -> None:
    """What explains an alert is written with its evaluation and read back the same, on SQLite and on PostgreSQL."""
    from watchdog.dependencies import Explanation, Phase
    from watchdog.lifecycle import Health
    from watchdog.state import StateStore
    from watchdog.state_db import PostgresDatabase

    store = StateStore(str(tmp_path / "state.db")) if dialect == "sqlite" else \
        StateStore(db=PostgresDatabase(pg_db, "deps"))
    try:
        explained = Explanation(Phase.SETTLING, "dms-tasks", "prod-to-warehouse", "up-1", NOW,
                                resolved_at=NOW + timedelta(minutes=1), evaluations=1)
        store.record_evaluation("fresh", ran_at=NOW, next_run=NOW, duration=0.1, health=Health(), states={},
                                notifications=[], explanations={"fact_orders": explained, "dim_users": None})
        assert store.explanations("fresh") == {"fresh": {"fact_orders": explained}} == store.explanations()
        store.record_evaluation("fresh", ran_at=NOW, next_run=NOW, duration=0.1, health=Health(), states={},
                                notifications=[], explanations={"fact_orders": None})
        assert store.explanations() == {}
    finally:
        store.close()
