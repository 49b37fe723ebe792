"""The state store's interface, the same on SQLite and on PostgreSQL (the ``new_store`` fixture runs each on both)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog.lease import Fence
from watchdog.lifecycle import GroupState, Health, State
from watchdog.rule import Severity
from watchdog.state import StateStore
from watchdog.state_actions import Ack, delete_silence, insert_ack, insert_silence
from watchdog.state_db import Deposed, PostgresDatabase, StoreError

T0 = datetime(2026, 11, 28, 2, 15, tzinfo=UTC)


def firing(episode: str, value: float | str | None = 3.0) -> GroupState:
    return GroupState(state=State.FIRING, severity=Severity.CRITICAL, since=T0, value=value, summary="s",
                      details={"k": [1, 2]}, episode=episode, notified_at=T0, firing_since=T0)


def test_an_evaluation_is_recorded_and_read_back(new_store) -> None:
    store = new_store()
    store.record_evaluation("r", ran_at=T0, next_run=T0 + timedelta(minutes=1), duration=0.25,
                            health=Health(errors=1, last_error="boom", error_since=T0), states={"a": firing("e1")},
                            notifications=[("a", "firing", "e1", {"text": "x"})], facts={"observed": ["a"]},
                            audit=[("a", "fired", {"v": 3})])
    record = store.rule_record("r")
    assert record is not None and record.next_run == T0 + timedelta(minutes=1) and record.last_duration == 0.25
    assert record.health.last_error == "boom" and record.facts == {"observed": ["a"]}
    assert store.groups("r") == {"r": {"a": firing("e1")}}
    assert store.newest_run() == T0
    # an upsert replaces the group; facts kept when not given
    store.record_evaluation("r", ran_at=T0 + timedelta(minutes=1), next_run=T0, duration=0.1, health=Health(),
                            states={"a": firing("e2", "text"), "b": None}, notifications=[])
    assert store.groups()["r"]["a"].episode == "e2" and store.groups()["r"]["a"].value == "text"
    assert store.rule_records()["r"].facts == {"observed": ["a"]}
    assert [a["action"] for a in store.audit("r")] == ["fired"]
    store.set_next_run("other", T0)
    assert set(store.rule_records()) == {"r", "other"}
    store.forget_rule("r")
    assert store.groups("r") == {} and store.rule_record("r") is None


def test_the_outbox_claims_marks_and_threads(new_store) -> None:
    store = new_store()
    store.record_evaluation("r", ran_at=T0, next_run=T0, duration=0.0, health=Health(), states={},
                            notifications=[("a", "firing", "e1", {"n": 1}), ("a", "update", "e1", {"n": 2})])
    first, second = store.pending(T0)
    assert (first.payload, second.payload) == ({"n": 1}, {"n": 2}) and store.outbox_depth() == 2
    assert store.earlier_unsent(second) == 1
    store.mark_attempt([first], "slack:1")
    store.mark_sent(first, T0, "slack", {"ts": "1.2"}, [("update", {"n": 3})])
    store.mark_sent(first, T0, "slack", {"ts": "9.9"})  # a thread's first ref stays
    assert store.thread_ref("e1", "slack") == {"ts": "1.2"}
    assert store.pending(T0)[0].attempts == 0 and len(store.pending(T0)) == 2
    store.mark_retry(second, "slow", T0 + timedelta(seconds=5))
    assert store.next_attempt_at(after=T0) == T0 + timedelta(seconds=5)
    store.shift_retries(timedelta(seconds=-60), T0)
    assert store.next_attempt_at(after=T0 - timedelta(seconds=1)) == T0
    store.mark_failed(second, "gone")
    assert [f["last_error"] for f in store.failed_notifications()] == ["gone"]
    assert store.acknowledge_failed() == 1 and store.failed_notifications() == []
    store.set_notifier_status("slack", "down", T0)
    store.set_notifier_status("slack", None, T0)
    assert store.notifier_status()["slack"]["ok"] is True
    store.prune(T0 + timedelta(days=60))
    assert store.outbox_depth() == 1  # the unsent follow-up stays


def test_silences_acks_and_approvals(new_store) -> None:
    store = new_store()
    first = store.add_silence("r", None, T0 + timedelta(hours=1), "deploy", T0)
    second = store.add_silence("r", "a", T0 + timedelta(hours=1), "", T0)
    assert second > first and [s.id for s in store.silences(T0)] == [first, second]
    assert store.silence(first).covers("r", "x", T0) and store.remove_silence(first) and not store.remove_silence(first)
    store.record_evaluation("r", ran_at=T0, next_run=T0, duration=0.0, health=Health(), states={"a": firing("e1")},
                            notifications=[])
    ack = Ack(episode="e1", rule="r", group="a", by="U1", at=T0, severity=Severity.WARNING)
    made: list[int] = []

    def effect(db) -> str:
        insert_ack(db, ack)
        insert_ack(db, ack)  # twice: replaced, not duplicated
        made.append(insert_silence(db, "r", "a", T0 + timedelta(hours=2), "slack", T0, "e1", "U1"))
        assert delete_silence(db, second)
        return "done"

    assert store.act("k1", T0, rule="r", group="a", action="ack", detail={}, effect=effect,
                     notification=("note", {"text": "acked"})) == "done"
    assert store.act("k1", T0, rule="r", group="a", action="ack", detail={}, effect=effect) is None  # redelivered
    assert store.action_outcome("k1") == "done" and store.acks("r") == {"a": ack}
    assert [s.id for s in store.silences(T0)] == made and store.episode_group("e1")[:2] == ("r", "a")
    store.record_step("fix", "task", {"episode": "e9", "state": "awaiting_approval"}, T0,
                      ("approval", "e9", {"text": "may I?"}), ("asked", {}), approval=True)
    assert store.remediations("fix") == {"task": {"episode": "e9", "state": "awaiting_approval"}}
    assert store.approval_payload("e9") == {"text": "may I?"}
    assert store.decide_remediation("k2", "e9", approve=True, user="U2", now=T0) == ("approved", None)
    assert store.decide_remediation("k3", "e9", approve=False, user="U3", now=T0)[1].startswith("approved by <@U2>")
    assert store.decide_remediation("k3", "e9", approve=False, user="U3", now=T0) is None
    assert store.approval("e9")["decision"] == "approved"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(), value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text()))
def test_any_text_from_data_is_stored_and_read_back_storable(new_store, text: str, value: float | str) -> None:
    """Groups, values and errors come from data: lone surrogates and (PostgreSQL) NUL become U+FFFD, nothing fails."""
    store = new_store()
    store.record_evaluation("r", ran_at=T0, next_run=T0, duration=0.0, health=Health(errors=1, last_error=text),
                            states={text: firing("e", value)}, notifications=[(text, "firing", "e", {"t": text})])
    (group, state), = store.groups("r")["r"].items()
    assert state.value == (value if isinstance(value, float) else state.value)
    assert len(group) <= len(text) + 1 and store.rule_record("r").health.last_error is not None
    assert store.pending(T0)[0].payload["t"] is not None


def test_the_lease_is_renewed_taken_over_once_expired_and_fences_the_old_leader(new_store) -> None:
    store = new_store()
    first = store.claim_lease("one", 0, 5.0)
    assert (first.holder, first.epoch) == ("one", 1) and 4.0 < first.remaining <= 5.0
    assert store.claim_lease("two", 0, 5.0).holder == "one"  # not expired: two stands by
    trips = store.db.round_trips
    assert store.claim_lease("one", 1, 5.0).epoch == 1  # renewed, same epoch
    assert store.db.round_trips - trips == 2  # a renewal is two statements (the lease, the instance seen)
    fence = Fence("one")
    fence.epoch, fence.until = 1, time.monotonic() + 60
    store.fence = fence
    store.set_next_run("r", T0)  # the leader writes
    store.release_lease("one", 1)
    taken = store.claim_lease("two", 0, 5.0)
    assert (taken.holder, taken.epoch) == ("two", 2)
    with pytest.raises(Deposed):  # the deposed leader's write changes nothing
        store.record_evaluation("r", ran_at=T0, next_run=T0 + timedelta(hours=1), duration=0.0, health=Health(),
                                states={}, notifications=[("", "firing", "e", {})])
    assert store.outbox_depth() == 0 and store.rule_record("r").next_run == T0
    assert fence.epoch == 0 and not fence.leading()
    store.add_silence("r", None, T0 + timedelta(hours=1), "", T0)  # anyone may silence
    assert [i.instance for i in store.instances()][:2] in (["two", "one"], ["one", "two"])
    assert {i.instance: i.leading for i in store.instances()} == {"one": False, "two": True}


def test_a_leader_stops_writing_when_its_lease_runs_out_locally(new_store) -> None:
    store = new_store()
    store.claim_lease("one", 0, 5.0)
    fence = Fence("one")
    fence.epoch, fence.until = 1, time.monotonic() - 0.001  # its deadline passed (frozen, cut off)
    store.fence = fence
    with pytest.raises(Deposed):
        store.set_next_run("r", T0)
    assert store.rule_record("r") is None


def test_a_driver_error_is_one_store_error(new_store) -> None:
    store = new_store()
    with pytest.raises(StoreError):
        store._query("select * from no_such_table")
    assert store.outbox_depth() == 0  # the connection is still usable


def test_a_postgres_database_without_julianday_gets_it_at_start(state_db: str) -> None:
    """julianday() is the dialect's setup, run at every start, not a migration's: a database at any schema
    version that lacks it (or a fresh one) has it once opened."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    first = StateStore(db=PostgresDatabase(state_db, schema))
    first.db.execute("drop function julianday(text)")
    first.close()
    again = StateStore(db=PostgresDatabase(state_db, schema))
    try:
        again.add_silence("r", None, T0 + timedelta(hours=1), "", T0)
        assert [s.rule for s in again.silences(T0)] == ["r"]  # compared with julianday()
    finally:
        again.close()
