"""Storage faults are reported, not fatal: failing writes, a full file system, corrupt, truncated and lost state files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import wait_idle, write_project
from tests.servers.slack_api import SlackServer
from watchdog.engine import Engine
from watchdog.state import StateStore
from watchdog.storage import lost_history, open_state, write_marker

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def outbox(store: StateStore, rule: str = "r") -> list[str]:
    return [r[0] for r in store.db.execute("select kind from outbox where rule = ? order by id", (rule,))]


def test_a_failing_write_is_held_reported_and_retried(tmp_path: Path) -> None:
    store, source, clock = StateStore(str(tmp_path / "state.db")), ScriptedSource(), Clock()
    told: list[str | None] = []
    engine = Engine([scripted_rule("r")], store, OneSource(source), clock=clock, rule_types=TYPES,
                    on_storage=lambda error, since: told.append(error))
    source.values["r"] = 50  # fires
    store.db.execute("pragma query_only = 1")  # every write fails from here on, as on a full or failing disk
    for minute in range(3):
        clock.now = T0 + timedelta(minutes=minute)
        engine.dispatch(list(engine.rules.values()), clock.now)
        wait_idle(engine)  # no exception: the evaluation is held
        engine.run_pending()
    assert set(engine.held) == {"r"} and engine.storage_error is not None
    assert len(told) == 1 and "readonly" in str(told[0])  # reported once, not once per failure
    assert store.groups() == {}
    store.db.execute("pragma query_only = 0")  # the disk has room again
    engine.run_pending()
    assert engine.held == {} and engine.storage_error is None and told[-1] is None
    assert outbox(store) == ["firing"]  # the held evaluation is written once
    assert store.groups()["r"][""].state.value == "firing"


def corrupt_state(path: Path) -> None:
    store = StateStore(str(path))
    for i in range(300):  # several pages of rows
        store.add_silence(f"rule-{i}", None, T0 + timedelta(days=1), "x" * 200, T0)
    store.db.execute("pragma wal_checkpoint(truncate)")
    store.close()


def test_garbage_in_middle_pages_is_moved_aside_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    corrupt_state(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # garbage in the middle pages, the header intact
        fh.seek(size // 3)
        fh.write(os.urandom(size // 3))
    opened = open_state(str(path), T0)
    (note,) = opened.notes
    assert "could not be read" in note and "moved aside to" in note
    assert (tmp_path / "state.db.corrupt-20261128T020000Z").exists()
    assert opened.store.silences(T0) == [] and opened.store.quick_check() is None


def test_a_truncated_state_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    corrupt_state(path)
    os.truncate(path, path.stat().st_size // 2)
    opened = open_state(str(path), T0)
    assert len(opened.notes) == 1 and "moved aside" in opened.notes[0]


def fire_and_mark(path: Path) -> None:
    """A state at ``path`` with one alert firing and its lost-history marker written, then closed."""
    store, source, clock = StateStore(str(path)), ScriptedSource(), Clock()
    engine = Engine([scripted_rule("r")], store, OneSource(source), clock=clock, rule_types=TYPES)
    source.values["r"] = 50
    engine.dispatch(list(engine.rules.values()), clock.now)
    wait_idle(engine)
    write_marker(str(path), store, clock.now)
    store.close()


def test_an_empty_state_file_after_firing_alerts_says_history_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    fire_and_mark(path)
    intact = open_state(str(path), T0)
    assert intact.notes == []  # intact: nothing to say
    intact.store.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    os.truncate(path, 0)  # zero length: looks like a first start
    opened = open_state(str(path), T0)
    (note,) = opened.notes
    assert "is empty, but the previous run had recorded runs up to 2026-11-28T02:00:00Z with 1 alert(s) firing" in note
    assert "history was lost" in note
    # A first start (no marker) says nothing.
    (tmp_path / "state.db.firing").unlink()
    assert lost_history(str(path), opened.store) is None


def test_every_file_beside_the_state_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    (tmp_path / "state.db.firing.tmp").write_text("left over")
    os.chmod(tmp_path / "state.db.firing.tmp", 0o644)  # a leftover of another mode is narrowed, not kept
    old = os.umask(0o022)  # a usual umask: files would be 0644 unless watchdog says otherwise
    try:
        fire_and_mark(path)
        os.truncate(path, 100)  # unreadable: moved aside, and a new one created beside it
        open_state(str(path), T0).store.close()
    finally:
        os.umask(old)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "state.db.firing" in names and any(".corrupt-" in n for n in names)
    assert {n: oct(os.stat(tmp_path / n).st_mode & 0o777) for n in names} == {n: oct(0o600) for n in names}


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 100))
def test_any_marker_file_content_is_read_without_error(tmp_path_factory: pytest.TempPathFactory, content: bytes,
                                                       cut: int) -> None:
    directory = tmp_path_factory.mktemp("marker")
    path = directory / "state.db"
    store = StateStore(str(path))
    (directory / "state.db.firing").write_bytes(content[:cut] if cut < len(content) else content)
    found = lost_history(str(path), store)  # garbage, a cut or a hostile marker: a sentence or None, never an error
    assert found is None or "history was lost" in found
    store.close()


def test_daemon_survives_a_corrupt_state_file_and_says_so(tmp_path: Path, pg_db: str) -> None:
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        """, {"fresh": "name: fresh\ntype: freshness\nsource: warehouse\nschedule: {every: 1s}\n"
                       "checks:\n  - {name: ga, sql: \"select now() - interval '3 hours'\"}\nwarn_after: 1h\n"})
    path = tmp_path / "state.db"
    corrupt_state(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 3)
        fh.write(b"\xff" * (size // 3))
    proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(tmp_path / "watchdog.yaml")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _fired(path):
            time.sleep(0.1)
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err
    assert "state database unreadable; moved aside" in err
    notices = [line for line in out.splitlines() if line.startswith("notification=")]
    assert any("rule=(watchdog)" in line and "moved aside" in line for line in notices)
    assert any("rule=fresh" in line for line in notices)


def _fired(path: Path) -> bool:
    try:
        db = sqlite3.connect(path)
        try:
            return bool(db.execute("select count(*) from outbox where rule = 'fresh' and sent_at is not null").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return False


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 2 MiB tmpfs (needs mount privileges; skipped without them)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_daemon_on_a_full_file_system_waits_for_space_instead_of_crashing(tmp_path: Path, small_fs: Path, pg_db: str,
                                                                         slack: SlackServer) -> None:
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: {small_fs}/state.db
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        slack: {{token: xoxb-test, channel: "#alerts", base_url: "{slack.base_url}"}}
        """, {"fresh": "name: fresh\ntype: freshness\nsource: warehouse\nschedule: {every: 1s}\n"
                       "checks:\n  - {name: ga, sql: \"select now() - interval '3 hours'\"}\nwarn_after: 1h\n"})
    filler = fill(small_fs)  # no room for the database, its WAL or its shared memory
    from watchdog import daemon

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from watchdog import daemon; daemon.STORAGE_RETRY_SECONDS = 0.5; "
                             "from watchdog.cli import main; sys.exit(main(sys.argv[1:]))", "run", "-c",
                             str(tmp_path / "watchdog.yaml")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # Wait for its first refused open (a loaded machine may take seconds just to import), then a while longer.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("retrying" in line for line in err_lines):
            assert proc.poll() is None, err_lines
            time.sleep(0.1)
        time.sleep(1.5)
        assert proc.poll() is None, err_lines  # waiting for room, not crashing into a restart loop
        filler.unlink()  # room again: it starts and evaluates
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _fired(small_fs / "state.db"):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(err_lines)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert err.count("cannot open the state database; retrying") == 1  # said once, retried quietly
    assert "database or disk is full" in err or "disk I/O error" in err
    # Slack heard of the full disk (directly: there is no outbox without the database), of its end, then the alert.
    texts = [m["text"] for m in slack.messages.values()]
    assert texts[0].startswith("[CRITICAL] FIRING: (watchdog) [state database]: the state database ")
    assert "cannot be written" in texts[0]
    assert texts[1].startswith("[OK] RESOLVED: (watchdog) [state database]: the state database ")
    assert "FIRING: fresh [ga]" in texts[2] and len(texts) == 3
    assert daemon.STORAGE_RETRY_SECONDS == 10.0
