"""Timeouts: a source that does not answer (a black-holed endpoint) fails fast and is reported once, for the source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock, engine_for, evaluate_now, wait_idle, write_project
from tests.servers.blackhole import BlackHole
from watchdog.config import InvalidFileError, load_config
from watchdog.engine import SELF_RULE, Engine
from watchdog.lifecycle import ERROR_NOTIFY_AFTER
from watchdog.ruletypes.base import SourceUnavailable
from watchdog.state import StateStore
from watchdog.status import status_document

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


def kinds(store: StateStore, rule: str) -> list[tuple[str, str]]:
    return [(r["grp"], r["kind"]) for r in store.db.execute("select grp, kind from outbox where rule = ? order by id", (rule,))]


RULES = {
    "dms": "name: dms\ntype: dms_task\nsource: aws\n",
    "fresh": "name: fresh\ntype: freshness\nsource: warehouse\nchecks:\n  - {name: ga, sql: \"select now()\"}\nwarn_after: 1h\n",
    "errors": "name: errors\ntype: threshold\nsource: logs\nindex: logs-*\nthreshold: {above: 10}\nwindow: 5m\n",
}


def test_black_holed_sources_fail_within_their_timeouts_and_are_reported_once_per_source(
        tmp_path: Path, hole: BlackHole, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        rule_timeout: 20s
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{hole.url}", timeout: 1s}}
          warehouse: {{type: postgres, host: 127.0.0.1, port: {hole.port}, dbname: x, user: x, connect_timeout: 2s}}
          logs: {{type: search, hosts: ["{hole.url}"], timeout: 1s, flavor: elasticsearch}}
        """, RULES)
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    for minute in range(ERROR_NOTIFY_AFTER + 1):
        clock.now = NOW + timedelta(minutes=minute)
        started = time.monotonic()
        applied = evaluate_now(engine)
        took = time.monotonic() - started
        assert took < 15, f"evaluations took {took:.1f}s: a timeout is missing"
        assert {a.rule for a in applied} == {"dms", "fresh", "errors"} and all(a.error for a in applied)
    errors = {a.rule: a.error for a in applied}
    assert "AWS did not answer" in errors["dms"]
    assert "timeout" in errors["fresh"].lower()
    # One alert per source, raised at the first timeout; none per rule (their errors stay in status).
    assert sorted(kinds(engine.store, SELF_RULE)) == [("source aws", "firing"), ("source logs", "firing"),
                                                     ("source warehouse", "firing")]
    for rule in RULES:
        assert kinds(engine.store, rule) == []
        assert engine.store.rule_record(rule).health.errors == ERROR_NOTIFY_AFTER + 1
    # status shows each rule's error as explained by its source's alert
    doc = status_document(config, engine.store, clock.now)
    assert {r["name"]: r.get("error_explained_by") for r in doc["rules"] if r["name"] in RULES} == {
        "dms": "(watchdog) [source aws]", "fresh": "(watchdog) [source warehouse]", "errors": "(watchdog) [source logs]"}


def test_source_alert_resolves_when_the_source_answers_again(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    clock = Clock(NOW)
    engine = Engine([scripted_rule("a"), scripted_rule("b")], store, OneSource(source), clock=clock, rule_types=TYPES)
    source.values.update(a=SourceUnavailable("connection refused"), b=SourceUnavailable("connection refused"))
    for minute in range(2):
        clock.now = NOW + timedelta(minutes=minute)
        engine.dispatch(list(engine.rules.values()), clock.now)
        wait_idle(engine)
    assert kinds(store, SELF_RULE) == [("source scripted", "firing")]
    source.values.update(a=0, b=0)
    engine.dispatch(list(engine.rules.values()), clock.now)
    wait_idle(engine)
    assert kinds(store, SELF_RULE) == [("source scripted", "firing"), ("source scripted", "resolved")]
    assert kinds(store, "a") == kinds(store, "b") == []
    # The rules' errors joined the source's alert: it names them (depends_on, item 6 of its issue).
    (payload,) = [r[0] for r in store.db.execute("select payload from outbox where rule = ? and kind = 'firing'",
                                                  (SELF_RULE,))]
    assert "source scripted does not answer; its rules cannot be evaluated (a, b): connection refused" in payload


def test_a_source_timeout_not_shorter_than_the_rule_timeout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "watchdog.yaml").write_text("rule_timeout: 30s\nsources:\n  aws: {type: dms, timeout: 30s}\n")
    with pytest.raises(InvalidFileError, match=r"sources\.aws\.timeout.*not shorter than rule_timeout"):
        load_config(str(tmp_path / "watchdog.yaml"))
    (tmp_path / "watchdog.yaml").write_text("rule_timeout: 4s\nsources:\n  pg: {type: postgres, dsn: 'host=x'}\n")
    config = load_config(str(tmp_path / "watchdog.yaml"))
    assert config.sources["pg"].connect_timeout == timedelta(seconds=2)  # a default never reaches a short rule timeout
