"""Schedule arithmetic: pure functions of ``now``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from watchdog.rule import Schedule
from watchdog.schedule import MAX_JITTER, first_run, following_run, jitter

T0 = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)
EVERY_MINUTE = Schedule(every=timedelta(minutes=1))


def test_jitter_is_stable_and_spreads_rules() -> None:
    offsets = [jitter(f"rule-{i}", EVERY_MINUTE) for i in range(200)]
    assert offsets == [jitter(f"rule-{i}", EVERY_MINUTE) for i in range(200)]
    assert all(timedelta(0) <= o < MAX_JITTER for o in offsets)
    per_second = Counter(int(o.total_seconds()) for o in offsets)
    assert max(per_second.values()) <= 30, per_second  # 200 rules over 15 s, not all in one second


def test_jitter_is_at_most_half_a_short_period() -> None:
    assert jitter("fast", Schedule(every=timedelta(seconds=2))) < timedelta(seconds=1)


def test_interval_advances_from_the_planned_time_without_drift() -> None:
    planned = T0
    for _ in range(100):
        finished = planned + timedelta(seconds=7)  # each run takes 7 s
        planned = following_run("r", EVERY_MINUTE, planned, finished)
    assert planned == T0 + timedelta(minutes=100)


def test_after_downtime_a_rule_runs_once_then_keeps_its_phase() -> None:
    stored = T0 + timedelta(minutes=5)
    now = T0 + timedelta(hours=3)
    first = first_run("r", EVERY_MINUTE, now, stored)
    assert now <= first <= now + MAX_JITTER
    following = following_run("r", EVERY_MINUTE, stored, now + timedelta(seconds=1))
    assert following > now and following - now <= timedelta(minutes=1)
    assert (following - stored) % timedelta(minutes=1) == timedelta(0)


def test_a_future_stored_run_is_kept() -> None:
    stored = T0 + timedelta(seconds=40)
    assert first_run("r", EVERY_MINUTE, T0, stored) == stored


def test_cron_in_a_timezone() -> None:
    sched = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    j = jitter("daily", sched)
    nxt = first_run("daily", sched, T0, None)
    assert nxt - j == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert following_run("daily", sched, nxt, nxt) - j == datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def test_cron_skips_missed_runs() -> None:
    sched = Schedule(cron="*/5 * * * *")
    planned = T0
    now = T0 + timedelta(hours=2, minutes=2)
    nxt = following_run("c", sched, planned, now)
    assert nxt - jitter("c", sched) == T0 + timedelta(hours=2, minutes=5)


def test_a_run_late_by_less_than_a_period_catches_up_at_once() -> None:
    every_10s = Schedule(every=timedelta(seconds=10))
    # the run planned at T0 took 12 s: the slot at T0+10s goes out at once (late), not at T0+20s
    assert following_run("r", every_10s, T0, T0 + timedelta(seconds=12)) == T0 + timedelta(seconds=10)


@given(step=st.integers(1, 3600), late=st.integers(0, 10 * 3600))
def test_following_run_keeps_the_grid_and_is_never_more_than_one_slot_behind(step: int, late: int) -> None:
    every = Schedule(every=timedelta(seconds=step))
    now = T0 + timedelta(seconds=late)
    following = following_run("r", every, T0, now)
    assert following > T0 and (following - T0) % timedelta(seconds=step) == timedelta(0)
    assert now - following < timedelta(seconds=step)  # at most one slot in the past: it runs at once
    assert following - max(now, T0) <= timedelta(seconds=step)  # and never a slot further than needed
