"""Severity tiers and keep_firing_for through the daemon's engine, state store and outbox, against osmem-server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy
from tests.test_search import NOW, event, load, project, rule
from watchdog.status import status_document


def outbox(engine: object, name: str) -> list[tuple[str, str]]:
    rows = engine.store.db.execute(  # type: ignore[attr-defined]
        "select kind, payload from outbox where rule = ? order by id", (name,)).fetchall()
    return [(kind, json.loads(payload)["severity"]) for kind, payload in rows]


def test_tiers_warn_then_page_in_one_rule(tmp_path: Path, search: CountingProxy) -> None:
    load(search.url, [event(m / 10) for m in range(1, 21)])  # 20 errors in the last 2 minutes
    config = project(tmp_path, search.url, {
        "tiers": rule("tiers", "type: threshold\nquery: 'level:error'\nwindow: 5m\nseverity: info\n"
                      "threshold: {above: {warning: 10, critical: 50}}\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    state = engine.store.groups()["tiers"][""]
    assert (state.state.value, state.severity.value, state.value) == ("firing", "warning", 20)
    assert "above 10 (warning), 50 (critical)" in state.summary
    load(search.url, [event(-(2 + m / 100)) for m in range(1, 81)])  # 80 more, 2 minutes later
    clock.now = NOW + timedelta(minutes=4)
    evaluate_now(engine)
    assert engine.store.groups()["tiers"][""].severity.value == "critical"
    clock.now = NOW + timedelta(minutes=7, seconds=30)  # 31 remain within 5m: back to warning
    evaluate_now(engine)
    assert engine.store.groups()["tiers"][""].severity.value == "warning"
    assert outbox(engine, "tiers") == [("firing", "warning"), ("severity", "critical"), ("severity", "warning")]


def test_hovering_value_with_keep_firing_for_does_not_flap(tmp_path: Path, search: CountingProxy) -> None:
    # Errors per minute hover around the limit of 3: 5, 2, 5, 2, 2, 5, 2, 2, 2, 2.
    per_minute = [5, 2, 5, 2, 2, 5, 2, 2, 2, 2]
    start = NOW - timedelta(minutes=30)
    events = []
    for minute, count in enumerate(per_minute):
        ago = (NOW - start).total_seconds() / 60 - minute
        events += [event(ago - 0.1 * (i + 1)) for i in range(count)]  # within (start+minute, start+minute+1)
    load(search.url, events)
    body = "type: threshold\nquery: 'level:error'\nwindow: 1m\nthreshold: {above: 3}\n"
    config = project(tmp_path, search.url, {"flappy": rule("flappy", body),
                                            "steady": rule("steady", body + "keep_firing_for: 3m\n")})
    clock = Clock(start)
    engine = engine_for(config, clock)
    for minute in range(1, len(per_minute) + 1):
        clock.now = start + timedelta(minutes=minute)  # window [minute-1, minute)
        evaluate_now(engine)
        if minute == 8:  # clear since the window ending at minute 7: still firing, and status says why
            doc = status_document(config, engine.store, clock.now)
            (steady,) = [r for r in doc["rules"] if r["name"] == "steady"]
            assert [(g["state"], g["clear_since"]) for g in steady["groups"]] == [("firing", "2026-11-28T05:37:00Z")]
    assert [k for k, _ in outbox(engine, "flappy")] == ["firing", "resolved"] * 3
    assert [k for k, _ in outbox(engine, "steady")] == ["firing", "resolved"]
    resolved_at = engine.store.db.execute(
        "select created from outbox where rule = 'steady' and kind = 'resolved'").fetchone()[0]
    assert resolved_at == "2026-11-28T05:40:00Z"  # 3 minutes after the last breach (window ending 05:36)
