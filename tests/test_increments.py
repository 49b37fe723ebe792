"""Incremental windows give what a full-window search gives, step by step, for events up to ``settle`` late.

The property test plays a stream of events (each searchable some time after
its timestamp, at most ``settle``) against a sequence of evaluation moments:
the incremental bookkeeping reads only the pieces its plan asks for, answered
from the events searchable at that moment, and must equal a count of the
whole window over the same events. The example test runs the real search
path against osmem-server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.search import CountingProxy
from tests.test_search import NOW, event, load, project, rule
from watchdog.rule import Rule, Schedule
from watchdog.ruletypes import increments
from watchdog.ruletypes.base import EvalContext
from watchdog.ruletypes.metric import MetricRule
from watchdog.ruletypes.search_options import SearchOptions
from watchdog.times import from_text

T0 = datetime(2026, 11, 28, 6, 0, 7, 250000, tzinfo=UTC)  # off the grid on purpose


def make_rule(name: str, window_s: int, every_s: int, grouped: bool, ratio: bool = False,
              metric: str | None = None, offset_s: int = 0) -> Rule:
    """A threshold, ratio or metric rule, or (``offset_s``) a spike rule of a count or metric."""
    spike = {"offset": f"{offset_s}s", "threshold": {"ratio_above": 2}} if offset_s else {}
    options = SearchOptions.from_mapping({"source": "logs", "index": "x", "window": f"{window_s}s",
                                          "threshold": {"above": 1}, "max_groups": 100, **spike,
                                          **({"group_by": "g"} if grouped else {}),
                                          **({"numerator": "level:error"} if ratio else {}),
                                          **({"metric": {metric: "v"}} if metric else {})})
    kind = "spike" if offset_s else "metric" if metric else "ratio" if ratio else "threshold"
    return Rule(name=name, type=kind, path="", options=options, schedule=Schedule(every=timedelta(seconds=every_s)))


Event = tuple[datetime, datetime, str, float | None]  # timestamp, searchable from, group, field ``v`` (None: absent)


def metric_parts(values: list[float | None]) -> dict[str, object]:
    """The sub-aggregations of ``increments.slices_agg`` for a metric, as a server answers them for ``values``."""
    present = [v for v in values if v is not None]
    return {"m_sum": {"value": float(sum(present))}, "m_count": {"value": len(present)},
            "m_min": {"value": min(present) if present else None}, "m_max": {"value": max(present) if present else None}}


def full_metric(values: list[float | None], agg: str) -> float | None:
    """What a full-window search's metric aggregation answers."""
    present = [v for v in values if v is not None]
    if agg == "sum":
        return float(sum(present))
    if not present:
        return None
    return {"min": min, "max": max}.get(agg, lambda p: sum(p) / len(p))(present)


def answer(plan: increments.Plan, grouped: bool, events: list[Event], now: datetime) -> dict[str, object]:
    """What a search server answers to ``increments.body(plan)`` at ``now``: only events searchable by then.

    The query reads the plan's spans; the date histogram puts each event in its grid step (epoch-aligned,
    empty steps left out). Group "a" events are errors (a ratio's numerator, ``level:error``).
    """
    seen = [(at, g, v) for at, arrives, g, v in events if arrives <= now
            and any(lo <= at < hi for lo, hi in plan.spans())]

    def slices(group: str | None) -> dict[str, object]:
        steps: dict[datetime, list[tuple[str, float | None]]] = {}
        for at, g, v in seen:
            if group in (None, g):
                steps.setdefault(increments.floor_grid(at, plan.grid), []).append((g, v))
        return {"buckets": [{"key": int((lo - increments.EPOCH) / timedelta(milliseconds=1)), "doc_count": len(mine),
                             "numerator": {"doc_count": [g for g, _ in mine].count("a")},
                             **metric_parts([v for _, v in mine])} for lo, mine in sorted(steps.items())]}

    if not grouped:
        return {"aggregations": {"slices": slices(None)}}
    return {"aggregations": {"groups": {"buckets": [{"key": g, "slices": slices(g)}
                                                    for g in sorted({g for _, g, _ in seen})]}}}


