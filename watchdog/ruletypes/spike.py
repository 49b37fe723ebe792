"""``spike``: the count (or a metric) in the window against the same window ``offset`` earlier.

The daemon sends the two windows as two plain searches (each reading only
its own range and dated indices, cheaper on the server than one search over
both with a filter aggregation per window) in the same ``_msearch`` as every
other search rule, and reads their answers back as that one search's
(``combine``); ``test-rule`` replays with the one search (``body``). ``threshold: {ratio_above: 3}``
fires when the window is more than three times its baseline,
``{ratio_below: 0.5}`` when it fell under half. ``min_count`` keeps small
numbers out: a rise needs at least that many events now, a drop at least that
many in the baseline. An empty baseline has no ratio: a count rising from
zero to ``min_count`` or more is reported as new, a drop from nothing is no
drop, and a metric over no events is not compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from watchdog.durations import format_duration
from watchdog.ruletypes.search import (
    Reading,
    SearchRuleType,
    group_buckets,
    groups_agg,
    metric_aggs,
    metric_value,
    search_body,
    time_range,
    total_hits,
)
from watchdog.ruletypes.search_options import SearchOptions


def spike_ratio(current: float | None, baseline: float | None, current_count: int, baseline_count: int,
                min_count: int, rising: bool) -> float | None:
    """current / baseline, or None when there is nothing to compare; ``math.inf`` for a rise from a zero baseline.

    ``rising`` (``ratio_above``) needs ``current_count >= min_count``; a
    drop (``ratio_below``) needs ``baseline_count >= min_count``. A value of
    None (a metric over no events) is never compared: a metric has no
    "new", a count of zero does.
    """
    if rising:
        if current_count < min_count or current is None or current <= 0 or baseline is None:
            return None
        if baseline <= 0:
            return math.inf
        return current / baseline  # a baseline so tiny that this overflows is a rise from zero: inf, as above
    if baseline_count < min_count or baseline is None or baseline <= 0 or current is None:
        return None
    return max(current, 0.0) / baseline  # may overflow to inf for a tiny baseline: no drop, never fires


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


class SpikeRule(SearchRuleType):
    name: ClassVar[str] = "spike"
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"count", "metric", "threshold", "window", "index", "query", "start", "end", "current", "baseline", "offset",
         "ratio"})

    @classmethod
    def spans(cls, options: SearchOptions, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        assert options.baseline is not None
        offset = options.baseline.offset
        return [(start - offset, end - offset), (start, end)]

    @classmethod
    def body(cls, options: SearchOptions, start: datetime, end: datetime, multi_terms: bool = True) -> dict[str, Any]:
        assert options.baseline is not None
        offset = options.baseline.offset
        current = time_range(options, start, end)
        baseline = time_range(options, start - offset, end - offset)
        inner = metric_aggs(options)
        sides: dict[str, Any] = {"current": {"filter": current}, "baseline": {"filter": baseline}}
        if inner:
            for side in sides.values():
                side["aggs"] = inner
        both = {"bool": {"should": [current, baseline], "minimum_should_match": 1}}
        aggs = {"groups": groups_agg(options, sides, multi_terms)} if options.group_by else sides
        return {"size": 0, "track_total_hits": True, "aggs": aggs,
                "query": {"bool": {"filter": [both, *options.selector.clauses()]}}}

    @classmethod
    def searches(cls, options: SearchOptions, start: datetime, end: datetime,
                 multi_terms: bool = True) -> list[tuple[list[tuple[datetime, datetime]], dict[str, Any]]]:
        assert options.baseline is not None
        offset = options.baseline.offset
        return [([(start, end)], search_body(options, start, end, multi_terms)),
                ([(start - offset, end - offset)], search_body(options, start - offset, end - offset, multi_terms))]

    @classmethod
    def combine(cls, options: SearchOptions, responses: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """The current and baseline searches' answers as the answer ``body``'s one search would give."""
        current, baseline = responses

        def side(part: Mapping[str, Any], count: int) -> dict[str, Any]:
            return {**{k: v for k, v in part.items() if k == "metric"}, "doc_count": count}

        if not options.group_by:
            return {"aggregations": {"current": side(current.get("aggregations", {}), total_hits(current)),
                                     "baseline": side(baseline.get("aggregations", {}), total_hits(baseline))}}
        merged: dict[tuple[str, ...], dict[str, Any]] = {}
        for name, response in (("current", current), ("baseline", baseline)):
            for _, parts, bucket in group_buckets(options, response.get("aggregations", {})):
                entry = merged.setdefault(parts, {k: v for k, v in bucket.items() if k in ("key", "key_as_string")})
                entry[name] = side(bucket, int(bucket.get("doc_count", 0)))
        # At most max_groups, the busiest over both windows, as the one search's terms aggregation keeps.
        busiest = sorted(merged.values(), key=lambda b: -sum(b.get(s, {}).get("doc_count", 0) for s in ("current", "baseline")))
        return {"aggregations": {"groups": {"buckets": busiest[:options.max_groups]}}}

    @classmethod
    def readings(cls, options: SearchOptions, response: Mapping[str, Any]) -> dict[str, Reading]:
        assert options.baseline is not None
        baseline_opts = options.baseline
        rising = options.threshold.is_above
        earlier = f"{format_duration(baseline_opts.offset)} earlier"

        def side(part: Mapping[str, Any]) -> tuple[float | None, int]:
            count = int(part.get("doc_count", 0))
            return (float(count) if options.metric is None else metric_value(part, options)), count

        def reading(part: Mapping[str, Any], parts: tuple[str, ...]) -> Reading:
            now_value, now_count = side(part.get("current", {}))
            then_value, then_count = side(part.get("baseline", {}))
            ratio = spike_ratio(now_value, then_value, now_count, then_count, baseline_opts.min_count, rising)
            what_now = f"events {now_count}" if options.metric is None else f"{options.metric.describe()} {_fmt(now_value)}"
            if ratio is not None and math.isinf(ratio):
                shown = "new"
                versus = f", none the same window {earlier} (new)"
            else:
                shown = "none" if ratio is None else f"{ratio:.3g}x"
                versus = f" vs {_fmt(then_value)} the same window {earlier}: {shown}"
            facts = {"current": _fmt(now_value), "baseline": _fmt(then_value), "offset": format_duration(baseline_opts.offset),
                     "ratio": shown, "baseline_count": then_count}
            return Reading(value=ratio, count=now_count, parts=parts, what=what_now, versus=versus, facts=facts)

        aggs = response.get("aggregations", {})
        if not options.group_by:
            return {"": reading(aggs, ())}
        return {label: reading(bucket, parts) for label, parts, bucket in group_buckets(options, aggs)}
