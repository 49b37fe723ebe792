"""SIGTERM while a search hangs: the daemon exits at once, discards the search, and the next start goes on normally."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import write_project
from tests.servers.search import CountingProxy
from tests.servers.slack_api import SlackServer
from tests.test_daemon import REPO, wait_for
from tests.test_search import load
from watchdog.sources.search import at_once

QUIET_RULES = 150  # with the firing rule, more than one _msearch chunk (100 searches each): the concurrent path


def rule(name: str, query: str, window: int = 10) -> str:
    return (f"name: {name}\ntype: threshold\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\nschedule: {{every: 1s}}\n"
            f"query: '{query}'\nwindow: {window}m\nthreshold: {{above: 5}}\n")


def firing_posts(slack: SlackServer) -> list[str]:
    return [str(r.body.get("text", "")) for r in slack.calls("chat.postMessage")
            if "thread_ts" not in r.body and "FIRING" in str(r.body.get("text", ""))]


def test_sigterm_abandons_a_hung_search_and_the_next_start_goes_on(tmp_path: Path, search: CountingProxy,
                                                                     slack: SlackServer) -> None:
    now = datetime.now(UTC)
    load(search.url, [{"@timestamp": (now - timedelta(seconds=s)).isoformat().replace("+00:00", "Z"),
                       "service": "api", "level": "error", "message": "boom"} for s in range(10)])
    rules = {"api": rule("api", "service:api AND level:error")}
    # (each its own window, so their searches are not packed into one: see test_packing)
    rules |= {f"quiet-{i:03d}": rule(f"quiet-{i:03d}", f"service:quiet-{i:03d}", 11 + i) for i in range(QUIET_RULES)}
    write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          logs: {{type: search, hosts: ["{search.url}"], timeout: 30s}}
        slack: {{token: xoxb-test, channel: "#alerts", base_url: {slack.base_url}}}
        """, rules)
    command = [sys.executable, "-m", "watchdog", "run", "-c", str(tmp_path / "watchdog.yaml")]
    procs: list[subprocess.Popen[str]] = []
    logs = [tmp_path / "first.log", tmp_path / "second.log"]  # files, not pipes: a full pipe would block the daemon
    try:
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=logs[0].open("w"), text=True)
        procs.append(first)
        wait_for(lambda: firing_posts(slack), timeout=60, what="the firing message")

        search.delay = 60.0  # the cluster stops answering: every _msearch is held for a minute
        held = search.total("POST /_msearch")
        wait_for(lambda: search.in_flight >= 2 and search.total("POST /_msearch") >= held + 2, timeout=30,
                 what="two searches held at once")
        sent = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        took = time.monotonic() - sent
        err = logs[0].read_text()
        assert took < 3.0, (took, err)  # generous on a loaded machine; it waited for the held searches before
        assert "msg=stopped" in err

        search.delay = 0.0
        second = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=logs[1].open("w"), text=True)
        procs.append(second)
        ran = search.total("POST /_msearch")
        wait_for(lambda: search.total("POST /_msearch") >= ran + 4, timeout=60, what="evaluations after the restart")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        err = logs[1].read_text()
        assert "error" not in err.lower(), err

        status = subprocess.run([sys.executable, "-m", "watchdog", "status", "-c", str(tmp_path / "watchdog.yaml"),
                                 "--format", "json"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        doc = {r["name"]: r for r in json.loads(status)["rules"]}
        assert len(doc) == QUIET_RULES + 1 and all(r["last_error"] is None for r in doc.values())
        assert [(g["group"], g["state"]) for g in doc["api"]["groups"]] == [("", "firing")]  # still firing, not reset
        assert all(not r["groups"] or all(g["state"] == "ok" for g in r["groups"])
                   for name, r in doc.items() if name != "api")
        assert len(firing_posts(slack)) == 1  # the held evaluation left nothing half-done: no second firing
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.integers(), st.none()), max_size=12), st.integers(min_value=1, max_value=4))
def test_at_once_answers_in_order_and_raises_the_first_error(values: list[int | None], limit: int) -> None:
    """``None`` stands for a call that raises; the calls run concurrently but answer in their order."""
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def call(value: int | None) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.001)
        with lock:
            running[0] -= 1
        if value is None:
            raise ValueError(f"call {id(value)}")
        return value

    calls = [functools.partial(call, v) for v in values]
    if None in values:
        with pytest.raises(ValueError):
            at_once(calls, limit)
    else:
        assert at_once(calls, limit) == values
    assert peak[0] <= limit
