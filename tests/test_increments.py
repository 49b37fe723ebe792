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
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.search import CountingProxy
from tests.test_search import NOW, event, firing, load, project, rule
from watchdog.rule import Rule, Schedule
from watchdog.ruletypes import incremental_search, increments
from watchdog.ruletypes import search as search_rules
from watchdog.ruletypes.base import EvalContext
from watchdog.ruletypes.metric import MetricRule
from watchdog.ruletypes.search_options import SearchOptions
from watchdog.times import from_text

T0 = datetime(2026, 11, 28, 6, 0, 7, 250000, tzinfo=UTC)  # off the grid on purpose


def make_rule(name: str, window_s: int, every_s: int, grouped: bool, ratio: bool = False,
              metric: str | None = None, offset_s: int = 0, below: bool = False) -> Rule:
    """A threshold, ratio or metric rule (``below``: a flatline), or (``offset_s``) a spike rule of a count or metric."""
    threshold = {"below": 1} if below else {"above": 1}
    spike = {"offset": f"{offset_s}s", "threshold": {"ratio_above": 2}} if offset_s else {}
    options = SearchOptions.from_mapping({"source": "logs", "index": "x", "window": f"{window_s}s",
                                          "threshold": threshold, "max_groups": 100, **spike,
                                          **({"group_by": "g"} if grouped else {}),
                                          **({"numerator": "level:error"} if ratio else {}),
                                          **({"metric": {metric: "v"}} if metric else {})})
    kind = "spike" if offset_s else "metric" if metric else "ratio" if ratio else "threshold"
    return Rule(name=name, type=kind, path="", options=options, schedule=Schedule(every=timedelta(seconds=every_s)))


Event = tuple[datetime, datetime, str, float | None]  # timestamp, searchable from, group, field ``v`` (None: absent)


def metric_parts(values: list[float | None]) -> dict[str, object]:
    """The sub-aggregations of ``incremental_search.slices_agg`` for a metric, as a server answers them for ``values``."""
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


def millis(moment: datetime) -> float:
    return (moment - increments.EPOCH) / timedelta(milliseconds=1)  # exact: the newest event's time, as a max says


def answer(plan: increments.Plan, grouped: bool, events: list[Event], now: datetime) -> dict[str, object]:
    """What a search server answers to ``incremental_search.body(plan)`` at ``now``: only events searchable by then.

    The query reads the plan's spans; the date histogram puts each event of the window's pieces in its grid step
    (epoch-aligned, empty steps left out). Group "a" events are errors (a ratio's numerator, ``level:error``). A
    flatline's groups carry their newest event's time; its rebuild reads the lookback, the window's pieces in a filter.
    """
    seen = [(at, g, v) for at, arrives, g, v in events if arrives <= now
            and any(lo <= at < hi for lo, hi in plan.spans())]

    def slices(group: str | None) -> dict[str, object]:
        steps: dict[datetime, list[tuple[str, float | None]]] = {}
        for at, g, v in seen:
            if group in (None, g) and any(lo <= at < hi for lo, hi in plan.pieces()):
                steps.setdefault(increments.floor_grid(at, plan.grid), []).append((g, v))
        hist = {"buckets": [{"key": int(millis(lo)), "doc_count": len(mine),
                             "numerator": {"doc_count": [g for g, _ in mine].count("a")},
                             **metric_parts([v for _, v in mine])} for lo, mine in sorted(steps.items())]}
        if plan.spans() != plan.pieces():
            return {"window": {"slices": hist}}
        return {"slices": hist}

    if not grouped:
        return {"aggregations": slices(None)}
    buckets = []
    for g in sorted({g for _, g, _ in seen}):
        bucket: dict[str, object] = {"key": g, **slices(g)}
        if plan.lookback is not None:
            bucket["last"] = {"value": max(millis(at) for at, h, _ in seen if h == g)}
        buckets.append(bucket)
    return {"aggregations": {"groups": {"buckets": buckets}}}


