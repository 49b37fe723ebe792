"""Property tests for the value checks every loaded file goes through: durations, crons, listen addresses, templates."""

from __future__ import annotations

import socket
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog import durations, schedule, templates
from watchdog.listen import parse_listen
from watchdog.rule import Schedule

SMALL = settings(max_examples=150, deadline=None)
DURATION_TEXT = st.from_regex(r"\A([0-9]{1,15}(ms|s|m|h|d|w)){1,4}\Z") | st.text(max_size=30)


@SMALL
@given(text=DURATION_TEXT)
def test_a_duration_parses_within_bounds_or_is_a_value_error(text: str) -> None:
    try:
        value = durations.parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) <= value <= durations.MAX_DURATION
    assert durations.bounds_problem(text, "1s", durations.MAX_DURATION_TEXT) is None or value < timedelta(seconds=1)


@SMALL
@given(fields=st.lists(st.sampled_from(["*", "*/5", "0", "59", "31", "2", "1-5", "L", "5#3", "30", "29", "?", "x", "60",
                                        "*/0", "1,2", "MON", "FEB", "H", "-1"]), min_size=1, max_size=7))
def test_a_cron_that_validates_can_be_scheduled(fields: list[str]) -> None:
    expression = " ".join(fields)
    if schedule.cron_problem(expression) is not None:
        return
    from datetime import UTC, datetime

    now = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    cron = Schedule(cron=expression, timezone="Europe/Berlin")
    first = schedule.first_run("r", cron, now, None)
    assert now < first < now + timedelta(days=366 * 9)
    assert schedule.following_run("r", cron, first, first) > first


@SMALL
@given(text=st.text(max_size=40) | st.from_regex(r"\A(\[[0-9a-f:]{0,20}\]|[0-9.]{0,16}|localhost):[0-9]{0,6}\Z"))
def test_a_listen_address_that_parses_has_a_family_and_a_port(text: str) -> None:
    try:
        address = parse_listen(text)
    except ValueError:
        return
    assert 1 <= address.port <= 65535
    assert address.family in (socket.AF_INET, socket.AF_INET6)


KNOWN = frozenset({"count", "value", "group", "description", "labels"})


@SMALL
@given(template=st.text(alphabet=st.sampled_from(list("{}:.,<>^=+-#0123456789dfsx!r_ countvaluegrp[]")), max_size=40),
       count=st.integers(min_value=-10**30, max_value=10**30), value=st.floats(allow_nan=False, allow_infinity=False))
def test_a_template_that_validates_renders_short(template: str, count: int, value: float) -> None:
    values = {"count": count, "value": value, "group": "g", "description": "d", "labels": {"team": "a"}}
    rendered = templates.render(template, values)  # never raises, valid or not
    if not templates.problems(template, KNOWN):
        assert len(rendered) <= len(template) * 100 + 2000
