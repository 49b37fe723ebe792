"""The benchmark's latency split: the first search covering a rule after its burst, and the two parts around it."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.compare_elastalert import RULE_NAME
from bench.search_log import SearchLog, split

RULES = ["freq-000", "freq-001", "metric-002"]


def test_only_searches_of_the_log_indices_are_kept_with_the_rules_they_name() -> None:
    log = SearchLog(RULE_NAME)
    msearch = "\n".join(json.dumps(line) for line in (
        {"index": "logs-2026.12.07"}, {"query": {"query_string": {"query": "service:freq-000 AND level:error"}}},
        {"index": "logs-2026.12.07"}, {"query": {"query_string": {"query": "service:metric-002"}}})).encode()
    log.record(1.0, "POST", "/_msearch", msearch)
    log.record(2.0, "POST", "/logs-2026.12.07/_search", b'{"query": {"query_string": {"query": "service:freq-001"}}}')
    log.record(3.0, "POST", "/elastalert_status/_search", b'{"query": {"term": {"rule_name": "freq-001"}}}')
    log.record(4.0, "POST", "/logs-2026.12.07/_doc", b'{"service": "freq-001"}')
    log.record(5.0, "POST", "/logs-2026.12.07/_count", b'{"query": {"query_string": {"query": "service:other"}}}')
    assert list(zip(log.times, log.rules, strict=True)) == [
        (1.0, frozenset({"freq-000", "metric-002"})), (2.0, frozenset({"freq-001"}))]
    assert log.first_covering("freq-001", 1.5) == 2.0
    assert log.first_covering("freq-001", 2.5) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.sets(st.sampled_from(RULES))), max_size=30),
       st.dictionaries(st.sampled_from(RULES), st.floats(0, 100)), st.lists(st.tuples(st.sampled_from(RULES),
                                                                                       st.floats(0, 150)), max_size=6))
def test_the_parts_add_up_to_the_latency(searches: list[tuple[float, set[str]]], injected: dict[str, float],
                                         alerts: list[tuple[str, float]]) -> None:
    log = SearchLog(RULE_NAME)
    for at, names in searches:  # arrival order need not be time order (two proxy threads)
        log.record(at, "POST", "/logs-x/_search", " ".join(f"service:{n}" for n in sorted(names)).encode())
    parts = split(log, injected, alerts)
    assert [p.rule for p in parts] == [name for name, _ in alerts if name in injected]
    for part, (name, arrived) in zip(parts, [a for a in alerts if a[0] in injected], strict=True):
        assert part.total == arrived - injected[name]
        after = [at for at, names in searches if name in names and at >= injected[name]]
        if after and min(after) <= arrived:
            assert part.wait_for_schedule == min(after) - injected[name] >= 0
            assert part.processing == arrived - min(after) >= 0
            assert abs(part.wait_for_schedule + part.processing - part.total) < 1e-9
        else:
            assert part.wait_for_schedule is None and part.processing is None