def check(rule: Rule, plan: increments.Plan, state: increments.Buckets, events: list[Event], now: datetime) -> None:
    """The plan's window read back from the buckets equals a full search of it over the events searchable at ``now``."""
    options = rule.options
    grouped, metric, ratio = bool(options.group_by), options.metric, options.fraction is not None
    got = incremental_search.response(state, options)
    start = plan.end - options.window
    full: dict[str, tuple[int, int]] = {}
    values: dict[str, list[float | None]] = {}
    for at, arrives, g, v in events:
        label = g if grouped else ""
        if arrives <= now and plan.lookback is not None and plan.end - plan.lookback <= at < plan.end:
            full.setdefault(label, (0, 0))  # a flatline reports a group seen within its lookback, quiet or not
            values.setdefault(label, [])
        if start <= at < plan.end and arrives <= now:
            events_, errors = full.get(label, (0, 0))
            full[label] = (events_ + 1, errors + (g == "a"))
            values.setdefault(label, []).append(v)
    if metric is not None:
        found = MetricRule.readings(options, got)
        expected = {label: full_metric(vs, metric.agg) for label, vs in values.items()}
        if not grouped:
            expected.setdefault("", full_metric([], metric.agg))  # no events: the sum is 0, the others none
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
    step = increments.grid(rule)
    most = max((len(steps) for steps in state.series.values()), default=0)
    assert step is not None and most <= options.window // step + 1  # bounded by the window


@settings(max_examples=150, deadline=None)
@given(window_s=st.sampled_from([60, 300, 3600]), every_s=st.sampled_from([10, 60]), settle_s=st.sampled_from([0, 30, 120]),
       grouped=st.booleans(), kind=st.sampled_from(["count", "ratio", "sum", "min", "max", "avg"]),
       shape=st.sampled_from(["plain", "spike", "below"]),
       stream=st.lists(st.tuples(st.integers(0, 1800), st.floats(0, 1), st.sampled_from("abcd"),
                                 st.one_of(st.none(), st.integers(-1000, 1000))), min_size=20, max_size=100),
       steps=st.lists(st.one_of(st.integers(0, 20), st.just(400)), min_size=5, max_size=30))
def test_incremental_counts_equal_full_window_counts(window_s: int, every_s: int, settle_s: int, grouped: bool, kind: str,
                                                     shape: str, stream: list[tuple[int, float, str, int | None]],
                                                     steps: list[int]) -> None:
    """Counts, ratios and metrics (min and max too) equal the full window's, with arrivals up to settle late.

    A spike rule's two windows (its current one, and its baseline ``offset`` earlier: that plan's shift) likewise;
    a grouped flatline's groups too, quiet ones (seen within its lookback) as zero, as they go quiet and come back.
    """
    increments.forget()
    ratio = kind == "ratio"
    metric = None if kind in ("count", "ratio") else kind
    offset_s = window_s + 300 if shape == "spike" and not ratio else 0
    rule = make_rule("r", window_s, every_s, grouped, ratio, metric, offset_s, below=shape == "below" and not ratio)
    settle = timedelta(seconds=settle_s)
    # An event at T0 + s (plus a fraction, off the grid) becomes searchable up to ``settle`` later; its field ``v``
    # may be absent (a metric over events without it is none, an avg counts only the values).
    events: list[Event] = [(T0 + timedelta(seconds=s + late / 3), T0 + timedelta(seconds=s + late / 3) + settle * late,
                            g, None if v is None else v / 4) for s, late, g, v in stream]
    play(rule, events, steps, settle)


def play(rule: Rule, events: list[Event], steps: list[int], settle: timedelta) -> None:
    """Evaluate ``rule`` incrementally ``steps`` (of ten seconds) apart, checking each window against a full search."""
    now, facts = T0, {}
    # A flatline's lookback is four windows, at least MIN_LOOKBACK: a short one here, so that groups outlive it.
    with patch.object(search_rules, "MIN_LOOKBACK", timedelta(minutes=2)):
        for step in steps:
            now += timedelta(seconds=step * 10)  # gaps longer than the window happen too (a rebuild)
            plans = increments.plans(rule, EvalContext(now=now, facts={"r": facts}), settle)
            assert plans is not None and len(plans) == (2 if rule.options.baseline else 1)
            states = [increments.absorb(plan, rule.options, answer(plan, bool(rule.options.group_by), events, now))
                      for plan in plans]
            facts = {increments.FACT: increments.stamp(states)}
            for plan, state in zip(plans, states, strict=True):
                check(rule, plan, state, events, now)


