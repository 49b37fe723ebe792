"""ratio, spike and multi-field group_by against osmem-server, through the engine; the pure math by property tests."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy
from tests.test_search import NOW, event, firing, load, project, rule
from watchdog.ruletypes.ratio import fraction
from watchdog.ruletypes.spike import spike_ratio

DAY = 24 * 60


def groups(engine: Any, name: str) -> dict[str, Any]:
    return {g: s for g, s in engine.store.groups().get(name, {}).items() if s.state.value == "firing"}


@pytest.fixture
def traffic(search: CountingProxy) -> CountingProxy:
    """Requests in the last 10 minutes: api 200 (25 errors), web 2 (1 error), batch 40 (only errors)."""
    events = [event(i * 0.04 + 0.01, team="t1", level="error" if i < 25 else "info", service="api") for i in range(200)]
    events += [event(1, team="t1", level="error", service="web"), event(2, team="t2", level="info", service="web")]
    events += [event(i * 0.2 + 0.1, team="t2", level="error", service="batch") for i in range(40)]
    load(search.url, events)
    search.reset()
    return search


def test_ratio_per_group_with_min_denominator_and_tiers(tmp_path: Path, traffic: CountingProxy) -> None:
    config = project(tmp_path, traffic.url, {
        "errors": rule("errors", "type: ratio\nnumerator: 'level:error'\nwindow: 10m\ngroup_by: service\n"
                       "min_denominator: 10\nthreshold: {above: {warning: 0.1, critical: 0.5}}\nsample: 2\n"
                       "message: '{numerator} of {denominator} ({ratio}) for {group}'\n"),
        "overall": rule("overall", "type: ratio\nnumerator: {query: 'level:error'}\nwindow: 10m\n"
                        "threshold: {above: 0.2}\nsample: 0\n"),
    })
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    fired = groups(engine, "errors")
    # api: 25/200 = 12.5% warns; batch: 40/40 = 100% is critical; web: 1 of 2 is under min_denominator
    assert {g: (s.value, s.severity.value) for g, s in fired.items()} == {"api": (0.125, "warning"), "batch": (1.0, "critical")}
    assert fired["api"].summary == ("ratio 0.125 = 12.5% (25 of 200) for service=api in the last 10m "
                                    "(above 0.1 (warning), 0.5 (critical))")
    assert fired["api"].details["samples"] and all(s["level"] == "error" for s in fired["api"].details["samples"])
    assert groups(engine, "overall")[""].value == pytest.approx(66 / 242)
    assert traffic.counts["POST /_msearch"] == 2  # both rules in one, example events in one more
    payload = engine.store.db.execute("select payload from outbox where rule = 'errors' and grp = 'api'").fetchone()[0]
    assert "25 of 200 (12.5%) for api" in payload


def test_ratio_zero_denominator_is_no_ratio_not_an_error(tmp_path: Path, traffic: CountingProxy) -> None:
    config = project(tmp_path, traffic.url, {
        # batch logs only errors: its denominator (info events) is zero
        "zero": rule("zero", "type: ratio\nnumerator: 'level:error'\ndenominator: 'level:info'\nwindow: 10m\n"
                     "group_by: service\nthreshold: {above: 0.01}\nsample: 0\n"),
        "nothing": rule("nothing", "type: ratio\nquery: 'service:nosuch'\nnumerator: 'level:error'\nwindow: 10m\n"
                        "threshold: {below: 0.99}\nsample: 0\n"),
    })
    engine = engine_for(config, Clock(NOW))
    applied = {a.rule: a for a in evaluate_now(engine)}
    assert applied["zero"].error is None and applied["nothing"].error is None
    assert set(groups(engine, "zero")) == {"api", "web"}  # 25/175 and 1/1; batch has no denominator
    assert groups(engine, "nothing") == {}


def test_ratio_resolves_with_the_value_falling(tmp_path: Path, traffic: CountingProxy) -> None:
    config = project(tmp_path, traffic.url, {
        "r": rule("r", "type: ratio\nnumerator: 'level:error'\nwindow: 10m\nquery: 'service:api'\n"
                  "threshold: {above: 0.1}\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert firing(engine, "r") == {"": 0.125}
    load(traffic.url, [event(-1 - i * 0.01, level="info", service="api") for i in range(300)])
    clock.now = NOW + timedelta(minutes=5)  # 300 more good requests: the ratio falls under 10%
    evaluate_now(engine)
    assert firing(engine, "r") == {}
    rows = engine.store.db.execute("select kind, json_extract(payload, '$.text') from outbox where rule = 'r' order by id")
    kinds, texts = zip(*rows.fetchall(), strict=True)
    assert kinds == ("firing", "resolved")
    assert "ratio 0.05882 = 5.88% (25 of 425) in the last 10m (above 0.1) now" in texts[1]  # the ratio now


@pytest.fixture
def seasonal(search: CountingProxy) -> CountingProxy:
    """Errors now (last hour) and in the same hour a day earlier."""
    def burst(service: str, now: int, then: int, duration: int = 100) -> list[dict[str, Any]]:
        out = [event(1 + i * 50 / max(now, 1), service=service, duration=duration) for i in range(now)]
        out += [event(DAY + 1 + i * 50 / max(then, 1), service=service, duration=100) for i in range(then)]
        return out

    load(search.url, burst("api", 50, 10, duration=400) + burst("web", 12, 10) + burst("billing", 30, 0)
         + burst("tiny", 3, 0) + burst("quiet", 2, 40))
    search.reset()
    return search


def test_spike_against_the_same_window_a_day_earlier(tmp_path: Path, seasonal: CountingProxy) -> None:
    config = project(tmp_path, seasonal.url, {
        "up": rule("up", "type: spike\nquery: 'level:error'\nwindow: 1h\noffset: 1d\ngroup_by: service\n"
                   "min_count: 20\nthreshold: {ratio_above: {warning: 2, critical: 4}}\nsample: 0\n"),
        "down": rule("down", "type: spike\nwindow: 1h\noffset: 1d\ngroup_by: service\nmin_count: 20\n"
                     "threshold: {ratio_below: 0.5}\nsample: 0\n"),
        "slow": rule("slow", "type: spike\nwindow: 1h\noffset: 1d\ngroup_by: service\nmetric: {avg: duration_ms}\n"
                     "threshold: {ratio_above: 3}\nsample: 0\n"),
    })
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    up = groups(engine, "up")
    # api 50 vs 10 = 5x critical; billing 30 vs none = new (empty baseline); web 1.2x and tiny (3 < min_count) do not fire
    assert {g: (s.value, s.severity.value) for g, s in up.items()} == {"api": (5.0, "critical"), "billing": (None, "critical")}
    assert up["api"].summary == ("events 50 for service=api in the last 1h vs 10 the same window 1d earlier: 5x "
                                 "(ratio above 2 (warning), 4 (critical))")
    assert up["billing"].summary.startswith("events 30 for service=billing in the last 1h, none the same window 1d earlier (new)")
    assert {g: s.value for g, s in groups(engine, "down").items()} == {"quiet": 0.05}  # 2 vs 40
    assert {g: s.value for g, s in groups(engine, "slow").items()} == {"api": 4.0}  # avg 400 vs 100
    assert seasonal.counts["POST /_msearch"] == 1  # the baseline comes from the same request


def test_spike_with_an_empty_baseline_and_nothing_now(tmp_path: Path, search: CountingProxy) -> None:
    load(search.url, [event(5, service="api")])
    config = project(tmp_path, search.url, {
        "rise": rule("rise", "type: spike\nwindow: 1h\noffset: 7d\nthreshold: {ratio_above: 2}\nsample: 0\n"),
        "drop": rule("drop", "type: spike\nwindow: 1h\noffset: 7d\nthreshold: {ratio_below: 0.5}\nsample: 0\n"),
        "slow": rule("slow", "type: spike\nquery: 'service:none'\nwindow: 1h\noffset: 7d\nmetric: {max: duration_ms}\n"
                     "threshold: {ratio_above: 2}\nsample: 0\n"),
    })
    engine = engine_for(config, Clock(NOW))
    applied = {a.rule: a for a in evaluate_now(engine)}
    assert all(a.error is None for a in applied.values())
    assert set(groups(engine, "rise")) == {""}  # 1 event, none a week earlier: new (min_count 1)
    assert groups(engine, "drop") == {} and groups(engine, "slow") == {}  # no drop from nothing; no metric at all


@pytest.mark.parametrize("flavor", ["", ", flavor: opensearch"])  # auto: multi_terms; opensearch without a version: composite
def test_group_by_several_fields(tmp_path: Path, traffic: CountingProxy, flavor: str) -> None:
    config = project(tmp_path, traffic.url, {
        "pairs": rule("pairs", "type: threshold\nquery: 'level:error'\nwindow: 10m\ngroup_by: [service, team]\n"
                      "threshold: {above: 10}\nsample: 1\n"),
        "quiet": rule("quiet", "type: threshold\nwindow: 5m\ngroup_by: [service, team]\nthreshold: {below: 1}\nsample: 0\n"),
    }, extra=flavor)
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    fired = groups(engine, "pairs")
    assert {g: s.value for g, s in fired.items()} == {"service=api, team=t1": 25, "service=batch, team=t2": 40}
    assert fired["service=api, team=t1"].details["samples"][0]["service"] == "api"
    assert fired["service=api, team=t1"].summary.startswith("events 25 for service=api, team=t1 in the last 10m")
    assert "service:%22api%22%20AND%20team:%22t1%22" in fired["service=api, team=t1"].details["dashboard_url"]
    # web's two events are 1 and 2 minutes old: within 5m; nothing has gone quiet
    assert groups(engine, "quiet") == {}


# --- the pure math ----------------------------------------------------------------------------------------------

counts = st.integers(0, 10**9)


@settings(max_examples=200, deadline=None)
@given(counts, counts, st.integers(1, 10**6))
def test_ratio_math(numerator: int, denominator: int, min_denominator: int) -> None:
    value = fraction(numerator, denominator, min_denominator)
    if denominator == 0 or denominator < min_denominator:
        assert value is None  # never a division by zero, never a ratio on too few
    else:
        assert value == numerator / denominator and math.isfinite(value)


floats = st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(floats, floats, st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 100), st.booleans())
@example(1.0, 2.2e-309, 0, 0, 0, False)  # a subnormal baseline: the quotient overflows (found by Hypothesis)
@example(1e9, 5e-306, 1, 1, 0, True)
def test_spike_math(current: float | None, baseline: float | None, now_count: int, then_count: int, min_count: int,
                    rising: bool) -> None:
    ratio = spike_ratio(current, baseline, now_count, then_count, min_count, rising)
    if ratio is None:
        return
    assert ratio >= 0 and not math.isnan(ratio)
    assert current is not None and baseline is not None
    overflows = baseline > 0 and math.isinf(max(current, 0.0) / baseline)
    if rising:
        assert now_count >= min_count and current > 0
        assert math.isinf(ratio) == (baseline <= 0 or overflows)
    else:
        assert then_count >= min_count and baseline > 0 and math.isfinite(ratio) != overflows


def test_every_search_type_due_together_shares_one_msearch(tmp_path: Path, traffic: CountingProxy) -> None:
    config = project(tmp_path, traffic.url, {
        "t": rule("t", "type: threshold\nwindow: 10m\nthreshold: {above: 1000}\n"),
        "m": rule("m", "type: metric\nwindow: 10m\nmetric: {max: duration_ms}\nthreshold: {above: 1000}\n"),
        "r": rule("r", "type: ratio\nnumerator: 'level:error'\nwindow: 10m\nthreshold: {above: 0.9}\n"),
        "s": rule("s", "type: spike\nwindow: 10m\noffset: 1d\nmin_count: 100000\nthreshold: {ratio_above: 2}\n"),
    })
    engine = engine_for(config, Clock(NOW))
    assert len(set(engine.next_run.values())) == 1  # one schedule phase for every search type on the source
    applied = evaluate_now(engine)
    assert sorted(a.rule for a in applied if a.error is None) == ["m", "r", "s", "t"]
    assert traffic.counts["POST /_msearch"] == 1, traffic.paths


@pytest.mark.parametrize(("body", "path", "message"), [
    ("type: spike\nwindow: 1h\noffset: 30m\nthreshold: {ratio_above: 2}\n", "offset", "must be at least the window"),
    ("type: spike\nwindow: 1h\noffset: 1d\nthreshold: {above: 2}\n", "threshold.above", "unknown key 'above'"),
    ("type: ratio\nwindow: 1h\nthreshold: {above: 0.1}\n", "", "missing required key 'numerator'"),
    ("type: ratio\nwindow: 1h\nnumerator: {qurey: x}\nthreshold: {above: 0.1}\n", "numerator.qurey", "did you mean 'query'"),
    ("type: ratio\nwindow: 1h\nnumerator: x\nmin_denominator: 0\nthreshold: {above: 0.1}\n", "min_denominator", ""),
    ("type: threshold\nwindow: 1h\ngroup_by: [a, a]\nthreshold: {above: 1}\n", "group_by", ""),
    ("type: threshold\nwindow: 1h\nthreshold: {above: {warning: 9, critical: 3}}\n", "threshold.above",
     "each tier must be higher than the one before"),
])
def test_bad_new_search_rules_name_the_key(tmp_path: Path, body: str, path: str, message: str) -> None:
    from watchdog.loader import load_rules

    config = project(tmp_path, "http://127.0.0.1:9", {"bad": rule("bad", body)})
    result = load_rules([config.rules_dir], config)
    assert not result.rules
    assert any(p.path == path and message in p.message for p in result.problems), result.problems


def test_test_rule_replays_ratio_and_spike(tmp_path: Path, traffic: CountingProxy) -> None:
    from watchdog.sources import Sources
    from watchdog.testrule import replay

    config = project(tmp_path, traffic.url, {
        "r": rule("r", "type: ratio\nnumerator: 'level:error'\nwindow: 5m\ngroup_by: [service, team]\nmin_denominator: 10\n"
                  "threshold: {above: 0.5}\nschedule: {every: 1m}\n"),
        "s": rule("s", "type: spike\nwindow: 5m\noffset: 1d\nmin_count: 30\nthreshold: {ratio_above: 2}\n"
                  "schedule: {every: 1m}\n"),
    })
    from watchdog.loader import load_rules

    rules = {r.name: r for r in load_rules([config.rules_dir], config).rules}
    sources = Sources(config.sources)
    ratio = replay(rules["r"], sources, NOW - timedelta(minutes=20), NOW + timedelta(minutes=10))
    spike = replay(rules["s"], sources, NOW - timedelta(minutes=20), NOW + timedelta(minutes=10))
    sources.close()
    # batch logs only errors; api's newest minute is its 25 errors, alone in the window near the end
    assert sorted((t["group"], t["to"]) for t in ratio.transitions) == [
        ("service=api, team=t1", "firing"), ("service=api, team=t1", "resolved"),
        ("service=batch, team=t2", "firing"), ("service=batch, team=t2", "resolved")]
    assert ratio.mode == "per-tick" and ratio.errors == []
    assert [t["to"] for t in spike.transitions] == ["firing", "resolved"] and spike.errors == []


def test_a_firing_ratio_whose_denominator_falls_to_zero_resolves_saying_so(tmp_path: Path, traffic: CountingProxy) -> None:
    config = project(tmp_path, traffic.url, {
        "r": rule("r", "type: ratio\nnumerator: 'level:error'\nwindow: 10m\nquery: 'service:batch'\n"
                  "threshold: {above: 0.1}\nsample: 0\n")})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert firing(engine, "r") == {"": 1.0}
    clock.now = NOW + timedelta(minutes=30)  # no traffic at all in the window now: no ratio, nothing divided by zero
    (applied,) = evaluate_now(engine)
    assert applied.error is None and firing(engine, "r") == {}
    (text,) = engine.store.db.execute(
        "select json_extract(payload, '$.text') from outbox where rule = 'r' and kind = 'resolved'").fetchone()
    assert "ratio none (0 of 0) in the last 10m (above 0.1) now" in text


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.lists(st.tuples(st.integers(0, 140), st.sampled_from(["api", "web", "db"]), st.integers(1, 900)),
                        max_size=25),
       grouped=st.booleans(), metric=st.booleans(), below=st.booleans())
def test_spike_as_two_searches_reads_what_the_one_search_reads(search: CountingProxy, minutes: list[tuple[int, str, int]],
                                                               grouped: bool, metric: bool, below: bool) -> None:
    """The daemon's two plain searches (current, baseline), combined, give the readings of test-rule's one search."""
    from opensearchpy import OpenSearch

    from watchdog.ruletypes.search_options import SearchOptions
    from watchdog.ruletypes.spike import SpikeRule

    client = OpenSearch(hosts=[search.url])
    client.indices.delete(index="app-logs-*", ignore_unavailable=True)
    load(search.url, [event(m + 0.5, service=s, duration=d) for m, s, d in minutes] or [event(9_999)])
    options = SearchOptions.from_mapping({
        "source": "logs", "index": "app-logs-*", "window": "10m", "offset": "1h", "min_count": 1,
        "threshold": {"ratio_below": 0.5} if below else {"ratio_above": 2},
        **({"group_by": "service"} if grouped else {}), **({"metric": {"avg": "duration_ms"}} if metric else {})})
    start, end = NOW - timedelta(minutes=10), NOW
    one = client.search(index="app-logs-*", body=SpikeRule.body(options, start, end))
    parts = [client.search(index="app-logs-*", body=body) for _, body in SpikeRule.searches(options, start, end)]
    client.close()
    assert SpikeRule.readings(options, SpikeRule.combine(options, parts)) == SpikeRule.readings(options, one)