@settings(max_examples=100, deadline=None)
@given(window_s=st.sampled_from([60, 300, 3600]), every_s=st.sampled_from([10, 60]), settle_s=st.sampled_from([0, 30, 120]),
       grouped=st.booleans(), kind=st.sampled_from(["count", "ratio", "sum", "min", "max", "avg"]), spike=st.booleans(),
       stream=st.lists(st.tuples(st.integers(0, 1800), st.floats(0, 1), st.sampled_from("abc"),
                                 st.one_of(st.none(), st.integers(-1000, 1000))), min_size=20, max_size=100),
       steps=st.lists(st.one_of(st.integers(0, 20), st.just(400)), min_size=5, max_size=30))
def test_incremental_counts_equal_full_window_counts(window_s: int, every_s: int, settle_s: int, grouped: bool, kind: str,
                                                     spike: bool, stream: list[tuple[int, float, str, int | None]],
                                                     steps: list[int]) -> None:
    """Counts, ratios and metrics (min and max too) equal the full window's, with arrivals up to settle late.

    A spike rule's baseline window (``offset`` earlier: the plan's shift) likewise.
    """
    increments.forget()
    ratio = kind == "ratio"
    metric = None if kind in ("count", "ratio") else kind
    offset_s = window_s + 300 if spike and not ratio else 0
    rule = make_rule("r", window_s, every_s, grouped, ratio, metric, offset_s)
    settle = timedelta(seconds=settle_s)
    # An event at T0 + s (plus a fraction, off the grid) becomes searchable up to ``settle`` later; its field ``v``
    # may be absent (a metric over events without it is none, an avg counts only the values).
    events: list[Event] = [(T0 + timedelta(seconds=s + late / 3), T0 + timedelta(seconds=s + late / 3) + settle * late,
                            g, None if v is None else v / 4) for s, late, g, v in stream]
    now, facts = T0, {}
    for step in steps:
        now += timedelta(seconds=step * 10)  # gaps longer than the window happen too (a rebuild)
        plan = increments.plan(rule, EvalContext(now=now, facts={"r": facts}), settle)
        assert plan is not None
        state = increments.absorb(plan, rule.options, answer(plan, grouped, events, now))
        facts = {increments.FACT: state.stamp()}
        got = increments.response(state, rule.options)
        end = now - timedelta(seconds=offset_s)
        start = end - timedelta(seconds=window_s)
        full: dict[str, tuple[int, int]] = {}
        values: dict[str, list[float | None]] = {}
        for at, arrives, g, v in events:
            if start <= at < end and arrives <= now:
                events_, errors = full.get(g if grouped else "", (0, 0))
                full[g if grouped else ""] = (events_ + 1, errors + (g == "a"))
                values.setdefault(g if grouped else "", []).append(v)
        if metric is not None:
            found = MetricRule.readings(rule.options, got)
            expected = {label: full_metric(vs, metric) for label, vs in values.items()}
            if not grouped:
                expected.setdefault("", full_metric([], metric))  # no events: the sum is 0, the others none
            assert {label: r.value for label, r in found.items()} == pytest.approx(expected)
            assert {label: r.count for label, r in found.items()} == {label: full.get(label, (0, 0))[0] for label in expected}
        elif grouped:
            buckets = got["aggregations"]["groups"]["buckets"]
            assert {b["key"]: (b["doc_count"], b["numerator"]["doc_count"] if ratio else full[b["key"]][1])
                    for b in buckets} == full
        else:
            assert got["hits"]["total"]["value"] == full.get("", (0, 0))[0]
            if ratio:
                assert got["aggregations"]["numerator"]["doc_count"] == full.get("", (0, 0))[1]
        assert len(state.counts) <= window_s // increments.grid(rule).total_seconds() + 1  # bounded by the window


