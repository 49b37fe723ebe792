"""Crash safety to the last step: the daemon killed (SIGKILL, in a subprocess) at chosen moments.

Each test ends with exactly one restart, exactly one refresh and exactly one
post per notification, whatever the moment of the kill.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_project
from tests.servers.moto_dms import MotoDms
from tests.test_dms import create_task, execute, fail, query

REPO = Path(__file__).resolve().parent.parent

REMEDIATE = """\
    name: fix-dms
    type: dms_remediate
    source: aws
    schedule: {{every: 1s}}
    tasks: [prod-to-warehouse]
    restart: {{type: resume-processing, max_attempts: 3, within: 6h, wait_running: 1m}}
    refresh: {{source: warehouse, sql: "{sql}"}}
    """


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def journal(state: Path) -> dict[str, Any]:
    found = rows(state, "select record from remediations where rule = 'fix-dms'")
    return json.loads(found[0][0]) if found else {}


def steps(state: Path) -> list[tuple[str, str]]:
    return [(kind, json.loads(payload).get("text", payload))
            for kind, payload in rows(state, "select kind, payload from outbox where rule = 'fix-dms' order by id")]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"daemon-{len(procs)}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(tmp_path / "watchdog.yaml")],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def dms_project(tmp_path: Path, moto: MotoDms, dsn: str, sql: str) -> Path:
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}
          warehouse: {{type: postgres, dsn: "{dsn}"}}
        rule_refresh_sql: ["{sql}"]
        """, {"fix-dms": REMEDIATE.format(sql=sql)})
    return tmp_path / "state.db"


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_kill_during_the_start_call_restarts_once_and_still_refreshes(tmp_path: Path, moto: MotoDms, pg_db: str,
                                                                      daemon: Callable[[], subprocess.Popen[bytes]]) -> None:
    execute(pg_db, "create table refreshes (at timestamptz default now())")
    state = dms_project(tmp_path, moto, pg_db, "insert into refreshes default values")
    create_task(moto)
    fail()
    moto.delays["StartReplicationTask"] = 2.0  # AWS is slow to answer: the kill lands while the call is in flight
    first = daemon()
    wait_for(lambda: moto.calls("StartReplicationTask"), what="the start call")
    kill(first)
    assert journal(state)["state"] == "restarting"  # the intent was recorded before the call
    wait_for(lambda: [r for r in query(pg_db, "select 1") if r] and moto_status(moto) == "running", what="AWS to finish")

    second = daemon()
    wait_for(lambda: any(kind == "resolved" for kind, _ in steps(state)), what="the remediation to finish")
    kill(second)
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]  # exactly one restart
    assert query(pg_db, "select count(*) from refreshes") == [(1,)]  # exactly one refresh
    texts = steps(state)
    assert [kind for kind, _ in texts] == ["firing", "action", "action", "resolved"]
    assert "watchdog stopped during the call and AWS reports the task running" in texts[1][1]
    assert journal(state)["state"] == "idle"


def moto_status(moto: MotoDms) -> str:
    import boto3

    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    return str(dms.describe_replication_tasks()["ReplicationTasks"][0]["Status"])


def test_kill_after_the_refresh_commit_never_refreshes_again(tmp_path: Path, moto: MotoDms, pg_db: str,
                                                              daemon: Callable[[], subprocess.Popen[bytes]]) -> None:
    execute(pg_db, "create table refreshes (at timestamptz default now())")
    state = dms_project(tmp_path, moto, pg_db, "select pg_sleep(1); insert into refreshes default values")
    create_task(moto)
    fail()
    first = daemon()
    # While the refresh runs (its SQLite writes done), hold the state database so the outcome cannot be recorded ...
    wait_for(lambda: query(pg_db, "select count(*) from pg_stat_activity where query like '%pg_sleep(1)%' "
                                  "and application_name = 'watchdog'")[0][0], what="the refresh to start")
    holder = sqlite3.connect(state, timeout=30, isolation_level=None)
    holder.execute("begin immediate")
    try:
        # ... then kill the daemon once the refresh committed: between the commit and its record.
        wait_for(lambda: query(pg_db, "select count(*) from refreshes")[0][0], what="the refresh commit")
        assert query(pg_db, "select episode, rule, task from watchdog_refresh_ledger") == [
            (journal(state)["episode"], "fix-dms", "prod-to-warehouse")]
        kill(first)
    finally:
        holder.execute("rollback")
        holder.close()
    assert journal(state)["state"] == "refreshing"

    second = daemon()
    wait_for(lambda: any(kind == "resolved" for kind, _ in steps(state)), what="the remediation to finish")
    kill(second)
    assert query(pg_db, "select count(*) from refreshes") == [(1,)]  # exactly one refresh
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]  # exactly one restart
    texts = steps(state)
    assert [kind for kind, _ in texts] == ["firing", "action", "action", "resolved"]
    assert "warehouse refresh had already committed at" in texts[-1][1] and "not run again" in texts[-1][1]
