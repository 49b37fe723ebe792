"""Running under systemd: notify messages, reload with a broken rule, SIGTERM mid-evaluation, the unit file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.helpers import write_project
from tests.servers.postgres import free_port
from tests.test_daemon import wait_for

REPO = Path(__file__).resolve().parent.parent


def rule(sql: str = "select max(finished_at) from runs", every: str = "1s") -> str:
    return f"name: fresh\ntype: freshness\nsource: warehouse\nschedule: {{every: {every}}}\n" \
           f"checks:\n  - {{name: ga, sql: \"{sql}\"}}\nwarn_after: 1h\n"


@pytest.fixture
def project(tmp_path: Path, pg_db: str) -> Path:
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("create table runs (finished_at timestamptz)")
        cur.execute("insert into runs values (%s)", (datetime.now(UTC) - timedelta(hours=3),))
    conn.close()
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        metrics: {{listen: "127.0.0.1:{free_port()}"}}
        rule_sql_functions: [pg_sleep]
        """, {"fresh": rule()})
    return tmp_path


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.1)
    yield sock
    sock.close()


def start(project: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(project / "watchdog.yaml")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return out


def db_rows(project: Path, sql: str) -> list[tuple]:
    """The rows of a query on the daemon's state; none while its schema is still being created."""
    db = sqlite3.connect(project / "state.db")
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


def test_notify_messages_arrive_in_order(project: Path, notify_socket: socket.socket) -> None:
    proc = start(project, NOTIFY_SOCKET=notify_socket.getsockname(), WATCHDOG_USEC="400000")
    messages: list[str] = []
    try:
        wait_for(lambda: messages.extend(drain(notify_socket)) or any(m.startswith("READY=1") for m in messages), what="READY")
        wait_for(lambda: messages.extend(drain(notify_socket)) or sum(m == "WATCHDOG=1" for m in messages) >= 2, what="pings")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: messages.extend(drain(notify_socket)) or any(m.startswith("RELOADING=1") for m in messages),
                 what="RELOADING")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    messages.extend(drain(notify_socket))
    kinds = [m.split("\n")[0].split("=")[0] for m in messages if not m.startswith("STATUS=")]
    compact = [k for i, k in enumerate(kinds) if k != "WATCHDOG" or (i and kinds[i - 1] != "WATCHDOG")]
    assert compact[0] == "READY" and compact[-1] == "STOPPING"
    assert ["RELOADING", "READY"] == [k for k in compact if k in ("RELOADING", "READY")][1:3]
    assert "WATCHDOG" in compact
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=1 rules" in ready


def test_reload_with_a_broken_rule_keeps_the_old_version(project: Path) -> None:
    proc = start(project)
    try:
        wait_for(lambda: db_rows(project, "select count(*) from outbox where rule = 'fresh'") == [(1,)]
                 if (project / "state.db").exists() else False, what="the firing")
        (project / "rules" / "fresh.yaml").write_text(rule().replace("warn_after: 1h", "warn_after: soon"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: db_rows(project, "select grp from groups where rule = '(watchdog)'"), what="the self alert")
        before = db_rows(project, "select last_run from rules where rule = 'fresh'")
        wait_for(lambda: db_rows(project, "select last_run from rules where rule = 'fresh'") != before, what="another run")
        status = json.loads(subprocess.run([sys.executable, "-m", "watchdog", "status", "-c", str(project / "watchdog.yaml"),
                                            "--format", "json"], cwd=REPO, capture_output=True, text=True).stdout)
        assert status["invalid_files"][0]["message"].startswith("'soon' is not a duration")
        (project / "rules" / "fresh.yaml").write_text(rule())  # fixed: the self alert resolves
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not db_rows(project, "select grp from groups where rule = '(watchdog)'"), what="the fix")
        (project / "rules" / "fresh.yaml").unlink()  # removed: its alert resolves (found by the file check)
        wait_for(lambda: db_rows(project, "select count(*) from outbox where rule = 'fresh' and kind = 'resolved'") == [(1,)],
                 timeout=30, what="the removed rule's resolution")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert "keeping previous version of invalid rule" in err
    lines = [line for line in out.splitlines() if line.startswith("notification=")]
    assert [line.split()[0:2] for line in lines] == [
        ["notification=firing", "rule=fresh"], ["notification=firing", "rule=(watchdog)"],
        ["notification=resolved", "rule=(watchdog)"], ["notification=resolved", "rule=fresh"]]


def sleeping_queries(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_stat_activity where application_name = 'watchdog' and query like '%pg_sleep%'"
                    " and state = 'active'")
        (n,) = cur.fetchone()
    conn.close()
    return int(n)


def test_sigterm_during_an_evaluation_finishes_it_and_loses_nothing(project: Path, pg_db: str) -> None:
    (project / "rules" / "fresh.yaml").write_text(rule(sql="select max(finished_at) from runs, pg_sleep(2)", every="1m"))
    proc = start(project)
    try:
        wait_for(lambda: sleeping_queries(pg_db), timeout=30, what="the evaluation to be running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert "notification=firing rule=fresh" in out
    assert db_rows(project, "select kind, sent_at is not null from outbox") == [("firing", 1)]
    assert "msg=stopped pending=0" in err


def test_metrics_and_healthz(project: Path) -> None:
    listen = (project / "watchdog.yaml").read_text().split('listen: "')[1].split('"')[0]
    proc = start(project)
    try:
        def metrics() -> str:
            try:
                return urllib.request.urlopen(f"http://{listen}/metrics", timeout=2).read().decode()
            except OSError:
                return ""
        text = wait_for(lambda: "watchdog_evaluations_total 2.0" in metrics() and metrics(), what="two evaluations")
        assert "watchdog_rules 1.0" in text and "watchdog_outbox_pending" in text
        assert urllib.request.urlopen(f"http://{listen}/healthz", timeout=2).read().startswith(b"ok")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        proc.communicate()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_unit_file_verifies(tmp_path: Path) -> None:
    unit = (REPO / "systemd" / "watchdog.service").read_text()
    binary = Path(sys.executable).parent / "watchdog"
    (tmp_path / "watchdog.service").write_text(unit.replace("/opt/watchdog/bin/watchdog", str(binary)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "watchdog.service")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
