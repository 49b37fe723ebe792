"""Evaluation shared by the search rule types: windows, indices, queries, groups, findings, samples.

Every search rule of a batch (``threshold``, ``metric``, ``ratio`` and
``spike`` alike) becomes one search in a single ``_msearch``: counting uses
``size: 0`` and aggregations; example events are fetched (in one more
``_msearch``) only for groups that just started to breach. Each rule type
says how its search is built (``body``) and how a response becomes a value
per group (``readings``); the rest is here.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from watchdog.durations import format_duration
from watchdog.rule import Rule
from watchdog.ruletypes import incremental_search, increments
from watchdog.ruletypes.base import NO_GRANTS, EvalContext, Evaluation, Finding, Grants, Observation, RuleType
from watchdog.ruletypes.search_options import SearchOptions
from watchdog.times import to_text

# A grouped "below" rule also looks back this far to learn which groups exist,
# so a group that went quiet fires even on the first run after a restart.
MIN_LOOKBACK = timedelta(hours=1)
MAX_LOOKBACK = timedelta(hours=24)
LOOKBACK_WINDOWS = 4
MAX_INDEX_NAMES = 60  # beyond this many dated indices, a wildcard is cheaper to send
MAX_SAMPLE_GROUPS = 10
# More new alerts than this in one batch is a burst: it goes out as a digest, which shows no example events, so
# none are fetched (the extra search would only delay the burst's message).
MAX_SAMPLE_SEARCHES = 20
_STRFTIME = re.compile(r"%[a-zA-Z]")


def window(options: SearchOptions, now: datetime) -> tuple[datetime, datetime]:
    """[now - delay - window, now - delay]."""
    end = now - options.delay
    return end - options.window, end


def looks_back(options: SearchOptions) -> bool:
    """Whether a grouped flatline (count or metric ``below``) also looks back for groups that went quiet."""
    plain = options.fraction is None and options.baseline is None
    return plain and bool(options.group_by) and options.threshold.below is not None


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


def time_range(options: SearchOptions, start: datetime, end: datetime) -> dict[str, Any]:
    """The clause selecting events in [start, end)."""
    return {"range": {options.timestamp_field: {
        "gte": to_text(start), "lt": to_text(end), "format": "strict_date_optional_time"}}}


def query(options: SearchOptions, start: datetime, end: datetime) -> dict[str, Any]:
    return {"bool": {"filter": [time_range(options, start, end), *options.selector.clauses()]}}


# --- groups ---------------------------------------------------------------------------------------------------


def group_label(fields: Sequence[str], parts: Sequence[str]) -> str:
    """The alert group of a bucket: the value for one field, ``service=api, region=eu`` for several."""
    if len(fields) == 1:
        return parts[0]
    return ", ".join(f"{name}={value}" for name, value in zip(fields, parts, strict=True))


def groups_agg(options: SearchOptions, sub: Mapping[str, Any] | None, multi_terms: bool = True) -> dict[str, Any]:
    """The bucket aggregation of ``group_by``: terms for one field; multi_terms (or composite) for several.

    ``multi_terms`` (OpenSearch 2.1+, Elasticsearch 7.12+) keeps the
    ``max_groups`` busiest groups, as terms does; ``composite`` (every
    version) is used where it is missing and keeps the first ``max_groups``
    in key order.
    """
    fields = options.group_by
    agg: dict[str, Any]
    if len(fields) == 1:
        agg = {"terms": {"field": fields[0], "size": options.max_groups}}
    elif multi_terms:
        agg = {"multi_terms": {"terms": [{"field": f} for f in fields], "size": options.max_groups}}
    else:
        agg = {"composite": {"size": options.max_groups,
                             "sources": [{f"g{i}": {"terms": {"field": f}}} for i, f in enumerate(fields)]}}
    if sub:
        agg["aggs"] = dict(sub)
    return agg


def bucket_parts(bucket: Mapping[str, Any], fields: Sequence[str]) -> tuple[str, ...]:
    """The field values of a terms, multi_terms or composite bucket."""
    key = bucket.get("key")
    if isinstance(key, Mapping):
        return tuple(str(key.get(f"g{i}")) for i in range(len(fields)))
    if isinstance(key, list):
        return tuple(str(k) for k in key)
    return (str(bucket.get("key_as_string", key)),)


def group_buckets(options: SearchOptions, aggs: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], Mapping[str, Any]]]:
    """(label, field values, bucket) of every group in a response's ``groups`` aggregation."""
    out = []
    for bucket in aggs.get("groups", {}).get("buckets", []):
        parts = bucket_parts(bucket, options.group_by)
        out.append((group_label(options.group_by, parts), parts, bucket))
    return out


