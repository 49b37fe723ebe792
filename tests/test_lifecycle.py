"""The lifecycle state machine, driven by an injected clock: no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watchdog.lifecycle import ERROR_NOTIFY_AFTER, Health, Kind, Policy, State, health_step, step
from watchdog.rule import Severity
from watchdog.ruletypes.base import Finding

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def finding(value: float = 80, severity: Severity | None = None) -> Finding:
    return Finding(group="team-a", value=value, summary=f"{value} errors", severity=severity)


def run(policy: Policy, values: list[Finding | None], *, silenced: list[bool] | None = None):
    """Step once a minute through ``values``; returns (minute, kind) of each notice and the last state."""
    state = None
    notices = []
    for minute, value in enumerate(values):
        moved = step(policy, "team-a", state, value, T0 + minute * MIN, silenced=bool(silenced and silenced[minute]))
        notices += [(minute, n.kind) for n in moved.notices]
        state = moved.state
    return notices, state


def test_fires_at_once_without_for() -> None:
    notices, state = run(Policy(Severity.WARNING), [finding()])
    assert notices == [(0, Kind.FIRING)]
    assert state is not None and state.state is State.FIRING and state.episode


def test_for_holds_pending_until_it_has_lasted() -> None:
    notices, _ = run(Policy(Severity.WARNING, for_=2 * MIN), [finding(), finding(), finding()])
    assert notices == [(2, Kind.FIRING)]


def test_pending_that_clears_never_notifies() -> None:
    notices, state = run(Policy(Severity.WARNING, for_=2 * MIN), [finding(), None, finding()])
    assert notices == [] and state is not None and state.state is State.PENDING


def test_repeats_while_firing_and_resolves_once() -> None:
    policy = Policy(Severity.WARNING, repeat_every=2 * MIN)
    notices, state = run(policy, [finding()] * 5 + [None, None])
    assert notices == [(0, Kind.FIRING), (2, Kind.REPEAT), (4, Kind.REPEAT), (5, Kind.RESOLVED)]
    assert state is None


def test_severity_change_notifies() -> None:
    notices, state = run(Policy(Severity.WARNING), [finding(), finding(severity=Severity.CRITICAL), finding(severity=Severity.CRITICAL)])
    assert notices == [(0, Kind.FIRING), (1, Kind.SEVERITY)]
    assert state is not None and state.severity is Severity.CRITICAL


def test_resolution_keeps_the_episode_of_the_firing() -> None:
    policy = Policy(Severity.WARNING)
    first = step(policy, "g", None, finding(), T0)
    resolved = step(policy, "g", first.state, None, T0 + MIN)
    assert resolved.notices[0].episode == first.notices[0].episode
    again = step(policy, "g", None, finding(), T0 + 2 * MIN)
    assert again.notices[0].episode != first.notices[0].episode


def test_silenced_alert_keeps_state_and_sends_nothing() -> None:
    notices, state = run(Policy(Severity.WARNING), [finding(), finding(), None], silenced=[True, True, True])
    assert notices == [] and state is None


def test_firing_notified_when_the_silence_ends() -> None:
    notices, _ = run(Policy(Severity.WARNING), [finding(), finding(), None], silenced=[True, False, False])
    assert notices == [(1, Kind.FIRING), (2, Kind.RESOLVED)]


def test_errors_notify_once_after_repeated_failures_and_on_recovery() -> None:
    health = Health()
    sent = []
    for minute in range(ERROR_NOTIFY_AFTER + 2):
        health, notice = health_step(health, "connection refused", T0 + minute * MIN)
        if notice:
            sent.append((minute, notice.kind))
    health, notice = health_step(health, None, T0 + 10 * MIN)
    assert sent == [(ERROR_NOTIFY_AFTER - 1, Kind.ERROR)]
    assert notice is not None and notice.kind is Kind.RECOVERED and health == Health()


def test_a_single_failure_is_not_notified() -> None:
    health, notice = health_step(Health(), "timeout", T0)
    health, recovered = health_step(health, None, T0 + MIN)
    assert notice is None and recovered is None
