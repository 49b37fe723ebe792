"""Evaluation shared by the search rule types: windows, indices, queries, findings, samples.

Every rule of a batch becomes one search in a single ``_msearch``: counting
uses ``size: 0`` and aggregations; example events are fetched (in one more
``_msearch``) only for groups that just started to breach.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from watchdog.durations import format_duration
from watchdog.rule import Rule
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, RuleType
from watchdog.ruletypes.search_options import SearchOptions
from watchdog.times import to_text

# A grouped "below" rule also looks back this far to learn which groups exist,
# so a group that went quiet fires even on the first run after a restart.
MIN_LOOKBACK = timedelta(hours=1)
MAX_LOOKBACK = timedelta(hours=24)
LOOKBACK_WINDOWS = 4
MAX_INDEX_NAMES = 60  # beyond this many dated indices, a wildcard is cheaper to send
MAX_SAMPLE_GROUPS = 10
_STRFTIME = re.compile(r"%[a-zA-Z]")


def window(options: SearchOptions, now: datetime) -> tuple[datetime, datetime]:
    """[now - delay - window, now - delay]."""
    end = now - options.delay
    return end - options.window, end


def looks_back(options: SearchOptions) -> bool:
    return bool(options.group_by) and options.threshold.below is not None


def lookback(options: SearchOptions) -> timedelta:
    """How far a grouped flatline rule looks back for groups that went quiet."""
    return min(max(options.window * LOOKBACK_WINDOWS, MIN_LOOKBACK), MAX_LOOKBACK)


def expand_index(pattern: str, start: datetime, end: datetime) -> tuple[str, bool]:
    """The index expression covering [start, end], and whether missing indices are to be ignored.

    ``app-logs-%Y.%m.%d`` becomes the comma-separated daily names that can
    hold the window, so only those are searched (and date-math names, which
    some servers do not resolve, are never needed).
    """
    if "%" not in pattern:
        return pattern, False
    step = timedelta(hours=1) if any(d in pattern for d in ("%H", "%I")) else timedelta(days=1)
    names: list[str] = []
    moment = start.astimezone(UTC)
    last = end.astimezone(UTC)
    while True:
        name = moment.strftime(pattern)
        if name not in names:
            names.append(name)
        if moment >= last or len(names) > MAX_INDEX_NAMES:
            break
        moment = min(moment + step, last)
    if len(names) > MAX_INDEX_NAMES:
        return _STRFTIME.sub("*", pattern), True
    return ",".join(names), True


def query(options: SearchOptions, start: datetime, end: datetime) -> dict[str, Any]:
    clauses: list[Any] = [{"range": {options.timestamp_field: {
        "gte": to_text(start), "lt": to_text(end), "format": "strict_date_optional_time"}}}]
    if options.query:
        clauses.append({"query_string": {"query": options.query}})
    clauses.extend(options.filters)
    return {"bool": {"filter": clauses}}


def _metric_agg(options: SearchOptions) -> dict[str, Any]:
    metric = options.metric
    assert metric is not None
    if metric.agg == "percentile":
        return {"percentiles": {"field": metric.field, "percents": [metric.percent]}}
    return {metric.agg: {"field": metric.field}}


def search_body(options: SearchOptions, start: datetime, end: datetime) -> dict[str, Any]:
    """The counting (or aggregating) search for one evaluation."""
    inner = {"metric": _metric_agg(options)} if options.metric is not None else None
    if looks_back(options):
        # Groups over the lookback; each bucket's "recent" part is the window itself.
        recent: dict[str, Any] = {"filter": {"range": {options.timestamp_field: {
            "gte": to_text(start), "lt": to_text(end), "format": "strict_date_optional_time"}}}}
        if inner:
            recent["aggs"] = inner
        terms = {"terms": {"field": options.group_by, "size": options.max_groups}, "aggs": {"recent": recent}}
        return {"size": 0, "track_total_hits": True, "query": query(options, end - lookback(options), end),
                "aggs": {"groups": terms}}
    body: dict[str, Any] = {"size": 0, "track_total_hits": True, "query": query(options, start, end)}
    if options.group_by:
        terms = {"terms": {"field": options.group_by, "size": options.max_groups}}
        if inner:
            terms["aggs"] = inner
        body["aggs"] = {"groups": terms}
    elif inner:
        body["aggs"] = inner
    return body


def _metric_value(aggs: Mapping[str, Any], options: SearchOptions) -> float | None:
    metric = aggs.get("metric", {})
    if options.metric is not None and options.metric.agg == "percentile":
        values = metric.get("values", {})
        value = next(iter(values.values()), None) if values else None
    else:
        value = metric.get("value")
    return None if value is None else float(value)


def values(options: SearchOptions, response: Mapping[str, Any]) -> dict[str, tuple[float | None, int]]:
    """(value, count of events) per group ("" without group_by) from a search response."""
    total = response.get("hits", {}).get("total", 0)
    count = int(total.get("value", 0) if isinstance(total, Mapping) else total)
    aggs = response.get("aggregations", {})
    if not options.group_by:
        value = float(count) if options.metric is None else _metric_value(aggs, options)
        return {"": (value, count)}
    out: dict[str, tuple[float | None, int]] = {}
    for bucket in aggs.get("groups", {}).get("buckets", []):
        key = str(bucket.get("key_as_string", bucket["key"]))
        part = bucket.get("recent", bucket)
        n = int(part.get("doc_count", 0))
        out[key] = (float(n) if options.metric is None else _metric_value(part, options), n)
    return out


def rison_string(text: str) -> str:
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def dashboard_url(base: str | None, options: SearchOptions, start: datetime, end: datetime, group: str) -> str | None:
    """A Kibana / OpenSearch Dashboards Discover link showing the rule's events in the window."""
    if not base:
        return None
    lucene = options.query or "*"
    if options.group_by and group:
        escaped = group.replace("\\", "\\\\").replace('"', '\\"')
        lucene = f'({lucene}) AND {options.group_by}:"{escaped}"'
    g = f"(time:(from:{rison_string(to_text(start) or '')},to:{rison_string(to_text(end) or '')}))"
    a = f"(query:(language:lucene,query:{rison_string(lucene)}))"
    safe = "(),:!'*"
    return f"{base.rstrip('/')}/app/discover#/?_g={urllib.parse.quote(g, safe=safe)}&_a={urllib.parse.quote(a, safe=safe)}"