@dataclass(frozen=True)
class Reading:
    """The value of one group in one evaluation, as a rule type reads it from its response.

    ``value`` is what the threshold compares (None: nothing to compare, no
    finding); ``what`` names it in the alert ("events 30", "error ratio 12.5%
    (25 of 200)"); ``facts`` go into the alert's details.
    """

    value: float | None
    count: int
    parts: tuple[str, ...] = ()
    what: str = ""
    versus: str = ""  # what it is compared with, after the window ("vs 40 the same window 7d earlier: 12.5x")
    facts: Mapping[str, Any] = field(default_factory=dict)


def _metric_agg(options: SearchOptions) -> dict[str, Any]:
    metric = options.metric
    assert metric is not None
    if metric.agg == "percentile":
        return {"percentiles": {"field": metric.field, "percents": [metric.percent]}}
    return {metric.agg: {"field": metric.field}}


def metric_aggs(options: SearchOptions) -> dict[str, Any] | None:
    """``{"metric": ...}`` for a rule with a metric, else None (the value is a count)."""
    return {"metric": _metric_agg(options)} if options.metric is not None else None


def search_body(options: SearchOptions, start: datetime, end: datetime, multi_terms: bool = True) -> dict[str, Any]:
    """The counting (or aggregating) search of a threshold or metric rule for one evaluation."""
    inner = metric_aggs(options)
    if looks_back(options):
        # Groups over the lookback; each bucket's "recent" part is the window itself.
        recent: dict[str, Any] = {"filter": time_range(options, start, end)}
        if inner:
            recent["aggs"] = inner
        return {"size": 0, "track_total_hits": True, "query": query(options, end - lookback(options), end),
                "aggs": {"groups": groups_agg(options, {"recent": recent}, multi_terms)}}
    body: dict[str, Any] = {"size": 0, "track_total_hits": True, "query": query(options, start, end)}
    if options.group_by:
        body["aggs"] = {"groups": groups_agg(options, inner, multi_terms)}
    elif inner:
        body["aggs"] = inner
    return body


def metric_value(aggs: Mapping[str, Any], options: SearchOptions) -> float | None:
    metric = aggs.get("metric", {})
    if options.metric is not None and options.metric.agg == "percentile":
        values = metric.get("values", {})
        value = next(iter(values.values()), None) if values else None
    else:
        value = metric.get("value")
    return None if value is None else float(value)


