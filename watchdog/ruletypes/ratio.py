"""``ratio``: numerator events over denominator events per group, in the same window (e.g. errors over requests).

One search per rule, in the same ``_msearch`` as every other search rule:
the rule's query and window select the events, and ``filter`` aggregations
count the numerator (and a denominator narrower than the rule's query) in
each group, so the fraction costs no extra round trip. (Two ``filter``
aggregations rather than one ``filters``: the same counts, and several times
cheaper on some servers.) A group whose denominator is below
``min_denominator`` (a quiet service: 1 error in 2 requests) has no ratio and
never fires; a zero denominator is never a division.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from watchdog.ruletypes.search import Reading, SearchRuleType, group_buckets, groups_agg, query, total_hits
from watchdog.ruletypes.search_options import SearchOptions, Selector


def fraction(numerator: int, denominator: int, min_denominator: int) -> float | None:
    """``numerator / denominator``, or None when the denominator is below ``min_denominator`` (and always when 0)."""
    if denominator < max(min_denominator, 1):
        return None
    return numerator / denominator


def percent(value: float) -> str:
    """0.125 as ``12.5%``."""
    return f"{value * 100:.3g}%"


def _selects(selector: Selector) -> dict[str, Any]:
    clauses = selector.clauses()
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def split_aggs(options: SearchOptions) -> dict[str, Any]:
    """The numerator's ``filter`` aggregation, and the denominator's unless it is the whole bucket."""
    assert options.fraction is not None
    aggs = {"numerator": {"filter": _selects(options.fraction.numerator)}}
    if options.fraction.denominator.clauses():
        aggs["denominator"] = {"filter": _selects(options.fraction.denominator)}
    return aggs


def counts(part: Mapping[str, Any], whole: int) -> tuple[int, int]:
    """(numerator, denominator) of a bucket (or of the whole response, ``whole`` events) of ``split_aggs``."""
    numerator = int(part.get("numerator", {}).get("doc_count", 0))
    denominator = int(part["denominator"].get("doc_count", 0)) if "denominator" in part else whole
    return numerator, denominator


class RatioRule(SearchRuleType):
    name: ClassVar[str] = "ratio"
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"count", "threshold", "window", "index", "query", "start", "end", "numerator", "denominator", "ratio"})

    @classmethod
    def body(cls, options: SearchOptions, start: datetime, end: datetime, multi_terms: bool = True) -> dict[str, Any]:
        split = split_aggs(options)
        aggs = {"groups": groups_agg(options, split, multi_terms)} if options.group_by else split
        return {"size": 0, "track_total_hits": True, "query": query(options, start, end), "aggs": aggs}

    @classmethod
    def readings(cls, options: SearchOptions, response: Mapping[str, Any]) -> dict[str, Reading]:
        assert options.fraction is not None
        min_denominator = options.fraction.min_denominator

        def reading(part: Mapping[str, Any], whole: int, parts: tuple[str, ...]) -> Reading:
            numerator, denominator = counts(part, whole)
            value = fraction(numerator, denominator, min_denominator)
            shown = "none" if value is None else f"{value:.4g} = {percent(value)}"
            what = f"ratio {shown} ({numerator} of {denominator})"
            facts = {"numerator": numerator, "denominator": denominator,
                     "ratio": "" if value is None else percent(value)}
            return Reading(value=value, count=denominator, parts=parts, what=what, facts=facts)

        aggs = response.get("aggregations", {})
        if not options.group_by:
            return {"": reading(aggs, total_hits(response), ())}
        return {label: reading(bucket, int(bucket.get("doc_count", 0)), parts)
                for label, parts, bucket in group_buckets(options, aggs)}
