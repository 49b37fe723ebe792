"""The learned baselines (watchdog.baseline): pure, so examples and properties need no server and no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.baseline import (
    MIN_LOADS,
    Cadence,
    Learning,
    Usual,
    clustered,
    learn_cadence,
    learn_value,
)

# A Monday.
MONDAY = datetime(2026, 11, 2, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(days=1)


def hourly(days: int, *, weekdays_only: bool = False, jitter: float = 0.0, seed: int = 1) -> list[datetime]:
    rnd = random.Random(seed)
    out = []
    for hour in range(days * 24):
        at = MONDAY + hour * H + timedelta(minutes=5)
        if weekdays_only and at.weekday() >= 5:
            continue
        out.append(at + timedelta(minutes=rnd.uniform(-jitter, jitter)))
    return out


def test_an_hourly_table_three_hours_overdue_is_critical_and_says_its_cadence() -> None:
    loads = hourly(14, jitter=4)
    last = loads[-1]
    model = learn_cadence(loads, last + 3 * H + timedelta(minutes=12))
    assert isinstance(model, Cadence)
    assert model.level(3 * H + timedelta(minutes=12)) == "critical"
    assert model.level(timedelta(minutes=50)) is None
    text = model.describe()
    assert text.startswith("loads about every 1h after ") and "of the last 10 gaps under 1h1" in text


def test_a_nightly_table_is_not_late_in_the_afternoon() -> None:
    loads = [MONDAY + d * DAY + timedelta(hours=2, minutes=random.Random(d).uniform(-20, 20)) for d in range(28)]
    model = learn_cadence(loads, loads[-1] + 18 * H)
    assert isinstance(model, Cadence) and model.level(18 * H) is None
    assert timedelta(hours=23) <= model.expected <= timedelta(hours=25)
    assert model.level(31 * H) == "warn" and model.level(40 * H) == "critical"


def test_a_weekday_only_table_is_not_late_on_sunday_but_is_on_tuesday() -> None:
    loads = [t for t in hourly(26, weekdays_only=True, jitter=3)]  # through Friday of the fourth week
    friday_last = max(t for t in loads if t.weekday() == 4)
    sunday = friday_last + timedelta(hours=37)
    assert sunday.weekday() == 6
    model = learn_cadence([t for t in loads if t <= friday_last], sunday)
    assert isinstance(model, Cadence) and model.basis == "week"
    assert model.level(sunday - friday_last) is None
    assert "Friday" in model.describe()
    tuesday_noon = [t for t in loads if t.weekday() == 1 and t.hour == 12][-1]
    late = learn_cadence([t for t in loads if t <= tuesday_noon], tuesday_noon + 3 * H)
    assert isinstance(late, Cadence) and late.level(3 * H) == "critical"


def test_two_loads_are_learning_and_say_what_is_needed() -> None:
    model = learn_cadence([MONDAY, MONDAY + H], MONDAY + 2 * H)
    assert isinstance(model, Learning)
    assert model.describe() == "learning: 2 loads over 2h so far; needs 5 more loads and 2d22h more history"


def test_a_volume_that_halves_fires_and_a_weekend_dip_does_not() -> None:
    rnd = random.Random(3)
    points = []
    for d in range(28):
        day = MONDAY + d * DAY
        usual = 400 if day.weekday() >= 5 else 1000
        points.append((day + timedelta(hours=6), usual * rnd.uniform(0.95, 1.05)))
    sunday = MONDAY + 34 * DAY + timedelta(hours=6)
    assert sunday.weekday() == 6
    quiet = learn_value(points, sunday, direction="below")
    assert isinstance(quiet, Usual) and quiet.basis == "week" and quiet.level(390) is None
    wednesday = MONDAY + 30 * DAY + timedelta(hours=6)
    drop = learn_value(points, wednesday, direction="below")
    assert isinstance(drop, Usual) and drop.level(500) == "critical" and drop.level(2000) is None
    assert drop.describe().startswith("usually 9") and "on Wednesdays around 06:00" in drop.describe()
    both = learn_value(points, wednesday, direction="both")
    assert isinstance(both, Usual) and both.level(2000) == "critical"


# --- properties -------------------------------------------------------------------------------------------------

moments = st.integers(min_value=0, max_value=60 * 86400).map(lambda s: MONDAY + timedelta(seconds=s))


@settings(max_examples=150, deadline=None)
@given(st.lists(moments, max_size=80), moments, st.sampled_from([7, 28]))
def test_any_history_gives_a_model_or_learning_and_never_looks_ahead(loads: list[datetime], now: datetime,
                                                                      days: int) -> None:
    history = timedelta(days=days)
    model = learn_cadence(loads, now, history=history)
    ahead = learn_cadence(loads + [now + timedelta(seconds=s) for s in (1, 3600, 86400)], now, history=history)
    assert model == ahead  # loads after now are never learned from (test-rule's replays depend on it)
    window = clustered(t for t in loads if now - history <= t <= now)
    if isinstance(model, Learning):
        assert len(window) < MIN_LOADS or now - window[0] < timedelta(days=3)
        assert "needs" in model.describe()
    else:
        assert timedelta(0) <= model.expected < model.warn_after < model.error_after
        assert model.last == window[-1] and 0 <= model.under <= model.of <= 10


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=5 * 60, max_value=2 * 86400), st.integers(min_value=10, max_value=200),
       st.integers(min_value=0, max_value=604800))
def test_a_regular_cadence_is_on_time_within_its_period_and_critical_past_two(period: int, loads: int,
                                                                              offset: int) -> None:
    every = timedelta(seconds=period)
    start = MONDAY + timedelta(seconds=offset)
    times = [start + i * every for i in range(loads)]
    if times[-1] - times[0] < timedelta(days=3):
        times = [start + i * every for i in range(int(timedelta(days=4) / every) + 2)]
    model = learn_cadence(times, times[-1] + every, history=timedelta(days=90))
    assert isinstance(model, Cadence)
    assert model.level(every) is None
    assert model.level(2 * every + timedelta(minutes=11)) == "critical"
    ages = [every * f for f in (0.5, 1, 1.3, 1.6, 2, 3, 5)]
    ranks = [(None, "warn", "critical").index(model.level(a)) for a in ages]
    assert ranks == sorted(ranks)  # later is never less late


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(moments, st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)), max_size=60),
       moments, st.sampled_from(["below", "above", "both"]))
def test_values_are_judged_on_their_side_only(points: list[tuple[datetime, float]], now: datetime,
                                              direction: str) -> None:
    model = learn_value(points, now, direction=direction)  # type: ignore[arg-type]
    if isinstance(model, Learning):
        assert "needs" in model.describe()
        return
    assert 0 <= model.warn_margin <= model.error_margin
    assert model.level(model.median) is None
    high, low = model.median + model.error_margin * 2 + 1, model.median - model.error_margin * 2 - 1
    assert (model.level(high) == "critical") == (direction != "below")
    assert (model.level(low) == "critical") == (direction != "above")
    model.describe()


# --- as kept in the state (watchdog.ruletypes.learned) ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(moments, min_size=1, max_size=60), st.integers(min_value=0, max_value=3 * 86400), st.text(max_size=40))
def test_a_kept_model_judges_as_a_fresh_one_and_a_damaged_history_is_no_crash(loads: list[datetime], later: int,
                                                                            garbage: str) -> None:
    from watchdog.baseline import Baseline
    from watchdog.ruletypes.learned import Book, Learn, MemoryBaselines, cadence

    kept = MemoryBaselines()
    last = max(loads)
    now = last + timedelta(seconds=later)
    learn = Learn()
    zone = ZoneInfo("UTC")
    book = Book(kept, "r")
    first = cadence(book, "c", last, now, learn, zone, loads)
    book.flush(now)
    again = cadence(Book(kept, "r"), "c", last, now, learn, zone, None)  # reused from the state, not relearned
    direct = learn_cadence(loads, now, history=learn.history, zone=zone)
    assert first == direct
    if isinstance(direct, Cadence):
        assert again == direct
    else:
        assert isinstance(again, Learning) and again.have == direct.have
    kept.kept["r"]["c"] = Baseline(model={"expected": garbage}, history=garbage)
    cadence(Book(kept, "r"), "c", last, now, learn, zone, None)  # relearns from what it can read