def _describe(options: SearchOptions) -> str:
    if options.metric is not None:
        return options.metric.describe()
    return "events"


def judge(rule: Rule, ctx: EvalContext, response: Mapping[str, Any], start: datetime, end: datetime,
          dashboards: str | None) -> Evaluation:
    options: SearchOptions = rule.options
    seen = values(options, response)
    observed = tuple(sorted(seen)) if options.group_by else ()  # groups with events in the searched range
    if options.group_by and options.threshold.below is not None:
        # A group seen before that went quiet counts as zero: "team X stopped logging".
        for group in ctx.observed.get(rule.name, frozenset()) | ctx.active.get(rule.name, frozenset()):
            if group and group not in seen:
                seen[group] = (0.0 if options.metric is None else None, 0)
    findings = []
    for group, (value, count) in sorted(seen.items()):
        level = None if value is None else options.threshold.classify(value)
        if level is None or value is None:
            continue
        what = _describe(options)
        where = f" for {options.group_by}={group}" if options.group_by else ""
        shown = f"{value:g}" if options.metric is None else f"{value:.4g}"
        summary = f"{what} {shown}{where} in the last {format_duration(options.window)} ({options.threshold.describe()})"
        details = {
            "count": count, "threshold": options.threshold.describe(), "window": format_duration(options.window),
            "index": options.index, "query": options.query or "", "start": to_text(start), "end": to_text(end),
            "metric": options.metric.describe() if options.metric else "count",
        }
        link = dashboard_url(dashboards, options, start, end, group)
        if link:
            details["dashboard_url"] = link
        findings.append(Finding(group=group, value=value if options.metric else int(value), summary=summary,
                                severity=level.severity, details=details))
    return Evaluation(findings=tuple(findings), observed=observed)


def sample_request(options: SearchOptions, start: datetime, end: datetime, group: str) -> dict[str, Any]:
    body_query = query(options, start, end)
    if options.group_by and group:
        body_query["bool"]["filter"].append({"term": {options.group_by: group}})
    body: dict[str, Any] = {"size": options.sample, "query": body_query,
                            "sort": [{options.timestamp_field: {"order": "desc"}}]}
    if options.sample_fields:
        body["_source"] = list(options.sample_fields)
    return body


def evaluate(rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
    """Evaluate search rules sharing one source: one ``_msearch`` for all, one more for samples."""
    from watchdog.sources.search import SearchRequest

    requests = []
    windows = {}
    for rule in rules:
        start, end = window(rule.options, ctx.now)
        windows[rule.name] = (start, end)
        earliest = end - lookback(rule.options) if looks_back(rule.options) else start
        index, ignore = expand_index(rule.options.index, earliest, end)
        requests.append(SearchRequest(index, search_body(rule.options, start, end), ignore))
    responses = source.msearch(requests)
    dashboards = getattr(getattr(source, "config", None), "dashboards_url", None)
    out: dict[str, Evaluation | Exception] = {}
    wanted: list[tuple[str, Finding, Any]] = []
    for rule, request, response in zip(rules, requests, responses, strict=True):
        if isinstance(response, Exception):
            out[rule.name] = response
            continue
        start, end = windows[rule.name]
        evaluation = judge(rule, ctx, response, start, end, dashboards)
        out[rule.name] = evaluation
        if rule.options.sample:
            fresh = [f for f in evaluation.findings if f.group not in ctx.active.get(rule.name, frozenset())]
            for finding in fresh[:MAX_SAMPLE_GROUPS]:
                wanted.append((rule.name, finding, SearchRequest(request.index, sample_request(
                    rule.options, start, end, finding.group), request.ignore_unavailable)))
    if wanted:
        _attach_samples(out, wanted, source)
    return out


def _attach_samples(out: dict[str, Evaluation | Exception], wanted: list[tuple[str, Finding, Any]], source: Any) -> None:
    try:
        responses = source.msearch([request for _, _, request in wanted])
    except Exception:  # samples are a courtesy: the alert goes out without them
        return
    samples: dict[tuple[str, str], list[Any]] = {}
    for (rule, finding, _), response in zip(wanted, responses, strict=True):
        if not isinstance(response, Exception):
            samples[(rule, finding.group)] = [hit.get("_source", {}) for hit in response.get("hits", {}).get("hits", [])]
    for rule_name, evaluation in list(out.items()):
        if isinstance(evaluation, Exception):
            continue
        findings = tuple(
            Finding(group=f.group, value=f.value, summary=f.summary, severity=f.severity,
                    details={**f.details, "samples": samples[(rule_name, f.group)]})
            if (rule_name, f.group) in samples else f for f in evaluation.findings)
        out[rule_name] = Evaluation(findings=findings, observed=evaluation.observed, facts=evaluation.facts)


class SearchRuleType(RuleType):
    """What ``threshold`` and ``metric`` share: options, batching, evaluation."""

    source_type: ClassVar[str] = "search"
    batches: ClassVar[bool] = True

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> SearchOptions:
        return SearchOptions.from_mapping(data)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return evaluate(rules, source, ctx)
