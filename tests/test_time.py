"""Time: schedules follow the monotonic clock through wall-clock steps; health needs evaluations that complete."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import wait_idle
from watchdog import schedule
from watchdog.clocksteps import STEP_THRESHOLD, StepDetector
from watchdog.engine import Engine
from watchdog.rule import Schedule
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


class Clocks:
    """An injected wall clock and monotonic clock: time passes on both; ``step`` moves the wall clock alone."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore(str(tmp_path / "state.db"))
    yield s
    s.close()


def turn(engine: Engine) -> int:
    """One loop turn: collect, dispatch what is due, wait for it; returns how many rules were evaluated."""
    engine.run_pending()
    return len(wait_idle(engine, 5.0)) + len(engine.run_pending())


def test_clock_stepped_back_an_hour_keeps_evaluating(store, caplog) -> None:
    clocks, source = Clocks(), ScriptedSource()
    engine = Engine([scripted_rule("r", every=timedelta(minutes=1))], store, OneSource(source), clock=clocks.now,
                    monotonic=clocks.monotonic, rule_types=TYPES)
    evaluated = 0
    for _ in range(4):
        clocks.advance(61)
        evaluated += turn(engine)
    assert evaluated == 4
    clocks.step(-3600)  # NTP, an operator or a VM migration sets the clock back an hour
    with caplog.at_level(logging.WARNING, logger="watchdog.engine"):
        for _ in range(5):
            clocks.advance(61)
            evaluated += turn(engine)
    assert evaluated == 9  # one per minute, as before the step
    (stepped,) = [r for r in caplog.records if r.getMessage() == "wall clock stepped"]
    assert stepped.fields["seconds"] == -3600
    assert engine.health()[0]


def test_clock_stepped_back_while_stopped_does_not_delay_the_first_run() -> None:
    every = Schedule(every=timedelta(minutes=1))
    stored = T0 + timedelta(hours=1)  # planned before the clock was set back an hour
    assert schedule.first_run("r", every, T0, stored) <= T0 + timedelta(minutes=1) + schedule.MAX_JITTER
    cron = Schedule(cron="0 3 * * *")
    assert schedule.first_run("r", cron, T0, stored) == stored  # cron keeps wall-clock times


def test_health_fails_when_no_evaluation_completes_in_time(store) -> None:
    clocks, source = Clocks(), ScriptedSource()
    engine = Engine([scripted_rule("r", every=timedelta(minutes=1))], store, OneSource(source), clock=clocks.now,
                    monotonic=clocks.monotonic, rule_types=TYPES, timeout=timedelta(seconds=30))
    clocks.advance(30)
    assert turn(engine) == 1 and engine.health()[0]
    hung = threading.Event()
    source.values["r"] = hung  # the next evaluation never returns (as far as the monotonic clock knows)
    expected_by = engine.expected_by
    assert expected_by is not None  # the next run's planned time + the rule timeout + the grace
    clocks.advance(61)
    engine.run_pending()
    assert engine.runner.busy() == {"r"}
    clocks.advance(expected_by - clocks.mono - 1)
    engine.run_pending()
    assert engine.health()[0]
    clocks.advance(2)
    engine.run_pending()
    healthy, why = engine.health()
    assert not healthy and "no evaluation completed in the expected time" in why
    hung.set()
    wait_idle(engine, 5.0)
    assert engine.health()[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 600), st.floats(-0.5, 0.5)), min_size=1, max_size=20),
       st.integers(-86400, 86400).filter(lambda s: abs(s) >= STEP_THRESHOLD.total_seconds()))
def test_step_detector_sees_steps_and_only_steps(ticks: list[tuple[float, float]], jump: int) -> None:
    detector, wall, mono = StepDetector(), T0, 0.0
    assert detector.step(wall, mono) is None
    for elapsed, drift in ticks:  # time passing, with slew far below the threshold
        wall, mono = wall + timedelta(seconds=elapsed + drift), mono + elapsed
        assert detector.step(wall, mono) is None
    wall += timedelta(seconds=jump)
    found = detector.step(wall, mono)
    assert found is not None and abs(found.total_seconds() - jump) < 1e-3


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 86400), st.integers(-10**7, 10**7), st.integers(-10**7, 10**7))
def test_interval_rules_never_wait_more_than_one_period(every_s: int, stored_s: int, planned_s: int) -> None:
    every = Schedule(every=timedelta(seconds=every_s))
    limit = T0 + timedelta(seconds=every_s) + schedule.MAX_JITTER
    assert schedule.first_run("r", every, T0, T0 + timedelta(seconds=stored_s)) <= limit
    following = schedule.following_run("r", every, T0 + timedelta(seconds=planned_s), T0)
    # at most one slot behind (a late run catches up at once), never further than one period ahead
    assert T0 - every.every < schedule.clamp(every, following, T0) <= limit  # type: ignore[operator]


def test_a_rule_file_written_in_two_halves_is_loaded_once_whole(tmp_path: Path) -> None:
    import os
    import time

    from tests.helpers import write_project
    from watchdog import daemon

    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\nsources:\n"
                                     "  warehouse: {type: postgres, dsn: 'postgresql://x@127.0.0.1:1/x'}\n", {})
    files = daemon.RuleFiles(config)
    assert files.load() == []
    path = tmp_path / "rules" / "rule.yaml"
    whole = ("type: freshness\nsource: warehouse\nchecks:\n  - {name: ga, sql: \"select max(at) from t\"}\n"
             "warn_after: 1h\nname: rule-being-written\n")
    half = whole.index("le-being")  # cut here, the first half is a valid rule of its own ("name: ru")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "rule.yaml").write_text(whole[:half])
    assert [r.name for r in daemon.load_rules([str(tmp_path / "cut")], config).rules] == ["ru"]
    with open(path, "w") as fh:
        fh.write(whole[:half])
        fh.flush()
        assert not files.changed()  # just written: wait for it to settle
        time.sleep(daemon.STABLE_SECONDS / 2)
        assert not files.changed()
        fh.write(whole[half:])
    assert not files.changed()  # changed again: the wait starts over
    assert files.seconds_until_stable() is not None
    time.sleep(daemon.STABLE_SECONDS + 0.1)
    assert files.changed()
    assert [r.name for r in files.load()] == ["rule-being-written"]
    assert not files.changed()

    # A file renamed into place after being written elsewhere (its modification time already old) loads at once.
    other = tmp_path / "staged.yaml"
    other.write_text(whole.replace("rule-being-written", "renamed"))
    old = time.time() - 10
    os.utime(other, (old, old))
    os.rename(other, tmp_path / "rules" / "renamed.yaml")
    assert files.changed()
    assert sorted(r.name for r in files.load()) == ["renamed", "rule-being-written"]
