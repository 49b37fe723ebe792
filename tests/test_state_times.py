"""Moments in the state store compare as moments, whatever their precision as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from watchdog.lifecycle import Health
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 15, tzinfo=UTC)
offsets = st.integers(-3000, 3000).map(lambda ms: timedelta(milliseconds=ms))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(due=offsets, now=offsets)
@example(due=timedelta(0), now=timedelta(milliseconds=500))  # "…00Z" sorts after "…00.500Z" as text
@example(due=timedelta(milliseconds=500), now=timedelta(0))
def test_a_notification_is_due_exactly_when_its_moment_has_come(new_store, due: timedelta, now: timedelta) -> None:
    store = new_store()
    try:
        store.record_evaluation("r", ran_at=T0 + due, next_run=T0, duration=0.0, health=Health(), states={},
                                notifications=[("", "firing", "e1", {"text": "x"})])
        assert bool(store.pending(T0 + now)) == (due <= now)
        assert store.next_attempt_at() == T0 + due
        assert store.next_attempt_at(after=T0 + now) == (T0 + due if due > now else None)
    finally:
        store.close()