def total_hits(response: Mapping[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total.get("value", 0) if isinstance(total, Mapping) else total)


def count_readings(options: SearchOptions, response: Mapping[str, Any]) -> dict[str, Reading]:
    """The count (or metric) per group ("" without group_by) of a threshold or metric search."""

    def reading(part: Mapping[str, Any], count: int, parts: tuple[str, ...]) -> Reading:
        value = float(count) if options.metric is None else metric_value(part, options)
        if options.metric is None:
            what = f"events {count}"
        else:
            what = f"{options.metric.describe()} {'none' if value is None else f'{value:.4g}'}"
        return Reading(value=value, count=count, parts=parts, what=what)

    aggs = response.get("aggregations", {})
    if not options.group_by:
        return {"": reading(aggs, total_hits(response), ())}
    out: dict[str, Reading] = {}
    for label, parts, bucket in group_buckets(options, aggs):
        part = bucket.get("recent", bucket)
        out[label] = reading(part, int(part.get("doc_count", 0)), parts)
    return out


def kind(rule: Rule) -> type[SearchRuleType]:
    """The search rule type of ``rule`` (threshold, metric, ratio, spike)."""
    from watchdog.ruletypes import RULE_TYPES

    found = RULE_TYPES[rule.type]
    assert issubclass(found, SearchRuleType)
    return found


def values(rule: Rule, response: Mapping[str, Any]) -> dict[str, tuple[float | None, int]]:
    """(value, count of events) per group ("" without group_by) from the response to ``rule``'s search."""
    return {g: (r.value, r.count) for g, r in kind(rule).readings(rule.options, response).items()}


def rison_string(text: str) -> str:
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def _lucene_phrase(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dashboard_url(base: str | None, options: SearchOptions, start: datetime, end: datetime,
                  parts: Sequence[str] = ()) -> str | None:
    """A Kibana / OpenSearch Dashboards Discover link showing the rule's events (of the group) in the window."""
    if not base:
        return None
    lucene = options.query or "*"
    if options.fraction is not None and options.fraction.numerator.query:
        lucene = f"({lucene}) AND ({options.fraction.numerator.query})"
    if options.group_by and len(parts) == len(options.group_by):
        terms = " AND ".join(f"{name}:{_lucene_phrase(value)}" for name, value in zip(options.group_by, parts, strict=True))
        lucene = f"({lucene}) AND {terms}"
    g = f"(time:(from:{rison_string(to_text(start) or '')},to:{rison_string(to_text(end) or '')}))"
    a = f"(query:(language:lucene,query:{rison_string(lucene)}))"
    safe = "(),:!'*"
    return f"{base.rstrip('/')}/app/discover#/?_g={urllib.parse.quote(g, safe=safe)}&_a={urllib.parse.quote(a, safe=safe)}"


def _where(options: SearchOptions, group: str) -> str:
    if not options.group_by:
        return ""
    if len(options.group_by) == 1:
        return f" for {options.group_by[0]}={group}"
    return f" for {group}"


def judge(rule: Rule, ctx: EvalContext, response: Mapping[str, Any], start: datetime, end: datetime,
          dashboards: str | None) -> Evaluation:
    """The findings of one search rule from its response (pure)."""
    options: SearchOptions = rule.options
    seen = kind(rule).readings(options, response)
    observed = tuple(sorted(seen)) if options.group_by else ()  # groups with events in the searched range
    if looks_back(options):
        # A group seen before that went quiet counts as zero: "team X stopped logging".
        for group in ctx.observed.get(rule.name, frozenset()) | ctx.active.get(rule.name, frozenset()):
            if group and group not in seen:
                value = 0.0 if options.metric is None else None
                seen[group] = Reading(value=value, count=0, what="events 0" if value is not None else "")
    for group in ctx.active.get(rule.name, frozenset()):
        if group not in seen:  # an alerting group with no events in the window now: its count is zero
            value = 0.0 if options.metric is None and options.fraction is None and options.baseline is None else None
            seen[group] = Reading(value=value, count=0, what="events 0" if value is not None else "")
    findings = []
    present = []
    for group, reading in sorted(seen.items()):
        level = None if reading.value is None else options.threshold.classify(reading.value)
        summary = f"{reading.what}{_where(options, group)} in the last {format_duration(options.window)}" \
                  f"{reading.versus} ({options.threshold.describe()})"
        details: dict[str, Any] = {
            "count": reading.count, "threshold": options.threshold.describe(), "window": format_duration(options.window),
            "index": options.index, "query": options.query or "", "start": to_text(start), "end": to_text(end),
            "metric": options.metric.describe() if options.metric else "count", **reading.facts,
        }
        if reading.parts and len(options.group_by) > 1:
            details["group_fields"] = dict(zip(options.group_by, reading.parts, strict=True))
        link = dashboard_url(dashboards, options, start, end, reading.parts)
        if link:
            details["dashboard_url"] = link
        value = reading.value
        shown: float | None = int(value) if options.metric is None and options.fraction is None \
            and options.baseline is None and value is not None else value
        if shown is not None and not math.isfinite(shown):
            shown = None  # a spike from an empty baseline: the summary says so
        if level is None:  # the condition does not hold: what a resolution of this group states
            now = f"{summary} now" if reading.what else \
                f"no value{_where(options, group)} in the last {format_duration(options.window)} now " \
                f"({options.threshold.describe()})"
            present.append(Observation(group=group, value=shown, summary=now, details=details))
            continue
        findings.append(Finding(group=group, value=shown, summary=summary, severity=level.severity, details=details))
    return Evaluation(findings=tuple(findings), observed=observed, present=tuple(present))


def sample_request(options: SearchOptions, start: datetime, end: datetime, parts: Sequence[str]) -> dict[str, Any]:
    """The search for a finding's example events: the newest events of its group in the window."""
    body_query = query(options, start, end)
    if options.fraction is not None:  # a ratio's examples are numerator events (the errors, not the requests)
        body_query["bool"]["filter"].extend(options.fraction.numerator.clauses())
    for name, value in zip(options.group_by, parts, strict=False):
        body_query["bool"]["filter"].append({"term": {name: value}})
    body: dict[str, Any] = {"size": options.sample, "query": body_query,
                            "sort": [{options.timestamp_field: {"order": "desc"}}]}
    if options.sample_fields:
        body["_source"] = list(options.sample_fields)
    return body


def _request(options: SearchOptions, spans: Sequence[tuple[datetime, datetime]], body: dict[str, Any]) -> Any:
    """A SearchRequest of ``body`` on the dated indices that can hold ``spans``."""
    from watchdog.sources.search import SearchRequest

    names: list[str] = []
    ignore = False
    for lo, hi in spans:
        index, ignore_part = expand_index(options.index, lo, hi)
        ignore = ignore or ignore_part
        names += [name for name in index.split(",") if name not in names]
    return SearchRequest(",".join(names), body, ignore)


def request(rule: Rule, now: datetime, multi_terms: bool = True) -> Any:
    """The one SearchRequest that answers ``rule``'s evaluation at ``now`` (``test-rule``'s replay per tick)."""
    options: SearchOptions = rule.options
    start, end = window(options, now)
    return _request(options, kind(rule).spans(options, start, end), kind(rule).body(options, start, end, multi_terms))


def requests(rule: Rule, now: datetime, multi_terms: bool = True) -> list[Any]:
    """The SearchRequests of ``rule``'s evaluation at ``now`` as the daemon sends them (``combine`` reads them back)."""
    options: SearchOptions = rule.options
    start, end = window(options, now)
    return [_request(options, spans, body) for spans, body in kind(rule).searches(options, start, end, multi_terms)]


def _incremental(rule: Rule, plans: Sequence[increments.Plan], multi_terms: bool) -> list[Any]:
    """The SearchRequests of an incremental evaluation: each plan's pieces (a spike's current window, then baseline)."""
    options: SearchOptions = rule.options
    return [_request(options, plan.spans(), incremental_search.body(options, plan, multi_terms)) for plan in plans]


def evaluate(rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
    """Evaluate search rules (of any search type) sharing one source: one ``_msearch`` for all, one more for samples."""
    multi_terms = bool(getattr(source, "multi_terms", lambda: True)())
    plans = increments.pace_rebuilds([increments.plans(rule, ctx, rule.settle) if increments.pays(rule, rule.settle)
                                      else None for rule in rules])
    searches = [requests(rule, ctx.now, multi_terms) if mine is None else _incremental(rule, mine, multi_terms)
                for rule, mine in zip(rules, plans, strict=True)]
    answers = iter(source.msearch([one for mine in searches for one in mine]))
    responses: list[Any] = []
    stamps: dict[str, dict[str, Any]] = {}  # facts of incremental rules: which cached buckets they leave
    for rule, planned, mine in zip(rules, plans, searches, strict=True):
        answered = [next(answers) for _ in mine]
        failed = next((one for one in answered if isinstance(one, Exception)), None)
        try:
            if failed is not None:
                responses.append(failed)
            elif planned is not None:
                states = [increments.absorb(plan, rule.options, one) for plan, one in zip(planned, answered, strict=True)]
                # A spike's windows (current, baseline) read back as its two plain searches' answers.
                responses.append(kind(rule).combine(rule.options, [incremental_search.response(s, rule.options) for s in states]))
                dropped = max(state.dropped for state in states)
                stamps[rule.name] = {increments.FACT: increments.stamp(states),
                                     **({"groups_dropped": dropped} if dropped else {})}
            else:
                responses.append(kind(rule).combine(rule.options, answered))
        except Exception as exc:  # answers this rule cannot read are this rule's error
            if planned is not None:  # (its buckets may hold part of what it could not read: rebuilt next time)
                increments.forget([(rule.source, rule.name)])
            responses.append(exc)
    dashboards = getattr(getattr(source, "config", None), "dashboards_url", None)
    out: dict[str, Evaluation | Exception] = {}
    wanted: list[tuple[str, Finding, Any]] = []
    for rule, response in zip(rules, responses, strict=True):
        if isinstance(response, Exception):
            out[rule.name] = response
            continue
        start, end = window(rule.options, ctx.now)
        try:
            evaluation = judge(rule, ctx, response, start, end, dashboards)
        except Exception as exc:  # an answer this rule cannot read is this rule's error, not the batch's
            out[rule.name] = exc
            continue
        if rule.name in stamps:
            evaluation = replace(evaluation, facts={**evaluation.facts, **stamps[rule.name]})
        out[rule.name] = evaluation
        if rule.options.sample:
            fresh = [f for f in evaluation.findings if f.group not in ctx.active.get(rule.name, frozenset())]
            for finding in fresh[:MAX_SAMPLE_GROUPS]:
                parts = _finding_parts(rule.options, finding)
                if parts is None:
                    continue
                # (the indices of the whole window: an incremental search read only its last steps')
                wanted.append((rule.name, finding, _request(rule.options, [(start, end)],
                                                            sample_request(rule.options, start, end, parts))))
    if 0 < len(wanted) <= MAX_SAMPLE_SEARCHES:
        _attach_samples(out, wanted, source)
    return out


def _finding_parts(options: SearchOptions, finding: Finding) -> tuple[str, ...] | None:
    """The group's field values of a finding (None when unknown: a quiet group seen only in earlier runs)."""
    if not options.group_by:
        return ()
    if len(options.group_by) == 1:
        return (finding.group,)
    fields = finding.details.get("group_fields")
    if not isinstance(fields, Mapping):
        return None
    return tuple(str(fields[name]) for name in options.group_by)


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
        out[rule_name] = replace(evaluation, findings=findings)


class SearchRuleType(RuleType):
    """What the search rule types share: options, batching into one ``_msearch``, evaluation.

    ``threshold`` and ``metric`` use these defaults; ``ratio`` and ``spike``
    override ``body``, ``spans`` and ``readings``.
    """

    source_type: ClassVar[str] = "search"
    batches: ClassVar[bool] = True
    batch_key: ClassVar[str | None] = "search"  # every search type due together on a source shares one _msearch

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> SearchOptions:
        return SearchOptions.from_mapping(data)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return evaluate(rules, source, ctx)

    @classmethod
    def body(cls, options: SearchOptions, start: datetime, end: datetime, multi_terms: bool = True) -> dict[str, Any]:
        """The search body of one evaluation over the window [start, end)."""
        return search_body(options, start, end, multi_terms)

    @classmethod
    def spans(cls, options: SearchOptions, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The time ranges the search reads (to choose the dated indices)."""
        return [(end - lookback(options) if looks_back(options) else start, end)]

    @classmethod
    def searches(cls, options: SearchOptions, start: datetime, end: datetime,
                 multi_terms: bool = True) -> list[tuple[list[tuple[datetime, datetime]], dict[str, Any]]]:
        """The searches the daemon sends for one evaluation, as (time ranges read, body); one by default."""
        return [(cls.spans(options, start, end), cls.body(options, start, end, multi_terms))]

    @classmethod
    def combine(cls, options: SearchOptions, responses: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """The answers to ``searches`` as one response to ``body`` (what ``readings`` reads)."""
        return responses[0]

    @classmethod
    def readings(cls, options: SearchOptions, response: Mapping[str, Any]) -> dict[str, Reading]:
        """The value per group ("" without group_by) from a response to ``body``."""
        return count_readings(options, response)
