"""The timetable (rule -> next run with a heap) against a plain dict model; dispatch reads only its batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.timetable import Timetable

T0 = datetime(2026, 1, 1, tzinfo=UTC)
names = st.sampled_from([f"r{i}" for i in range(8)])
moments = st.integers(0, 20).map(lambda s: T0 + timedelta(seconds=s))
ops = st.lists(st.one_of(
    st.tuples(st.just("set"), names, moments),
    st.tuples(st.just("pop"), names, moments),
    st.tuples(st.just("due"), names, moments),
    st.tuples(st.just("soonest"), names, moments),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_timetable_answers_as_a_scan_of_every_rule_would(steps: list[tuple[str, str, datetime]]) -> None:
    table = Timetable()
    model: dict[str, datetime] = {}
    taken: set[str] = set()  # returned as due and not planned again since
    for op, name, when in steps:
        if op == "set":
            table[name] = when
            model[name] = when
            taken.discard(name)
        elif op == "pop":
            table.pop(name, None)
            model.pop(name, None)
            taken.discard(name)
        elif op == "due":
            expected = {n for n, t in model.items() if t <= when and n not in taken}
            got = table.take_due(when)
            assert len(got) == len(set(got)) and set(got) == expected
            assert [model[n] for n in got] == sorted(model[n] for n in got)  # earliest first
            taken |= expected
        else:
            assert table.soonest() == min((t for n, t in model.items() if n not in taken), default=None)
        assert dict(table) == model


def test_heap_stays_bounded_under_rescheduling() -> None:
    table = Timetable()
    for i in range(10_000):
        table[f"r{i % 10}"] = T0 + timedelta(seconds=i)
    assert len(table._heap) <= 2 * len(table) + 64
    assert table.soonest() == T0 + timedelta(seconds=9_990)


def test_compaction_keeps_taken_rules_out() -> None:
    table = Timetable()
    table["running"] = T0
    assert table.take_due(T0) == ["running"]
    for i in range(1_000):
        table["other"] = T0 + timedelta(seconds=i)
    assert table.take_due(T0 + timedelta(days=1)) == ["other"]  # "running" comes back only when planned again


def test_store_reads_the_named_rules_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from watchdog.lifecycle import GroupState, Health, State
    from watchdog.rule import Severity
    from watchdog.state import StateStore

    store = StateStore(str(tmp_path / "state.db"))
    firing = GroupState(state=State.FIRING, severity=Severity.WARNING, since=T0, value=1, summary="s")
    for i in range(1_200):  # more names than one ``in (...)`` list binds
        store.record_evaluation(f"r{i}", ran_at=T0, next_run=T0, duration=0.0, health=Health(),
                                states={"g": firing} if i % 2 else {}, notifications=[], facts={"i": i})
    wanted = [f"r{i}" for i in range(0, 1_200, 3)]
    records = store.rule_records(wanted)
    assert set(records) == set(wanted) and records["r999"].facts == {"i": 999}
    assert set(store.groups(wanted)) == {n for n in wanted if int(n[1:]) % 2}
    assert set(store.rule_records("r5")) == {"r5"} and len(store.rule_records()) == 1_200
    store.close()