@settings(max_examples=60, deadline=None)
@given(window_s=st.sampled_from([60, 300]), every_s=st.sampled_from([10, 60]), settle_s=st.sampled_from([0, 30, 120]),
       kind=st.sampled_from(["count", "sum", "min", "max", "avg"]),
       stream=st.lists(st.tuples(st.integers(0, 900), st.floats(0, 1), st.sampled_from("abcd"),
                                 st.one_of(st.none(), st.integers(-1000, 1000))), min_size=5, max_size=60),
       steps=st.lists(st.integers(0, 12), min_size=20, max_size=60))
def test_a_grouped_flatline_reports_quiet_groups_as_a_full_search(window_s: int, every_s: int, settle_s: int, kind: str,
                                                                  stream: list[tuple[int, float, str, int | None]],
                                                                  steps: list[int]) -> None:
    """Groups go quiet (reported as zero, or no value, while seen within the lookback), come back, and are forgotten."""
    increments.forget()
    rule = make_rule("r", window_s, every_s, True, metric=None if kind == "count" else kind, below=True)
    settle = timedelta(seconds=settle_s)
    events: list[Event] = [(T0 + timedelta(seconds=s + late / 3), T0 + timedelta(seconds=s + late / 3) + settle * late,
                            g, None if v is None else v / 4) for s, late, g, v in stream]
    play(rule, events, steps, settle)


def test_a_stamp_not_the_caches_rebuilds() -> None:
    """Another instance evaluated the rule meanwhile (its facts carry another stamp): one full search."""
    increments.forget()
    rule = make_rule("r", 3600, 60, False)
    (first,) = increments.plans(rule, EvalContext(now=T0), timedelta(minutes=2)) or ()
    assert first.full
    state = increments.absorb(first, rule.options, {"aggregations": {"slices": {"buckets": []}}})
    later = T0 + timedelta(minutes=1)
    (ours,) = increments.plans(rule, EvalContext(now=later, facts={"r": {increments.FACT: state.stamp()}}),
                               timedelta(minutes=2)) or ()
    assert not ours.full and ours.end - ours.lo <= timedelta(minutes=4)
    (theirs,) = increments.plans(rule, EvalContext(now=later, facts={"r": {increments.FACT: "other@x"}}),
                                 timedelta(minutes=2)) or ()
    assert theirs.full


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


def test_a_spike_rule_keeps_both_its_windows(tmp_path: Path, search: CountingProxy) -> None:
    """Through the engine and osmem-server: both windows (the baseline 2h earlier) read a few minutes at a time."""
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
    for side, shift in ((current, timedelta(0)), (baseline, timedelta(hours=2))):  # each window a few minutes
        newest = max((r["range"]["@timestamp"] for r in side["bool"]["should"]), key=lambda r: r["lt"])
        assert from_text(newest["lt"]) == clock.now - shift
        assert from_text(newest["gte"]) >= NOW - shift - timedelta(minutes=2)
    clock.now = NOW + timedelta(minutes=21)  # 4 now (10, 20, 30 minutes before NOW and the new one) against 2 (130, 150)
    evaluate_now(engine)
    assert engine.store.groups()["s"][""].value == 2


def test_a_rule_reloaded_with_another_query_rebuilds() -> None:
    """Regression: a reload that changed the query (not the window) kept counting the old query's buckets."""
    increments.forget()
    rule = make_rule("r", 3600, 60, True)
    (first,) = increments.plans(rule, EvalContext(now=T0), timedelta(minutes=2)) or ()
    state = increments.absorb(first, rule.options, {"aggregations": {"groups": {"buckets": []}}})
    facts = {"r": {increments.FACT: state.stamp()}}
    later = T0 + timedelta(minutes=1)
    reloaded = make_rule("r", 3600, 60, True)  # the same rule parsed again: its buckets serve
    (same,) = increments.plans(reloaded, EvalContext(now=later, facts=facts), timedelta(minutes=2)) or ()
    assert not same.full
    edited = replace(rule, options=replace(rule.options, query="level:error"))
    (other,) = increments.plans(edited, EvalContext(now=later, facts=facts), timedelta(minutes=2)) or ()
    assert other.full


