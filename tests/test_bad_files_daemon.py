"""Issue 13's bad files dropped into the rules directory of a running daemon (a real process).

It stays up, the good rule keeps its 1 s schedule, each bad file is reported
once (one log line and one self-monitoring alert, with file and line) however
many reloads follow, an unreadable directory keeps its rules running in their
previous version, and fixing a file brings its rule back. Meanwhile 30 idle
connections sit on the metrics listener, which is on IPv6 loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.badfiles import BAD_FILES, good
from tests.test_bad_input import without_dac_override
from tests.test_daemon import wait_for

REPO = Path(__file__).resolve().parent.parent


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def rows(project: Path, sql: str, *args: object) -> list[tuple]:
    if not (project / "state.db").exists():
        return []
    db = sqlite3.connect(project / "state.db", timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


class Lines(threading.Thread):
    """Collects a pipe's lines as they come, so the daemon never blocks on a full pipe."""

    def __init__(self, pipe: object):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self.pipe:  # type: ignore[attr-defined]
            self.lines.append(line)


class Sampler(threading.Thread):
    """Records each new last_run of a rule, to show it keeps its schedule."""

    def __init__(self, project: Path, rule: str):
        super().__init__(daemon=True)
        self.project, self.rule = project, rule
        self.seen: list[datetime] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            found = rows(self.project, "select last_run from rules where rule = ?", self.rule)
            if found and found[0][0]:
                moment = datetime.fromisoformat(found[0][0].replace("Z", "+00:00"))
                if not self.seen or moment != self.seen[-1]:
                    self.seen.append(moment)


@pytest.fixture
def project(tmp_path: Path, pg_db: str) -> Path:
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("create table runs (finished_at timestamptz)")
        cur.execute("insert into runs values (%s)", (datetime.now(UTC) - timedelta(hours=3),))
    conn.close()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "fresh.yaml").write_text(good("fresh"))
    (tmp_path / "watchdog.yaml").write_text(f"""\
rules_dir: rules
state_path: state.db
sources:
  warehouse: {{type: postgres, dsn: "{pg_db}"}}
  logs: {{type: search, hosts: ["http://127.0.0.1:9"]}}
  aws: {{type: dms, region: us-east-1, endpoint_url: "http://127.0.0.1:9"}}
metrics: {{listen: "[::1]:{free_port_v6()}"}}
""")
    return tmp_path


@pytest.fixture
def daemon(project: Path) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    proc = subprocess.Popen([*without_dac_override(), sys.executable, "-m", "watchdog", "run", "-c",
                             str(project / "watchdog.yaml")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env={**os.environ, "PYTHONPATH": str(REPO)})
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    out.start()
    err.start()
    yield proc, out, err
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def reported(err: Lines, shown: str) -> list[str]:
    return [line for line in err.lines if 'msg="invalid rule file"' in line and f"file={shown} " in line]


def self_alerts(project: Path, group: str, kind: str = "firing") -> list[tuple]:
    return rows(project, "select payload from outbox where rule = '(watchdog)' and grp = ? and kind = ?", group, kind)


def test_bad_files_never_stop_the_daemon(project: Path, daemon: tuple[subprocess.Popen[str], Lines, Lines]) -> None:
    proc, _, err = daemon
    rules = project / "rules"
    wait_for(lambda: rows(project, "select last_run from rules where rule = 'fresh'"), what="the good rule's first run")
    sampler = Sampler(project, "fresh")
    sampler.start()
    port = int((project / "watchdog.yaml").read_text().split("]:")[1].split('"')[0])
    idle = [socket.create_connection(("::1", port)) for _ in range(30)]  # never send a byte

    sub = rules / "team"  # a directory whose rule is loaded, then becomes unreadable
    sub.mkdir()
    (sub / "held.yaml").write_text(good("held"))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: rows(project, "select last_run from rules where rule = 'held'"), what="the held rule's first run")

    try:
        for bad in BAD_FILES:  # every bad file stays while the next ones come: many reloads, one report each
            path = rules / f"{bad.key}.yaml"
            bad.make(path, bad.key)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda path=path: self_alerts(project, str(path)), what=f"the alert for {bad.key}")
        sub.chmod(0)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self_alerts(project, str(sub)), what="the alert for the unreadable directory")
        held_before = rows(project, "select last_run from rules where rule = 'held'")
        wait_for(lambda: rows(project, "select last_run from rules where rule = 'held'") != held_before,
                 what="the held rule running in its previous version")
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200

        for bad in BAD_FILES:
            path = rules / f"{bad.key}.yaml"
            bad.fix(path, bad.key)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda bad=bad: rows(project, "select last_run from rules where rule = ?", bad.key),
                     timeout=60, what=f"the fixed rule {bad.key} running")  # (a loaded CI machine: once over 20 s)
        sub.chmod(0o755)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not rows(project, "select grp from groups where rule = '(watchdog)' and state != 'ok'"),
                 what="every self-monitoring alert resolved")
    finally:
        sub.chmod(0o755)
        sampler.stop.set()
        for conn in idle:
            conn.close()

    assert proc.poll() is None, "the daemon died"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    time.sleep(0.2)  # let the readers take the last lines

    for bad in BAD_FILES:
        shown = str(rules / f"{bad.key}.yaml")
        lines = [line.split(" ", 1)[1] for line in reported(err, shown)]  # without the time stamp
        assert lines and len(set(lines)) == len(lines), (bad.key, lines)  # each problem logged once
        assert f" line={bad.line} " in lines[0], (bad.key, lines[0])
        (firing,) = self_alerts(project, shown)
        assert f"{bad.line}:" in json.loads(firing[0])["text"], firing
        assert len(self_alerts(project, shown, "resolved")) == 1
        assert rows(project, "select count(*) from rules where rule = ?", bad.key) == [(1,)]
    assert len(reported(err, str(sub))) == 1
    assert sum('msg="invalid rule file"' in line for line in err.lines) < 3 * len(BAD_FILES)
    assert "Traceback" not in "".join(err.lines)

    gaps = [(b - a).total_seconds() for a, b in zip(sampler.seen, sampler.seen[1:], strict=False)]
    assert len(gaps) >= 10 and max(gaps) < 3.0, gaps  # every 1s, through every reload
