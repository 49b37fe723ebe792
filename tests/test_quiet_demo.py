"""A quiet, deterministic demo: observing rules before acting ones, one order, no noise a user cannot act on."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import Clock, engine_for
from tests.servers.moto_dms import MotoDms
from tests.servers.search import CountingProxy, start_search
from tests.test_dms import NOW, create_task, fail, project, remediate, warehouse  # noqa: F401 (a fixture)
from watchdog.config import SearchSource as SearchConfig
from watchdog.sources.search import SearchRequest, SearchSource

REPO = Path(__file__).resolve().parent.parent
OBSERVE = """\
    name: z-dms-tasks
    type: dms_task
    source: aws
    tasks: [prod-to-warehouse]
    """


def test_once_reports_the_world_before_remediating_it(tmp_path: Path, moto: MotoDms, warehouse: str) -> None:
    # The remediation rule sorts first by name and runs in parallel with the observer in the daemon; in one round
    # (`run --once`, the demo) the observer must still see the failed task, every time.
    create_task(moto)
    fail()
    config = project(tmp_path, moto, warehouse, {"a-fix": remediate().replace("fix-dms", "a-fix"), "z-dms-tasks": OBSERVE})
    engine = engine_for(config, Clock(NOW), workers=4)
    applied = engine.run_all_once(60)
    assert [a.rule for a in applied] == ["z-dms-tasks", "a-fix"]  # observers first, then the rules that act
    assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]  # it did remediate
    assert engine.store.groups()["z-dms-tasks"]["prod-to-warehouse"].value == "failed"
    order = [(r["rule"], r["kind"]) for r in engine.store.db.execute("select rule, kind from outbox order by id")]
    assert order[0] == ("z-dms-tasks", "firing") and {rule for rule, _ in order[1:]} == {"a-fix"}
    engine.store.close()


def test_concurrent_searches_keep_their_connections(search: CountingProxy, caplog: pytest.LogCaptureFixture) -> None:
    source = SearchSource(SearchConfig(name="logs", hosts=(search.url,)))
    request = SearchRequest("missing-*", {"size": 0, "query": {"match_all": {}}}, True)
    caplog.set_level(logging.WARNING)
    threads = [threading.Thread(target=lambda: [source.msearch([request]) for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    source.close()
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]


def test_the_search_server_stops_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    server = start_search()
    server.close()
    assert "osmem-server" not in capfd.readouterr().err


def test_the_editable_install_prints_nothing(tmp_path: Path) -> None:
    # What scripts/setup runs (into a throwaway prefix): setuptools' ten-line "Editable installation" warning is gone.
    # A venv of its own (pip's --python): installing into this one, even with --prefix, would uninstall it first.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=120)
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp_path / "venv" / "bin" / "python"),
                             "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", str(REPO)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and ("No matching distribution" in result.stderr or "Could not find a version" in result.stderr):
        pytest.skip(f"no package index for the build requirements: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert [p.name for p in tmp_path.glob("venv/lib/python3*/site-packages/__editable__*.pth")]