def test_a_stamp_not_the_caches_rebuilds() -> None:
    """Another instance evaluated the rule meanwhile (its facts carry another stamp): one full search."""
    increments.forget()
    rule = make_rule("r", 3600, 60, False)
    first = increments.plan(rule, EvalContext(now=T0), timedelta(minutes=2))
    assert first is not None and first.full
    state = increments.absorb(first, rule.options, {"aggregations": {"slices": {"buckets": []}}})
    later = T0 + timedelta(minutes=1)
    ours = increments.plan(rule, EvalContext(now=later, facts={"r": {increments.FACT: state.stamp()}}), timedelta(minutes=2))
    assert ours is not None and not ours.full and ours.end - ours.lo <= timedelta(minutes=4)
    theirs = increments.plan(rule, EvalContext(now=later, facts={"r": {increments.FACT: "other@x"}}), timedelta(minutes=2))
    assert theirs is not None and theirs.full


def test_a_threshold_rule_searches_only_the_new_slice(tmp_path: Path, search: CountingProxy) -> None:
    """Through the engine and osmem-server: an hour's window, evaluated every minute, reads a few minutes each time."""
    increments.forget()
    load(search.url, [event(m) for m in (1, 20, 50, 70)])
    config = project(tmp_path, search.url, {"r": rule("r", "type: threshold\nquery: 'level:error'\nwindow: 1h\n"
                                                      "schedule: {every: 1m}\nthreshold: {above: 3}\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert engine.store.groups() == {}  # 3 in the hour
    load(search.url, [event(-0.5)])  # 30 s after NOW
    clock.now = NOW + timedelta(minutes=1)
    search.reset()
    evaluate_now(engine)
    assert engine.store.groups()["r"][""].value == 4
    (sent,) = search.bodies
    ranges = [r["range"]["@timestamp"] for r in json.loads(sent.splitlines()[1])["query"]["bool"]["filter"][0]["bool"]["should"]]
    newest = max(ranges, key=lambda r: r["lt"])
    assert from_text(newest["lt"]) == clock.now and from_text(newest["gte"]) >= NOW - timedelta(minutes=2)
    clock.now = NOW + timedelta(minutes=15)  # window [NOW-45m, NOW+15m): the events 1 and 20 minutes old, and the new one
    evaluate_now(engine)
    assert "r" not in engine.store.groups()  # 3: resolved


def test_settle_per_rule_in_defaults_and_refused_when_not_a_duration(tmp_path: Path) -> None:
    from watchdog.loader import load_rules

    body = "type: threshold\nsource: logs\nindex: x\nwindow: 1h\nthreshold: {above: 1}\n"
    config = write_project(tmp_path, 'rules_dir: rules\nstate_path: state.db\ndefaults: {settle: 5m}\n'
                                     'sources:\n  logs: {type: search, hosts: ["http://127.0.0.1:9"]}\n',
                           {"own": f"name: own\n{body}settle: 30s\n", "inherits": f"name: inherits\n{body}",
                            "bad": f"name: bad\n{body}settle: soon\n"})
    result = load_rules([config.rules_dir], config)
    assert {r.name: r.settle for r in result.rules} == {"own": timedelta(seconds=30), "inherits": timedelta(minutes=5)}
    (problem,) = result.problems
    assert "bad.yaml" in str(problem) and "settle" in str(problem)


def test_the_head_piece_is_searched_in_its_own_dated_index(tmp_path: Path, search: CountingProxy) -> None:
    """Regression: past midnight, the window's first partial step lies in yesterday's index; it is still counted."""
    increments.forget()
    midnight = datetime(2026, 11, 29, tzinfo=UTC)
    late_evening = midnight - timedelta(minutes=49, seconds=15)  # 23:10:45, in app-logs-2026.11.28
    load(search.url, [{**event(0), "@timestamp": late_evening.isoformat().replace("+00:00", "Z")},
                      {**event(0), "@timestamp": (midnight + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")}])
    config = project(tmp_path, search.url, {"r": rule("r", "type: threshold\nquery: 'level:error'\nwindow: 1h\n"
                                                      "schedule: {every: 1m}\nthreshold: {above: 1}\nsample: 0\n")})
    clock = Clock(midnight + timedelta(minutes=9, seconds=30))
    engine = engine_for(config, clock)
    evaluate_now(engine)  # the full search: [23:09:30, 00:09:30)
    assert engine.store.groups()["r"][""].value == 2
    clock.now = midnight + timedelta(minutes=10, seconds=30)  # incremental; the head is [23:10:30, 23:11:00)
    evaluate_now(engine)
    assert engine.store.groups()["r"][""].value == 2


def test_a_metric_rule_searches_only_the_new_slice(tmp_path: Path, search: CountingProxy) -> None:
    """Through the engine and osmem-server: an avg and a max over an hour, evaluated every minute, read a few minutes."""
    increments.forget()
    load(search.url, [event(m, duration=d) for m, d in ((1, 100), (20, 200), (50, 600), (70, 5000))])
    config = project(tmp_path, search.url, {
        "avg": rule("avg", "type: metric\nwindow: 1h\nschedule: {every: 1m}\nmetric: {avg: duration_ms}\n"
                           "threshold: {above: 300}\ngroup_by: team\nsample: 0\n"),
        "max": rule("max", "type: metric\nwindow: 1h\nschedule: {every: 1m}\nmetric: {max: duration_ms}\n"
                           "threshold: {above: 500}\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    groups = engine.store.groups()
    assert "avg" not in groups and groups["max"][""].value == 600  # avg 300 over 100, 200, 600; the 5000 is older
    load(search.url, [event(-0.5, duration=1000)])  # 30 s after NOW
    clock.now = NOW + timedelta(minutes=1)
    search.reset()
    evaluate_now(engine)
    groups = engine.store.groups()
    assert groups["avg"]["team-a"].value == pytest.approx(475) and groups["max"][""].value == 1000
    for sent in search.bodies:  # every search reads the head piece and the last few minutes only
        for line in sent.splitlines()[1::2]:
            ranges = [r["range"]["@timestamp"] for r in json.loads(line)["query"]["bool"]["filter"][0]["bool"]["should"]]
            newest = max(ranges, key=lambda r: r["lt"])
            assert from_text(newest["lt"]) == clock.now and from_text(newest["gte"]) >= NOW - timedelta(minutes=2)
    clock.now = NOW + timedelta(minutes=60, seconds=15)  # window [NOW+15s, NOW+60m15s): the 1000 alone is left
    evaluate_now(engine)
    groups = engine.store.groups()
    assert groups["avg"]["team-a"].value == 1000 and groups["max"][""].value == 1000


def test_a_spike_rule_keeps_its_baseline_window(tmp_path: Path, search: CountingProxy) -> None:
    """Through the engine and osmem-server: the baseline (2h earlier) is read a few minutes at a time, the ratio right."""
    increments.forget()
    load(search.url, [event(m) for m in (10, 20, 30, 40, 50, 55, 130, 150, 170)])
    config = project(tmp_path, search.url, {"s": rule("s", "type: spike\nwindow: 1h\noffset: 2h\nschedule: {every: 1m}\n"
                                                      "threshold: {ratio_above: 1.5}\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert engine.store.groups()["s"][""].value == 2  # 6 now against 3 two hours earlier
    load(search.url, [event(-0.5)])
    clock.now = NOW + timedelta(minutes=1)
    search.reset()
    evaluate_now(engine)
    assert engine.store.groups()["s"][""].value == pytest.approx(7 / 3)
    (sent,) = search.bodies
    current, baseline = (json.loads(line)["query"]["bool"]["filter"][0] for line in sent.splitlines()[1::2])
    assert from_text(current["range"]["@timestamp"]["gte"]) == clock.now - timedelta(hours=1)  # searched whole
    newest = max((r["range"]["@timestamp"] for r in baseline["bool"]["should"]), key=lambda r: r["lt"])
    assert from_text(newest["lt"]) == clock.now - timedelta(hours=2)
    assert from_text(newest["gte"]) >= NOW - timedelta(hours=2, minutes=2)
    clock.now = NOW + timedelta(minutes=21)  # 4 now (10, 20, 30 minutes before NOW and the new one) against 2 (130, 150)
    evaluate_now(engine)
    assert engine.store.groups()["s"][""].value == 2
