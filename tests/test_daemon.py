"""The daemon as a process: kill -9 and restart, SIGTERM, status and silences from the command line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.helpers import write_project
from tests.servers.slack_api import SlackServer

REPO = Path(__file__).resolve().parent.parent

RULE = """\
    name: fresh
    type: freshness
    source: warehouse
    schedule: {every: 1s}
    checks:
      - {name: ga, sql: "select max(finished_at) from runs"}
    warn_after: 1h
    """


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def execute(dsn: str, sql: str, *args: object) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
    conn.close()


@pytest.fixture
def project(tmp_path: Path, pg_db: str, slack: SlackServer) -> Path:
    execute(pg_db, "create table runs (finished_at timestamptz)")
    execute(pg_db, "insert into runs values (%s)", datetime.now(UTC) - timedelta(hours=3))
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        slack:
          token: xoxb-test
          channel: "#alerts"
          base_url: {slack.base_url}
        """, {"fresh": RULE})
    return tmp_path


@pytest.fixture
def daemon(project: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(project / "watchdog.yaml"), *args],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def outbox(project: Path) -> list[tuple[str, int, str | None]]:
    if not (project / "state.db").exists():
        return []
    db = sqlite3.connect(project / "state.db")
    try:
        return db.execute("select kind, attempts, sent_at from outbox order by id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def posted(slack: SlackServer) -> list[dict]:
    """Messages Slack accepted (the server keeps the latest version of each)."""
    return list(slack.messages.values())


def test_kill_9_between_record_and_send_delivers_exactly_once(project: Path, pg_db: str, slack: SlackServer, daemon) -> None:
    slack.fail_next(*[{"status": 500}] * 1000)  # Slack is down: the firing is recorded but not sent
    first = daemon()
    wait_for(lambda: any(kind == "firing" and attempts >= 1 for kind, attempts, _ in outbox(project)), what="a failed attempt")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert [sent for kind, _, sent in outbox(project) if kind == "firing"] == [None]
    assert posted(slack) == []

    slack.failures.clear()  # Slack is back
    second = daemon()
    wait_for(lambda: posted(slack), what="the firing message")
    execute(pg_db, "insert into runs values (now())")  # fresh again: resolves
    wait_for(lambda: slack.calls("chat.update"), what="the resolution")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0

    firing_posts = [r.body for r in slack.calls("chat.postMessage") if "thread_ts" not in r.body]
    assert all("FIRING: fresh [ga]" in b["text"] for b in firing_posts)  # the failed attempts and the one accepted
    top = [m for m in posted(slack) if "thread_ts" not in m]
    replies = [m for m in posted(slack) if "thread_ts" in m]
    assert len(top) == 1 and len(replies) == 1  # accepted: one firing message (since updated), one reply
    assert "RESOLVED: fresh [ga]" in replies[0]["text"]
    (update,) = slack.calls("chat.update")
    assert "RESOLVED" in update.body["text"]
    assert [(kind, sent is not None) for kind, _, sent in outbox(project)] == [
        ("firing", True), ("resolved", True), ("update", True)]  # the rewrite of the first message: an entry of its own


def test_sigterm_stops_cleanly_and_status_reports(project: Path, slack: SlackServer, daemon) -> None:
    proc = daemon()
    wait_for(lambda: posted(slack), what="the firing message")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    _, err = proc.communicate()
    assert "msg=stopped pending=0" in err
    assert "xoxb-test" not in err

    out = subprocess.run([sys.executable, "-m", "watchdog", "status", "-c", str(project / "watchdog.yaml"), "--format", "json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    (rule,) = doc["rules"]
    assert (rule["name"], rule["type"], rule["last_error"]) == ("fresh", "freshness", None)
    assert [(g["group"], g["state"], g["severity"]) for g in rule["groups"]] == [("ga", "firing", "warning")]
    assert rule["facts"]["checks"][0]["name"] == "ga" and rule["facts"]["checks"][0]["age"].startswith("3h")


def test_silence_and_unsilence(project: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watchdog", *args, "-c", str(project / "watchdog.yaml")],
                              cwd=REPO, capture_output=True, text=True)

    added = cli("silence", "fresh:ga", "--for", "2h", "--reason", "vendor outage")
    assert added.returncode == 0 and added.stdout.startswith("silence 1: fresh:ga for 2h")
    doc = json.loads(cli("status", "--format", "json").stdout)
    assert [(s["id"], s["rule"], s["group"], s["reason"]) for s in doc["silences"]] == [("1", "fresh", "ga", "vendor outage")]
    assert cli("silence", "nope", "--for", "1h").returncode == 1
    assert cli("unsilence", "1").returncode == 0
    assert cli("unsilence", "1").returncode == 1
    assert json.loads(cli("status", "--format", "json").stdout)["silences"] == []


def test_once_exits_after_delivering(project: Path, slack: SlackServer) -> None:
    result = subprocess.run([sys.executable, "-m", "watchdog", "run", "--once", "-c", str(project / "watchdog.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert len(posted(slack)) == 1


def test_startup_error_exits_two(tmp_path: Path) -> None:
    (tmp_path / "watchdog.yaml").write_text("rules_dir: missing\n")
    result = subprocess.run([sys.executable, "-m", "watchdog", "run", "-c", str(tmp_path / "watchdog.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "rules directory not found" in result.stderr
    (tmp_path / "watchdog.yaml").write_text("rules_dir: [\n")
    result = subprocess.run([sys.executable, "-m", "watchdog", "run", "-c", str(tmp_path / "watchdog.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "YAML syntax error" in result.stderr
