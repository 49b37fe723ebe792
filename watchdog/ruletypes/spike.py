"""``spike``: the count (or a metric) in the window against the same window ``offset`` earlier.

The baseline comes from the same request: one search over both windows, with
a ``current`` and a ``baseline`` filter aggregation (per group), in the same
``_msearch`` as every other search rule. ``threshold: {ratio_above: 3}``
fires when the window is more than three times its baseline,
``{ratio_below: 0.5}`` when it fell under half. ``min_count`` keeps small
numbers out: a rise needs at least that many events now, a drop at least that
many in the baseline. An empty baseline has no ratio: a count rising from
zero to ``min_count`` or more is reported as new, a drop from nothing is no
drop, and a metric over no events is not compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
    time_range,
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
