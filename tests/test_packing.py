"""Shared scans: searches of the same time ranges go to the cluster as one packed search, answered as if alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy
from tests.test_search import NOW, event, firing, load, project, rule
from watchdog.config import SearchSource as SearchConfig
from watchdog.sources import packing
from watchdog.sources.search import SearchError, SearchRequest, SearchSource, _checked
from watchdog.times import to_text


@pytest.fixture(scope="module")
def cluster(search_server: Any) -> Iterator[CountingProxy]:
    """A search cluster holding an hour of varied events, for the whole module."""
    clone = search_server.clone()
    proxy = CountingProxy(clone.url)
    teams, levels = ("team-a", "team-b", "team-c"), ("error", "info", "warn")
    load(proxy.url, [event(minutes_ago=(i * 7) % 60 + (i % 5) / 10, team=teams[i % 3], level=levels[(i // 3) % 3],
                           duration=(i * 37) % 2000, service=("api", "web")[i % 2]) for i in range(400)])
    yield proxy
    proxy.close()
    clone.close()


def source_for(proxy: CountingProxy) -> SearchSource:
    return SearchSource(SearchConfig(name="logs", hosts=(proxy.url,), timeout=timedelta(seconds=10)))


def time_clause(minutes: int, back: int = 0) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": to_text(NOW - timedelta(minutes=minutes + back)),
                                     "lt": to_text(NOW - timedelta(minutes=back)), "format": "strict_date_optional_time"}}}


SELECTORS = st.lists(st.sampled_from([
    {"term": {"level": "error"}}, {"term": {"level": "info"}}, {"term": {"team": "team-b"}},
    {"query_string": {"query": "service:api"}}, {"query_string": {"query": "team:team-a OR level:warn"}},
    {"range": {"duration_ms": {"gte": 1000}}}, {"bool": {"must_not": [{"term": {"service": "web"}}]}},
]), max_size=2)
SLICES = {"date_histogram": {"field": "@timestamp", "fixed_interval": "300s", "min_doc_count": 1}}
AGGS = st.sampled_from([
    {},  # a count: hits.total alone
    {"slices": SLICES},
    {"slices": {**SLICES, "aggs": {"m_sum": {"sum": {"field": "duration_ms"}}, "m_max": {"max": {"field": "duration_ms"}},
                                   "m_count": {"value_count": {"field": "duration_ms"}}}}},
    {"groups": {"terms": {"field": "team", "size": 2}, "aggs": {"slices": SLICES}}},
    {"groups": {"terms": {"field": "service", "size": 5}, "aggs": {"metric": {"avg": {"field": "duration_ms"}}}}},
    {"numerator": {"filter": {"term": {"level": "error"}}}, "metric": {"min": {"field": "duration_ms"}}},
])
BAD = {"query_string": {"query": "level:(error"}}  # the server refuses it: a packed search holding it fails whole


def normal(answer: Any) -> Any:
    if isinstance(answer, SearchError):
        return "error"
    return {"total": answer["hits"]["total"]["value"], "aggregations": answer.get("aggregations", {})}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(searches=st.lists(st.tuples(st.sampled_from([(30, 0), (30, 0), (60, 0), (10, 5)]), SELECTORS, AGGS,
                                   st.sampled_from([False, False, False, True])),
                         min_size=1, max_size=8))
def test_packed_answers_equal_each_search_alone(cluster: CountingProxy, searches: list[Any]) -> None:
    """Whatever the mix of time ranges, selectors, aggregations and refused queries, each gets its answer alone."""
    requests = []
    for (minutes, back), selector, aggs, bad in searches:
        clauses = [time_clause(minutes, back), *selector, *([BAD] if bad else [])]
        body = {"size": 0, "track_total_hits": True, "query": {"bool": {"filter": clauses}}}
        requests.append(SearchRequest("app-logs-*", {**body, "aggs": aggs} if aggs else body))
    source = source_for(cluster)
    try:
        packed = source.msearch(requests)
        alone = [source._send([request])[0] for request in requests]
    finally:
        source.close()
    assert [normal(a) for a in packed] == [normal(a) for a in alone]


def test_packs_follow_time_ranges_and_limits() -> None:
    """Only searches of one index and one time clause share a pack; the pack limits split big ones."""
    def request(minutes: int, index: str = "logs-*", aggs: Any = None, size: int = 0, term: int = 1) -> SearchRequest:
        return SearchRequest(index, {"size": size, "query": {"bool": {"filter": [time_clause(minutes), {"term": {"a": term}}]}},
                                     "aggs": aggs or {"slices": SLICES}})

    requests = [request(30), request(60), request(30, term=2), request(30, "other-*"), request(30, size=5), request(30)]
    assert [p.members for p in packing.pack(requests)] == [(0, 2, 5), (1,), (3,), (4,)]
    many = packing.pack([request(30)] * (packing.PACK_MAX + 3))
    assert [len(p.members) for p in many] == [packing.PACK_MAX, 3]
    # a terms aggregation of 5,000 groups times 7 histogram buckets is too many buckets to share a search
    wide = {"groups": {"terms": {"field": "g", "size": 5000}, "aggs": {"slices": SLICES}}}
    assert [p.members for p in packing.pack([request(30, aggs=wide)] * 3)] == [(0,), (1,), (2,)]
    refused = packing.Refusals()
    refused.add(requests[2])
    assert [p.members for p in packing.pack(requests, refused)] == [(0, 5), (1,), (2,), (3,), (4,)]


def test_rules_due_together_share_one_search(tmp_path: Path, cluster: CountingProxy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty rules over the same window are one search; a refused query fails only its rule, and goes alone after."""
    rules = {f"r{i:02d}": rule(f"r{i:02d}", f"type: threshold\nquery: 'team:team-{'abc'[i % 3]}'\nwindow: 30m\n"
                                            f"threshold: {{above: {i * 10}}}\n") for i in range(20)}
    rules["bad"] = rule("bad", "type: threshold\nquery: 'level:(error'\nwindow: 30m\nthreshold: {above: 1}\n")
    clock = Clock(NOW)
    (tmp_path / "packed").mkdir()
    (tmp_path / "alone").mkdir()
    engine = engine_for(project(tmp_path / "packed", cluster.url, rules), clock)
    cluster.reset()
    applied = {a.rule: a for a in evaluate_now(engine)}
    assert applied["bad"].error and "level:(error" in applied["bad"].error
    assert all(applied[name].error is None for name in rules if name != "bad")
    # the pack of 21, refused; then each alone (then the example events of the alerts, never packed)
    assert [len(body.splitlines()) // 2 for body in cluster.bodies][:2] == [1, 21]
    cluster.reset()
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    second = [json.loads(line) for body in cluster.bodies for line in body.splitlines()]
    assert len(second) == 4  # two searches: the twenty packed, the refused one alone
    assert sum(1 for line in second if "p19" in line.get("aggs", {})) == 1
    # the same rules, each searched alone, find the same
    monkeypatch.setattr(packing, "PACK_MAX", 1)
    alone = engine_for(project(tmp_path / "alone", cluster.url, rules), Clock(NOW + timedelta(minutes=1)))
    evaluate_now(alone)
    fired = {name: firing(engine, name) for name in rules}
    assert fired == {name: firing(alone, name) for name in rules}
    assert 0 < sum(1 for groups in fired.values() if groups) < 20


def test_a_search_refused_alone_is_not_packed_at_its_later_evaluations(cluster: CountingProxy) -> None:
    """Remembered without its time: the next evaluation (a minute later) sends it alone, with no refused pack first."""
    def batch(back: int) -> list[SearchRequest]:
        return [SearchRequest("app-logs-*", {"size": 0, "query": {"bool": {"filter": [time_clause(30, back), selector]}},
                                             "aggs": {"slices": SLICES}})
                for selector in ({"term": {"level": "error"}}, {"term": {"team": "team-b"}}, BAD)]

    source = source_for(cluster)
    try:
        cluster.reset()
        first = source.msearch(batch(0))
        assert [len(body.splitlines()) // 2 for body in cluster.bodies] == [1, 3]  # refused as a pack, then each alone
        cluster.reset()
        later = source.msearch(batch(1))
        assert [len(body.splitlines()) // 2 for body in cluster.bodies] == [2]  # the two packed, the bad one alone
    finally:
        source.close()
    assert [isinstance(a, SearchError) for a in first] == [isinstance(a, SearchError) for a in later] == [False, False, True]


def test_a_composite_aggregation_is_never_packed() -> None:
    composite = {"groups": {"composite": {"size": 10, "sources": [{"team": {"terms": {"field": "team"}}}]}}}
    requests = [SearchRequest("logs-*", {"size": 0, "query": {"bool": {"filter": [time_clause(30), {"term": {"a": i}}]}},
                                         "aggs": composite}) for i in range(3)]
    assert [p.members for p in packing.pack(requests)] == [(0,), (1,), (2,)]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(response=JSON | st.fixed_dictionaries({"_shards": st.fixed_dictionaries(
    {"total": st.integers(1, 5), "failed": st.integers(0, 5)}, optional={"failures": JSON})}, optional={
    "timed_out": st.booleans(), "error": JSON, "status": JSON, "aggregations": JSON}))
def test_any_answer_is_a_response_or_that_searchs_error(response: Any) -> None:
    """What the cluster says of one search never raises: a refusal, a timeout or failed shards are its error."""
    checked = _checked(response)
    partial = isinstance(response, dict) and (response.get("timed_out") is True or "error" in response or (
        isinstance(response.get("_shards"), dict) and response["_shards"].get("failed", 0) > 0))
    assert isinstance(checked, SearchError) == (partial or not isinstance(response, dict))
    if isinstance(checked, SearchError):
        assert str(checked)
