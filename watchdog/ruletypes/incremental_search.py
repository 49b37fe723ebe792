"""The searches of incremental windows (``increments``), and their buckets read back as a full search's answer.

Each plan becomes one search of its pieces with a date histogram at the
grid's step (per group with ``group_by``; a flatline's also asks for each
group's newest event); ``response`` gives the window's counters in the shape
the rule type's ``readings`` reads from a search of the whole window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from watchdog.ruletypes.increments import DECOMPOSABLE, Buckets, Plan, ranked

_METRIC_AGGS = {"m_sum": "sum", "m_min": "min", "m_max": "max", "m_count": "value_count"}


def slices_agg(options: Any, plan: Plan) -> dict[str, Any]:
    """A date histogram at the grid's step over what the search reads: the head piece and the buckets searched again.

    The search's query reads only those ranges, so the histogram's first bucket (before ``cut``) holds the head
    piece alone and each later one a grid step (the last cut at ``end``); one aggregation, however many steps.
    """
    agg: dict[str, Any] = {"date_histogram": {"field": options.timestamp_field,
                                              "fixed_interval": f"{int(plan.grid.total_seconds())}s", "min_doc_count": 1}}
    if options.fraction is not None:  # a ratio counts its numerator (and denominator) in each piece too
        from watchdog.ruletypes.ratio import split_aggs

        agg["aggs"] = split_aggs(options)
    if options.metric is not None:  # a metric's parts in each piece (an avg's sum and count of values)
        agg["aggs"] = {name: {_METRIC_AGGS[name]: {"field": options.metric.field}}
                       for name in DECOMPOSABLE[options.metric.agg]}
    return agg


def body(options: Any, plan: Plan, multi_terms: bool = True) -> dict[str, Any]:
    """The search of the plan's pieces: per group (``group_by``) or overall; reads only those time ranges."""
    from watchdog.ruletypes.search import groups_agg, time_range

    def within(spans: Sequence[tuple[datetime, datetime]]) -> dict[str, Any]:
        ranges = [time_range(options, lo, hi) for lo, hi in spans if lo < hi]
        return {"bool": {"should": ranges, "minimum_should_match": 1}}

    slices: dict[str, Any] = {"slices": slices_agg(options, plan)}
    if plan.lookback is not None:  # a flatline: when each group was last seen; counted in the window's pieces only
        if plan.spans() != plan.pieces():
            slices = {"window": {"filter": within(plan.pieces()), "aggs": slices}}
        slices["last"] = {"max": {"field": options.timestamp_field}}
    aggs = {"groups": groups_agg(options, slices, multi_terms)} if options.group_by else slices
    return {"size": 0, "query": {"bool": {"filter": [within(plan.spans()), *options.selector.clauses()]}},
            "aggs": aggs}


def metric_value(total: Mapping[str, float], agg: str) -> float | None:
    """A metric over the window from its steps' parts (None, as the server says, for a min, max or avg of nothing)."""
    if agg == "sum":
        return total.get("m_sum", 0.0)
    if agg == "avg":
        return total["m_sum"] / total["m_count"] if total.get("m_count") else None
    return total.get(f"m_{agg}")


def response(state: Buckets, options: Any) -> dict[str, Any]:
    """The window's counts as a full search's response (what the rule type's ``readings`` reads)."""
    totals = state.totals

    def subs(total: Mapping[str, float]) -> dict[str, Any]:
        if options.metric is not None:
            return {"metric": {"value": metric_value(total, options.metric.agg)}}
        if options.fraction is None:
            return {}
        names = ["numerator"] + (["denominator"] if options.fraction.denominator.clauses() else [])
        return {name: {"doc_count": int(total.get(name, 0))} for name in names}

    if not options.group_by:
        whole = totals.get("", {})
        return {"hits": {"total": {"value": int(whole.get("", 0))}}, "aggregations": subs(whole)}
    buckets = []
    for label in ranked(state, totals)[:options.max_groups]:
        parts = state.parts.get(label, (label,))
        buckets.append({"key": parts[0] if len(parts) == 1 else list(parts), "doc_count": int(totals[label][""]),
                        **subs(totals[label])})
    return {"hits": {"total": {"value": int(sum(t[""] for t in totals.values()))}},
            "aggregations": {"groups": {"buckets": buckets}}}