def test_a_grouped_flatline_reads_its_lookback_once_then_a_few_minutes(tmp_path: Path, search: CountingProxy) -> None:
    """Through the engine and osmem-server: a team quiet for an hour fires on the first run, then comes back."""
    increments.forget()
    load(search.url, [event(70), event(100), event(5, team="team-b"), event(200, team="team-c")])
    config = project(tmp_path, search.url, {"f": rule("f", "type: threshold\nwindow: 30m\nschedule: {every: 1m}\n"
                                                      "threshold: {below: 1}\ngroup_by: team\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    search.reset()
    evaluate_now(engine)
    assert firing(engine, "f") == {"team-a": 0}  # seen 70 minutes ago, within the 2h lookback; team-c is older
    (sent,) = search.bodies
    (lookback,) = json.loads(sent.splitlines()[1])["query"]["bool"]["filter"][0]["bool"]["should"]
    assert from_text(lookback["range"]["@timestamp"]["gte"]) == NOW - timedelta(hours=2)
    load(search.url, [event(-0.5)])  # team-a is back, 30 s after NOW
    for minutes, expected in ((1, {}), (2, {})):
        clock.now = NOW + timedelta(minutes=minutes)
        search.reset()
        evaluate_now(engine)
        assert firing(engine, "f") == expected
        (sent,) = search.bodies
        ranges = [r["range"]["@timestamp"] for r in json.loads(sent.splitlines()[1])["query"]["bool"]["filter"][0]["bool"]["should"]]
        assert min(from_text(r["gte"]) for r in ranges) >= clock.now - timedelta(minutes=31)  # the head, the last minutes
        assert max(from_text(r["gte"]) for r in ranges) >= NOW - timedelta(minutes=2)
    clock.now = NOW + timedelta(minutes=26)  # team-b's event (5 minutes before NOW) has left the window: it fires
    evaluate_now(engine)
    assert firing(engine, "f") == {"team-b": 0}


@pytest.mark.parametrize(("window_s", "every_s", "settle_s", "below", "kept"), [
    (300, 60, 120, False, False),  # 5m at every 1m with a 2m settle: about 4 of its 5 minutes read anyway
    (480, 60, 120, False, True),  # 8m: twice the 4m a step reads
    (3600, 60, 120, False, True),
    (120, 10, 0, False, True),
    (300, 60, 120, True, True),  # a grouped flatline's whole search reads its lookback (20m), not its window
])
def test_a_window_is_kept_in_buckets_only_where_it_pays(window_s: int, every_s: int, settle_s: int, below: bool,
                                                       kept: bool) -> None:
    rule = make_rule("r", window_s, every_s, grouped=True, below=below)
    assert increments.pays(rule, timedelta(seconds=settle_s)) is kept


def test_at_most_a_batchs_worth_of_rules_rebuild_at_once() -> None:
    """After a start, 250 rules rebuild 100 at a time (the others search whole windows); incremental ones go on."""
    increments.forget()
    rules = [make_rule(f"r{i:03d}", 3600, 60, grouped=False) for i in range(250)]
    kept = [increments.plans(rule, EvalContext(now=T0), timedelta(minutes=2)) for rule in rules]
    assert all(mine is not None and mine[0].full for mine in kept)
    paced = increments.pace_rebuilds([*kept, None])
    assert [mine is not None for mine in paced] == [True] * increments.REBUILDS_AT_ONCE + [False] * 151
    facts = {}
    for rule, mine in zip(rules, paced, strict=False):
        if mine is not None:
            states = [increments.absorb(plan, rule.options, {"aggregations": {"slices": {"buckets": []}}}) for plan in mine]
            facts[rule.name] = {increments.FACT: increments.stamp(states)}
    later = [increments.plans(rule, EvalContext(now=T0 + timedelta(minutes=1), facts=facts), timedelta(minutes=2))
             for rule in rules]
    again = increments.pace_rebuilds(later)
    assert sum(1 for mine in again if mine is not None and not mine[0].full) == 100  # the first hundred go on
    assert sum(1 for mine in again if mine is not None and mine[0].full) == 100  # the next hundred rebuild
    assert sum(1 for mine in again if mine is None) == 50
