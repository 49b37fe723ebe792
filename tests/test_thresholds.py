"""Thresholds with severity tiers (pure), and keep_firing_for in the lifecycle (pure, injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.lifecycle import Kind, Policy, State, step
from watchdog.rule import Severity
from watchdog.ruletypes.base import Finding, OptionsError
from watchdog.ruletypes.thresholds import Threshold

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
RANK = {None: -1, Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def test_plain_and_tiered_forms() -> None:
    plain = Threshold.from_mapping({"above": 50})
    assert plain.breached(51) and not plain.breached(50)
    assert plain.severity(1000) is None  # the rule's own severity
    assert plain.describe() == "above 50"
    tiered = Threshold.from_mapping({"above": {"warning": 50, "critical": 200}})
    assert tiered.classify(50) is None
    assert tiered.severity(51) is Severity.WARNING
    assert tiered.severity(201) is Severity.CRITICAL
    assert tiered.describe() == "above 50 (warning), 200 (critical)"
    assert tiered.limit == 50 and tiered.above == 50 and tiered.below is None
    down = Threshold.from_mapping({"below": {"warning": 10, "critical": 1}})
    assert down.severity(5) is Severity.WARNING and down.severity(0) is Severity.CRITICAL and down.classify(10) is None
    spike = Threshold.from_mapping({"ratio_above": {"info": 1.5, "critical": 4}}, keys=("ratio_above", "ratio_below"))
    assert spike.describe() == "ratio above 1.5 (info), 4 (critical)"


@pytest.mark.parametrize("data, message", [
    ({"above": {"warning": 200, "critical": 50}}, "each tier must be higher than the one before"),
    ({"below": {"warning": 1, "critical": 10}}, "each tier must be lower than the one before"),
    ({"above": {"warning": 5, "critical": 5}}, "each tier must be higher"),
    ({"above": {}}, "give at least one tier"),
    ({"above": float("inf")}, "finite"),
])
def test_bad_tiers_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(OptionsError) as info:
        Threshold.from_mapping(data)
    assert message in info.value.message
    assert info.value.path[:2] == ("threshold", next(iter(data)))


limits = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=3, unique=True)
values = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(limits, st.booleans(), values, values)
def test_classification_is_the_most_severe_tier_passed_and_monotonic(raw: list[float], above: bool, a: float,
                                                                     b: float) -> None:
    severities = [Severity.INFO, Severity.WARNING, Severity.CRITICAL][-len(raw):]
    ordered = sorted(raw) if above else sorted(raw, reverse=True)
    key = "above" if above else "below"
    threshold = Threshold.from_mapping({key: {s.value: v for s, v in zip(severities, ordered, strict=True)}})
    for value in (a, b):
        passed = [s for s, v in zip(severities, ordered, strict=True) if (value > v if above else value < v)]
        assert threshold.severity(value) == (passed[-1] if passed else None)
        assert threshold.breached(value) == bool(passed)
    if a == a and b == b:  # not NaN: further past the limits is never less severe
        low, high = sorted((a, b)) if above else sorted((a, b), reverse=True)
        assert RANK[threshold.severity(low)] <= RANK[threshold.severity(high)]


# --- keep_firing_for -------------------------------------------------------------------------------------------


def run(policy: Policy, breaches: list[bool]) -> tuple[list[tuple[int, Kind]], list[State | None]]:
    """One evaluation a minute; a breach is a finding. Returns (minute, kind) of notices and the state per minute."""
    state = None
    notices: list[tuple[int, Kind]] = []
    states: list[State | None] = []
    for minute, breach in enumerate(breaches):
        finding = Finding(group="g", value=100, summary="100 errors") if breach else None
        moved = step(policy, "g", state, finding, T0 + minute * MIN)
        notices += [(minute, n.kind) for n in moved.notices]
        state = moved.state
        states.append(state.state if state else None)
    return notices, states


def test_hovering_value_does_not_flap() -> None:
    hovering = [True, False, True, False, False, True, False, False, False, False]
    flapping, _ = run(Policy(Severity.WARNING), hovering)
    assert [k for _, k in flapping].count(Kind.FIRING) == 3
    steady, states = run(Policy(Severity.WARNING, keep_firing_for=3 * MIN), hovering)
    # fires once; resolves only at minute 9, three minutes after the last breach (minute 5)
    assert steady == [(0, Kind.FIRING), (9, Kind.RESOLVED)]
    assert states[8] is State.FIRING and states[9] is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(0, 6))
def test_keep_firing_for_resolves_exactly_after_being_clear_that_long(breaches: list[bool], keep: int) -> None:
    notices, states = run(Policy(Severity.WARNING, keep_firing_for=keep * MIN), breaches)
    # Reference model: firing from a breach until `keep` minutes of continuous clear evaluations.
    firing = False
    clear_from: int | None = None
    expected: list[tuple[int, Kind]] = []
    for minute, breach in enumerate(breaches):
        if breach:
            if not firing:
                expected.append((minute, Kind.FIRING))
            firing, clear_from = True, None
        elif firing:
            clear_from = minute if clear_from is None else clear_from
            if minute - clear_from >= keep:
                expected.append((minute, Kind.RESOLVED))
                firing, clear_from = False, None
        assert (states[minute] is State.FIRING) == firing
    assert notices == expected
