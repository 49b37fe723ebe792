"""The engine with a test-only rule type: batching, isolation, timeouts, state, outbox, silences."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import wait_idle
from watchdog.engine import Engine
from watchdog.lifecycle import ERROR_NOTIFY_AFTER
from watchdog.notify.console import ConsoleNotifier
from watchdog.notify.outbox import Outbox
from watchdog.state import StateStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore(str(tmp_path / "state.db"))
    yield s
    s.close()


def make_engine(rules, store, source, clock, **kw) -> Engine:
    return Engine(rules, store, OneSource(source), clock=clock, rule_types=TYPES, **kw)


def tick(engine: Engine, timeout: float = 5.0) -> list:
    """Evaluate every due rule and wait for the results."""
    now = engine.clock()
    due = engine.due(now)
    if due:
        engine.dispatch(due, now)
    return wait_idle(engine, timeout)


def outbox_rows(store: StateStore) -> list[tuple[str, str, str]]:
    return [(r["rule"], r["grp"], r["kind"]) for r in store.db.execute("select * from outbox order by id")]


def test_rules_on_one_source_are_evaluated_in_one_batch(store) -> None:
    clock, source = Clock(), ScriptedSource()
    rules = [scripted_rule(f"r{i}") for i in range(5)]
    engine = make_engine(rules, store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    assert source.calls == [("r0", "r1", "r2", "r3", "r4")]


def test_failing_rule_goes_to_error_and_others_still_run(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"bad": RuntimeError("boom"), "good": 50}
    engine = make_engine([scripted_rule("bad"), scripted_rule("good")], store, source, clock)
    for _ in range(ERROR_NOTIFY_AFTER):
        clock.advance(minutes=1)
        tick(engine)
    records = store.rule_records()
    assert records["bad"].health.errors == ERROR_NOTIFY_AFTER and records["bad"].health.last_error == "RuntimeError: boom"
    assert records["good"].health.errors == 0
    assert outbox_rows(store) == [("good", "", "firing"), ("bad", "", "error")]
    source.values["bad"] = 0
    clock.advance(minutes=1)
    tick(engine)
    assert outbox_rows(store)[-1] == ("bad", "", "recovered")


def test_hung_rule_times_out_without_delaying_others(store) -> None:
    clock, source = Clock(), ScriptedSource()
    hang = threading.Event()
    source.values = {"hung": hang, "fast": 50}
    rules = [scripted_rule("hung", source="slow"), scripted_rule("fast")]

    class TwoSources:
        def get(self, name: str):
            return source

    engine = Engine(rules, store, TwoSources(), clock=clock, rule_types=TYPES, timeout=timedelta(seconds=0.3), workers=2)
    clock.advance(minutes=1)
    tick(engine)
    assert store.rule_records()["hung"].health.last_error == "evaluation timed out after 0.3s"
    assert store.groups()["fast"][""].state.value == "firing"
    clock.advance(minutes=1)
    assert [r.name for r in engine.due(clock())] == ["fast"]  # the stuck one is not piled up
    hang.set()


def test_state_survives_a_restart_without_renotifying(tmp_path: Path) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"r": 50}
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    engine = make_engine([scripted_rule("r")], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    store.close()
    store = StateStore(path)
    engine = make_engine([scripted_rule("r")], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    source.values = {"r": 0}
    clock.advance(minutes=1)
    tick(engine)
    assert outbox_rows(store) == [("r", "", "firing"), ("r", "", "resolved")]
    store.close()


def test_groups_that_disappear_resolve(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"r": {"team-a": 50, "team-b": 60}}
    engine = make_engine([scripted_rule("r")], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    source.values = {"r": {"team-a": 50}}
    clock.advance(minutes=1)
    tick(engine)
    assert outbox_rows(store) == [("r", "team-a", "firing"), ("r", "team-b", "firing"), ("r", "team-b", "resolved")]
    assert set(store.groups()["r"]) == {"team-a"}


def test_silence_mutes_but_keeps_state(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"r": {"team-a": 50, "team-b": 60}}
    store.add_silence("r", "team-a", clock() + timedelta(hours=1), "deploy", clock())
    engine = make_engine([scripted_rule("r")], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    assert outbox_rows(store) == [("r", "team-b", "firing")]
    assert store.groups()["r"]["team-a"].state.value == "firing"


def test_notify_off_records_state_only(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"quiet": 50}
    engine = make_engine([scripted_rule("quiet", notify=False)], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    assert outbox_rows(store) == [] and store.groups()["quiet"][""].state.value == "firing"


def test_removed_rule_resolves_its_alerts(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"gone": 50}
    engine = make_engine([scripted_rule("gone"), scripted_rule("stays")], store, source, clock)
    clock.advance(minutes=1)
    tick(engine)
    assert engine.set_rules([scripted_rule("stays")]) == ["gone"]
    assert outbox_rows(store) == [("gone", "", "firing"), ("gone", "", "resolved")]
    assert "gone" not in store.rule_records()


def test_outbox_delivers_each_notification_once_in_order(store) -> None:
    clock, source = Clock(), ScriptedSource()
    source.values = {"r": 50}
    engine = make_engine([scripted_rule("r", repeat_every=timedelta(minutes=2))], store, source, clock)
    out = io.StringIO()
    outbox = Outbox(store, ConsoleNotifier(out), clock=clock)
    for _ in range(3):
        clock.advance(minutes=1)
        tick(engine)
        outbox.deliver_due()
    source.values = {"r": 0}
    clock.advance(minutes=1)
    tick(engine)
    assert outbox.deliver_due() == 1 and outbox.deliver_due() == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["notification=firing", "notification=repeat", "notification=resolved"]
    assert store.outbox_depth() == 0


def test_scheduling_follows_each_rules_interval(store) -> None:
    clock, source = Clock(), ScriptedSource()
    engine = make_engine([scripted_rule("fast", every=timedelta(seconds=30)), scripted_rule("slow", every=timedelta(minutes=5))],
                         store, source, clock)
    counts = {"fast": 0, "slow": 0}
    for _ in range(20):  # ten minutes in 30 s steps
        clock.advance(seconds=30)
        for applied in tick(engine):
            counts[applied.rule] += 1
    assert counts == {"fast": 20, "slow": 2}


def test_several_notifications_of_one_thread_go_out_in_one_pass_in_order(store) -> None:
    clock = Clock()
    for step in ("firing", "action", "resolved"):
        store.record_step("fix", "task-1", {"state": step}, clock(), (step, "episode-1", {"text": step}), None)
    out = io.StringIO()
    outbox = Outbox(store, ConsoleNotifier(out), clock=clock)
    assert outbox.deliver_due() == 3
    assert [line.split()[0] for line in out.getvalue().splitlines()] == [
        "notification=firing", "notification=action", "notification=resolved"]
