"""``watchdog test-rule``: replay a rule over real data, with no side effects.

The rule's schedule is replayed tick by tick through the same lifecycle as the
daemon (pending, firing, repeat, resolved), and every notification is rendered
as it would be sent. Search rules are replayed from one aggregation query (a
date_histogram at the schedule's step) when the window and delay are multiples
of the step and the value can be assembled from buckets; otherwise one search
per tick, batched in ``_msearch``. Freshness and DMS rules evaluate the
present only. Nothing is written: no Slack request (unless ``--send``), no state
database, no mutating AWS call (remediation is planned, never run), only
read-only SQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from watchdog import dependencies as deps
from watchdog import lifecycle, testrule_learned
from watchdog.escape import terminal
from watchdog.explained import change_of, render_routed
from watchdog.notify.render import format_value, render, render_step
from watchdog.notify.routing import Router
from watchdog.notify.slack_blocks import message_blocks
from watchdog.rule import Rule, Schedule
from watchdog.ruletypes import RULE_TYPES
from watchdog.ruletypes import search as searching
from watchdog.ruletypes.base import EvalContext, Evaluation, Step, resolution
from watchdog.ruletypes.learned import MemoryBaselines
from watchdog.ruletypes.ratio import counts as ratio_counts
from watchdog.ruletypes.ratio import split_aggs
from watchdog.ruletypes.search_options import SearchOptions
from watchdog.times import from_text, to_text

SEARCH_TYPES = ("threshold", "metric", "ratio", "spike")
ASSEMBLED_METRICS = (None, "sum", "min", "max", "avg")  # values that can be built from histogram buckets
# A replay holds at most this many ticks (35 days at 1-minute ticks); past it the oldest ticks are left out, and said so.
MAX_TICKS = 50_000
# Ticks per aggregation request: keeps each date histogram well under the servers' bucket limits (65,536 by default).
AGGREGATED_TICKS_PER_REQUEST = 5_000


@dataclass
class Replay:
    rule: str
    start: datetime
    end: datetime
    ticks: list[datetime] = field(default_factory=list)
    mode: str = "present"  # aggregated | per-tick | present
    requests: int = 0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    series: list[tuple[datetime, float | None]] = field(default_factory=list)  # the value per tick (max over groups)
    payloads: list[dict[str, Any]] = field(default_factory=list)  # rendered payloads, for --send
    note: str = ""
    breaching: int = 0  # ticks at which the condition held for at least one group
    left_out: int = 0  # the oldest ticks of the range beyond MAX_TICKS, not replayed
    router: Router | None = field(default=None, repr=False)  # the config's routes: each notification's receivers

    @property
    def covered_start(self) -> datetime:
        """Where the replayed ticks begin: ``start`` unless the oldest ticks were left out."""
        return self.ticks[0] if self.left_out and self.ticks else self.start

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "start": to_text(self.start), "end": to_text(self.end), "ticks": len(self.ticks),
                "ticks_left_out": self.left_out, "replayed_from": to_text(self.covered_start),
                "mode": self.mode, "requests": self.requests, "breaching_ticks": self.breaching,
                "transitions": self.transitions,
                "notifications": self.notifications, "actions": self.actions, "errors": self.errors,
                **({"note": self.note} if self.note else {})}


def ticks_for(schedule: Schedule, start: datetime, end: datetime, limit: int = MAX_TICKS) -> tuple[list[datetime], int]:
    """The newest ``limit`` planned runs in [start, end], and how many older ones were left out.

    Interval schedules are aligned to multiples of their step. When the range
    holds more than ``limit`` ticks, the oldest are the ones left out: what
    happened last is what a user replays a rule to see.
    """
    if schedule.every is not None:
        step = schedule.every.total_seconds()
        first = math.ceil(start.timestamp() / step)
        last = math.floor(end.timestamp() / step)
        total = max(0, last - first + 1)
        kept = min(total, limit)
        return [datetime.fromtimestamp((last - kept + 1 + i) * step, UTC) for i in range(kept)], total - kept
    from zoneinfo import ZoneInfo

    # Walk back from the end, so a long range never costs more than ``limit`` steps plus one.
    it = croniter(schedule.cron, (end + timedelta(microseconds=1)).astimezone(ZoneInfo(schedule.timezone)))
    newest_first: list[datetime] = []
    while True:
        moment = it.get_prev(datetime).astimezone(UTC)
        if moment < start:
            return newest_first[::-1], 0
        if len(newest_first) == limit:
            return newest_first[::-1], _count_cron(it, moment, start) + 1
        newest_first.append(moment)


def _count_cron(it: croniter, moment: datetime, start: datetime) -> int:
    """How many more runs of ``it`` lie in [start, moment) (cheap enough: only past the cap)."""
    count = 0
    while True:
        moment = it.get_prev(datetime).astimezone(UTC)
        if moment < start:
            return count
        count += 1


class MemoryJournal:
    """A journal that keeps steps in memory: remediation is planned and reported, never persisted."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.steps: list[tuple[str, dict[str, Any], Step]] = []

    def load(self, rule: Rule) -> dict[str, dict[str, Any]]:
        return dict(self.records)

    def record(self, rule: Rule, group: str, record: Mapping[str, Any], step: Step | None) -> None:
        self.records[group] = dict(record)
        if step is not None:
            self.steps.append((group, dict(record), step))

    def decision(self, rule: Rule, episode: str) -> tuple[str, str] | None:
        return None  # a replay never asks anyone: it shows the approval it would request


# --- search rules: the values at every tick ------------------------------------------------------------------


def can_aggregate(rule: Rule) -> bool:
    """Whether the rule's value at every tick can be assembled from one date histogram at the schedule's step.

    Needs an interval schedule; window, delay (and a flatline's lookback, a
    spike's offset) in whole steps; a value built from bucket counts (a
    count, a ratio of counts) or from sum, min, max, avg; one group_by field
    at most.
    """
    options: SearchOptions = rule.options
    step = rule.schedule.every
    if step is None or len(options.group_by) > 1:
        return False
    spans = [options.window, options.delay] + ([searching.lookback(options)] if searching.looks_back(options) else [])
    if options.baseline is not None:
        spans.append(options.baseline.offset)
    metric = options.metric.agg if options.metric else None
    return metric in ASSEMBLED_METRICS and all(span % step == timedelta(0) for span in spans)


def _bucket_aggs(options: SearchOptions) -> dict[str, Any]:
    if options.fraction is not None:
        return split_aggs(options)
    metric = options.metric
    if metric is None:
        return {}
    if metric.agg == "avg":
        return {"s": {"sum": {"field": metric.field}}, "n": {"value_count": {"field": metric.field}}}
    return {"m": {metric.agg: {"field": metric.field}}}


def aggregated_responses(rule: Rule, source: Any, ticks: Sequence[datetime]) -> tuple[list[dict[str, Any]], int]:
    """One search per AGGREGATED_TICKS_PER_REQUEST ticks; per tick, a response shaped like the live search's."""
    responses: list[dict[str, Any]] = []
    requests = 0
    for at in range(0, len(ticks), AGGREGATED_TICKS_PER_REQUEST):
        part, sent = _aggregated_chunk(rule, source, ticks[at:at + AGGREGATED_TICKS_PER_REQUEST])
        responses += part
        requests += sent
    return responses, requests


def _aggregated_chunk(rule: Rule, source: Any, ticks: Sequence[datetime]) -> tuple[list[dict[str, Any]], int]:
    from watchdog.sources.search import SearchRequest

    options: SearchOptions = rule.options
    assert rule.schedule.every is not None
    step = rule.schedule.every
    span = searching.lookback(options) if searching.looks_back(options) else options.window
    first, last = ticks[0] - options.delay - span, ticks[-1] - options.delay
    ranges = [(first, last)]
    if options.baseline is not None:  # a spike also reads every tick's window offset earlier
        offset = options.baseline.offset
        ranges = [(first - offset, last - offset), (first, last)]
    histogram: dict[str, Any] = {"date_histogram": {"field": options.timestamp_field, "min_doc_count": 1,
                                                    "fixed_interval": f"{int(step.total_seconds())}s"}}
    if _bucket_aggs(options):
        histogram["aggs"] = _bucket_aggs(options)
    if options.group_by:
        aggs = {"groups": {"terms": {"field": options.group_by[0], "size": max(options.max_groups, 1000)}, "aggs": {"h": histogram}}}
    else:
        aggs = {"h": histogram}
    within_ranges = {"bool": {"should": [searching.time_range(options, lo, hi) for lo, hi in ranges],
                              "minimum_should_match": 1}}
    query = {"bool": {"filter": [within_ranges, *options.selector.clauses()]}}
    body = {"size": 0, "track_total_hits": True, "query": query, "aggs": aggs}
    names: list[str] = []
    ignore = False
    for lo, hi in ranges:
        index, ignore_part = searching.expand_index(options.index, lo, hi)
        ignore = ignore or ignore_part
        names += [name for name in index.split(",") if name not in names]
    (response,) = source.msearch([SearchRequest(",".join(names), body, ignore)])
    if isinstance(response, Exception):
        raise response
    series: dict[str, dict[int, Mapping[str, Any]]] = {}
    if options.group_by:
        for group in response.get("aggregations", {}).get("groups", {}).get("buckets", []):
            key = str(group.get("key_as_string", group["key"]))
            series[key] = {int(b["key"]): b for b in group["h"]["buckets"]}
    else:
        series[""] = {int(b["key"]): b for b in response.get("aggregations", {}).get("h", {}).get("buckets", [])}
    return [_tick_response(options, series, tick, step) for tick in ticks], 1


def _combine(options: SearchOptions, buckets: list[Mapping[str, Any]]) -> tuple[int, float | None]:
    count = sum(int(b["doc_count"]) for b in buckets)
    metric = options.metric
    if metric is None:
        return count, float(count)
    if metric.agg == "avg":
        n = sum(int(b["n"]["value"] or 0) for b in buckets)
        return count, (sum(float(b["s"]["value"] or 0) for b in buckets) / n) if n else None
    values = [float(b["m"]["value"]) for b in buckets if b["m"].get("value") is not None]
    if not values:
        return count, (0.0 if metric.agg == "sum" else None)
    if metric.agg == "sum":
        return count, sum(values)
    return count, (min(values) if metric.agg == "min" else max(values))


def _tick_response(options: SearchOptions, series: Mapping[str, Mapping[int, Mapping[str, Any]]], tick: datetime,
                   step: timedelta) -> dict[str, Any]:
    end = tick - options.delay
    start = end - options.window
    early = end - searching.lookback(options) if searching.looks_back(options) else start

    step_ms = int(step.total_seconds() * 1000)

    def within(buckets: Mapping[int, Mapping[str, Any]], since: datetime, until: datetime = end) -> list[Mapping[str, Any]]:
        # Bucket keys are multiples of the step, and so are the window's ends (can_aggregate checked it): look the
        # few keys up rather than scanning every bucket of the replay at every tick.
        lo, hi = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
        first = -(-lo // step_ms) * step_ms
        return [buckets[k] for k in range(first, hi, step_ms) if k in buckets]

    if options.fraction is not None or options.baseline is not None:
        return _tick_parts(options, series, within, start, end)
    if not options.group_by:
        count, value = _combine(options, within(series.get("", {}), start))
        return {"hits": {"total": {"value": count}}, "aggregations": {"metric": {"value": value}}}
    rows: list[dict[str, Any]] = []
    total = 0
    for group, buckets in series.items():
        seen = within(buckets, early)
        if not seen:
            continue
        recent_count, value = _combine(options, within(buckets, start))
        if searching.looks_back(options):
            rows.append({"key": group, "doc_count": sum(int(b["doc_count"]) for b in seen),
                         "recent": {"doc_count": recent_count, "metric": {"value": value}}})
        elif recent_count:
            rows.append({"key": group, "doc_count": recent_count, "metric": {"value": value}})
        total += recent_count
    rows.sort(key=lambda r: (-int(r["doc_count"]), str(r["key"])))
    return {"hits": {"total": {"value": total}}, "aggregations": {"groups": {"buckets": rows[:options.max_groups]}}}


def _tick_parts(options: SearchOptions, series: Mapping[str, Mapping[int, Mapping[str, Any]]],
                within: Callable[..., list[Mapping[str, Any]]], start: datetime, end: datetime) -> dict[str, Any]:
    """A ratio's or a spike's response at one tick, assembled from histogram buckets (shaped like the live one)."""

    def parts(buckets: Mapping[int, Mapping[str, Any]]) -> tuple[int, dict[str, Any]]:
        if options.fraction is not None:
            now = within(buckets, start)
            total = sum(int(b["doc_count"]) for b in now)
            sides = [ratio_counts(b, int(b["doc_count"])) for b in now]
            split = {"numerator": {"doc_count": sum(n for n, _ in sides)},
                     "denominator": {"doc_count": sum(d for _, d in sides)}}
            return total, split
        assert options.baseline is not None
        offset = options.baseline.offset
        out: dict[str, Any] = {}
        total = 0
        for side, lo, hi in (("current", start, end), ("baseline", start - offset, end - offset)):
            count, value = _combine(options, within(buckets, lo, hi))
            out[side] = {"doc_count": count, "metric": {"value": value}}
            total += count
        return total, out

    if not options.group_by:
        total, aggs = parts(series.get("", {}))
        return {"hits": {"total": {"value": total}}, "aggregations": aggs}
    rows: list[dict[str, Any]] = []
    total = 0
    for group, buckets in series.items():
        count, aggs = parts(buckets)
        if count:
            rows.append({"key": group, "doc_count": count, **aggs})
            total += count
    rows.sort(key=lambda r: (-int(r["doc_count"]), str(r["key"])))
    return {"hits": {"total": {"value": total}}, "aggregations": {"groups": {"buckets": rows[:options.max_groups]}}}


def per_tick_responses(rule: Rule, source: Any, ticks: Sequence[datetime]) -> tuple[list[Any], int]:
    """One search per tick, sent in ``_msearch`` batches: what the daemon would have run at each tick."""
    from watchdog.sources.search import MSEARCH_CHUNK

    multi_terms = bool(getattr(source, "multi_terms", lambda: True)())
    requests = [searching.request(rule, tick, multi_terms) for tick in ticks]
    return list(source.msearch(requests)), math.ceil(len(requests) / MSEARCH_CHUNK)


# --- the replay ----------------------------------------------------------------------------------------------


def _keep(replay: Replay, at: datetime, group: str, kind: str, payload: dict[str, Any]) -> None:
    """Record a notification as it would be sent: its text and its Slack blocks."""
    replay.payloads.append(payload)
    shown: dict[str, Any] = {"at": to_text(at), "group": group, "kind": kind, "text": payload["text"],
                             "blocks": message_blocks(payload)}
    if replay.router is not None:  # where it would go at that moment (time intervals included); nothing is sent
        routing = replay.router.for_payload(payload, kind, at)
        shown["receivers"] = list(routing.receivers)
        if routing.held:
            shown["held"] = [t.receiver for t in routing.held]
    replay.notifications.append(shown)


def _notify(replay: Replay, rule: Rule, notice: lifecycle.Notice) -> None:
    _keep(replay, notice.at, notice.group, notice.kind.value, render(rule, notice))


def _advance(replay: Replay, rule: Rule, states: dict[str, lifecycle.GroupState], evaluation: Evaluation, now: datetime,
             upstream: Upstreams | None = None) -> None:
    policy = lifecycle.Policy.of(rule)
    findings = {f.group: f for f in evaluation.findings}
    present = {o.group: o for o in evaluation.present}
    quiet = not rule.notify.enabled or RULE_TYPES[rule.type].acts
    routed: list[deps.Routed] = []
    firing_upstreams = upstream.at(now) if upstream is not None else []  # the same for every group of this tick
    for group in sorted(set(states) | set(findings)):
        if group not in findings and group in evaluation.kept:
            continue
        before = states.get(group)
        now_value = None  # what a resolution states, as the daemon states it: the value now
        if group not in findings and before is not None:
            now_value = resolution(RULE_TYPES.get(rule.type), rule, group, present.get(group))
        moved = lifecycle.step(policy, group, before, findings.get(group), now, silenced=quiet, present=now_value)
        if moved.state is None:
            states.pop(group, None)
        else:
            states[group] = moved.state
        for t in moved.transitions:
            replay.transitions.append({"at": to_text(t.at), "group": t.group, "from": t.from_, "to": t.to,
                                       "value": t.value, "severity": t.severity.value})
        if upstream is None:
            for notice in moved.notices:
                _notify(replay, rule, notice)
            continue
        # A rule that depends on others: its notices are routed as the daemon routes them (see ``dependencies``).
        after = moved.state
        change = change_of(group, before, after, moved.notices, quiet, now)
        decision = deps.decide(upstream.records.get(group), change, firing_upstreams, upstream.settle, now)
        if decision.record is None:
            upstream.records.pop(group, None)
        else:
            upstream.records[group] = decision.record
        if decision.changed_notified and after is not None:
            states[group] = replace(after, notified_at=now)
        routed.extend(decision.routed)
    if upstream is not None:
        for group, kind, _episode, payload in render_routed(rule, routed, RULE_TYPES[rule.type].firing_word,
                                                            upstream.channel):
            _keep(replay, now, group, kind, payload)


@dataclass
class Upstreams:
    """The upstream rules of a replayed rule, replayed over the same range: which of their alerts fire when."""

    refs: list[deps.Ref]
    settle: deps.Settle
    timelines: dict[str, list[tuple[datetime, str, bool]]] = field(default_factory=dict)  # rule -> (at, group, firing)
    channels: dict[str, str | None] = field(default_factory=dict)
    records: dict[str, deps.Explanation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def at(self, now: datetime) -> list[deps.Upstream]:
        """The upstream alerts firing at ``now`` that the refs name (their thread is named after the alert)."""
        firing: dict[str, list[deps.Upstream]] = {}
        for name, timeline in self.timelines.items():
            since: dict[str, datetime] = {}
            for at, group, fires in timeline:
                if at > now:
                    break
                if fires:
                    since.setdefault(group, at)
                else:
                    since.pop(group, None)
            firing[name] = [deps.Upstream(name, g, f"{name}/{g}@{to_text(t)}", t) for g, t in sorted(since.items())]
        return deps.matching(self.refs, firing)

    def channel(self, name: str) -> str | None:
        return self.channels.get(name)


def upstreams_of(rule: Rule, others: Sequence[Rule], sources: Any, start: datetime, end: datetime,
                 out: Replay) -> Upstreams | None:
    """Replay the rules ``rule`` depends on (``depends_on``, ``healed_when.fresh``) over the same range.

    Returns None when it depends on none. An upstream that records state
    only (``notify: []``) explains nothing, as in the daemon; one that
    evaluates the present only is known at the end of the range only.
    """
    implied = deps.implied((r.name, r.type, r.options) for r in [rule, *others])
    refs = [deps.Ref.parse(text) for text in rule.depends_on] + implied.get(rule.name, [])
    if not refs:
        return None
    settle = deps.Settle(duration=rule.depends_on_settle) if rule.depends_on_settle is not None else deps.DEFAULT_SETTLE
    upstreams = Upstreams(refs, settle)
    by_name = {r.name: r for r in others}
    for name in sorted({ref.rule for ref in refs}):
        upstream = by_name.get(name)
        if upstream is None:
            out.errors.append({"at": to_text(end), "message": f"depends_on names {name}, which is not a rule here"})
            continue
        upstreams.channels[name] = upstream.notify.channel
        if not upstream.notify.enabled and not RULE_TYPES[upstream.type].acts:
            continue  # it announces nothing, so it explains nothing
        try:
            result = replay(upstream, sources, start, end)
        except Exception as exc:
            out.errors.append({"at": to_text(end), "message": f"upstream rule {name} could not be replayed: {exc}"})
            continue
        timeline = [(from_text(t["at"]) or end, str(t["group"]), str(t["to"]).startswith("firing"))
                    for t in result.transitions]
        upstreams.timelines[name] = sorted(timeline, key=lambda item: item[0])
        if present_only(upstream) and not present_only(rule):
            upstreams.notes.append(f"upstream rule {name} evaluates the present only: its alerts are known at the end "
                                   "of the range only")
    return upstreams


def _tick_value(rule: Rule, response: Mapping[str, Any], known: frozenset[str],
                evaluation: Evaluation) -> float | None:
    """The value the sparkline shows for one tick: the group nearest to breaching.

    That is the highest value for ``above`` and the lowest for ``below``,
    counting a known group that went quiet as zero, as the rule itself does
    (so a firing flatline shows its zero, not another group's traffic).
    """
    options: SearchOptions = rule.options
    seen = {g: v for g, (v, _) in searching.values(rule, response).items()
            if v is None or math.isfinite(v)}  # a spike from an empty baseline has no finite ratio to draw
    if searching.looks_back(options):
        for group in known - set(seen):
            if group:
                seen[group] = 0.0 if options.metric is None else None
    for finding in evaluation.findings:
        if isinstance(finding.value, (int, float)):
            seen[finding.group] = float(finding.value)
    numbers = [v for v in seen.values() if v is not None]
    if not numbers:
        return None
    return min(numbers) if options.threshold.below is not None else max(numbers)


def replay_search(rule: Rule, source: Any, replay: Replay, *, force_per_tick: bool = False,
                  upstream: Upstreams | None = None) -> None:
    ticks = replay.ticks
    if not ticks:
        return
    if can_aggregate(rule) and not force_per_tick:
        responses, replay.requests = aggregated_responses(rule, source, ticks)
        replay.mode = "aggregated"
    else:
        responses, replay.requests = per_tick_responses(rule, source, ticks)
        replay.mode = "per-tick"
    dashboards = getattr(getattr(source, "config", None), "dashboards_url", None)
    states: dict[str, lifecycle.GroupState] = {}
    observed: frozenset[str] = frozenset()
    for tick, response in zip(ticks, responses, strict=True):
        if isinstance(response, Exception):
            replay.errors.append({"at": to_text(tick), "message": str(response)})
            replay.series.append((tick, None))
            continue
        ctx = EvalContext(now=tick, active={rule.name: frozenset(states)}, observed={rule.name: observed})
        start, end = searching.window(rule.options, tick)
        evaluation = searching.judge(rule, ctx, response, start, end, dashboards)
        replay.series.append((tick, _tick_value(rule, response, observed | frozenset(states), evaluation)))
        replay.breaching += bool(evaluation.findings)
        observed = frozenset(evaluation.observed)
        _advance(replay, rule, states, evaluation, tick, upstream)


PRESENT_SLACK = timedelta(minutes=1)  # an --end this close to now still means "now"


def present_only(rule: Rule) -> bool:
    """Whether ``rule`` can only be evaluated now (warehouse and DMS rules: no history of their values is kept),
    except freshness rules that learn from their tables' own load history (replayed tick by tick)."""
    return rule.type not in SEARCH_TYPES and not testrule_learned.replayable(rule)


def window_problem(rule: Rule, end: datetime | None, now: datetime) -> str | None:
    """Why ``--end`` cannot be used with ``rule`` (None: it can).

    A present-only rule asked about another moment would report today's load
    times, values or task states as if they were that moment's, so it is refused.
    """
    if end is None or not present_only(rule) or abs(end - now) <= PRESENT_SLACK:
        return None
    when = "in the past" if end < now else "in the future"
    return (f"--end is {when} ({to_text(end)}), but {rule.type} rules evaluate the present only "
            "(neither the warehouse nor AWS keeps a history of their values to replay); drop --end")


def replay_present(rule: Rule, sources: Any, replay: Replay, upstream: Upstreams | None = None) -> None:
    """Freshness and DMS rules: the present state only (their history is not kept anywhere to replay).

    They make no search request; the window shrinks to the one moment evaluated.
    """
    now = replay.end
    replay.start = now
    replay.ticks = [now]
    replay.note = f"{rule.type} rules evaluate the present only: this shows what one evaluation would do now"
    rule_type = RULE_TYPES[rule.type]
    journal = MemoryJournal()
    if rule.type == "dms_remediate":
        rule = replace(rule, options=replace(rule.options, dry_run=True))  # plan, never act
    # Learned checks learn in memory, from the history the source holds before now (nothing is kept).
    ctx = EvalContext(now=now, journal=journal if rule_type.acts else None, sources=sources if rule_type.acts else None,
                      baselines=MemoryBaselines())
    result = rule_type.evaluate([rule], sources.get(rule.source), ctx)[rule.name]
    replay.requests = 0  # no search request: one SQL query or AWS call per check, counted by the source
    if isinstance(result, Exception):
        replay.errors.append({"at": to_text(now), "message": str(result)})
        return
    for group, _record, step in journal.steps:
        replay.actions.append({"at": to_text(now), "group": group, "kind": step.kind, "text": step.text})
        _keep(replay, now, group, step.kind,
              render_step(rule, group, step.kind, step.text, step.severity.value, now, None, step.detail))
    _advance(replay, rule, {}, result, now, upstream)


def replay(rule: Rule, sources: Any, start: datetime, end: datetime, *, force_per_tick: bool = False,
           others: Sequence[Rule] = (), router: Router | None = None) -> Replay:
    """Replay ``rule`` over [start, end] against the real sources; raises the source's error when it cannot run at all.

    ``others`` are the other rules of the rules directory: the ones ``rule``
    depends on are replayed too, and its notifications routed as the daemon
    routes them (an explained alert is shown as ``explained``). With
    ``router`` each notification lists the receivers it would reach
    (``receivers``, and ``held`` when a muted route holds it back).
    """
    result = Replay(rule=rule.name, start=start, end=end, router=router)
    upstream = upstreams_of(rule, others, sources, start, end, result) if others else None
    if rule.type in SEARCH_TYPES or testrule_learned.replayable(rule):
        result.ticks, result.left_out = ticks_for(rule.schedule, start, end)
        if result.left_out:
            result.note = (f"the range holds {len(result.ticks) + result.left_out} ticks at this schedule; the newest "
                           f"{len(result.ticks)} are replayed, from {to_text(result.ticks[0])}, and the oldest "
                           f"{result.left_out} are left out (narrow the range with --start/--end or --last)")
        if rule.type in SEARCH_TYPES:
            replay_search(rule, sources.get(rule.source), result, force_per_tick=force_per_tick, upstream=upstream)
        else:
            replay_learned(rule, sources.get(rule.source), result, upstream)
    else:
        replay_present(rule, sources, result, upstream)
    if upstream is not None and upstream.notes:
        result.note = "; ".join([result.note, *upstream.notes] if result.note else upstream.notes)
    return result


def replay_learned(rule: Rule, source: Any, replay: Replay, upstream: Upstreams | None = None) -> None:
    """A freshness rule that learns from its tables, tick by tick, each tick learning only from the loads before it."""
    evaluations, replay.requests = testrule_learned.evaluations(rule, source, replay.ticks)
    replay.mode = "learned"
    states: dict[str, lifecycle.GroupState] = {}
    for tick, evaluation in zip(replay.ticks, evaluations, strict=True):
        replay.breaching += bool(evaluation.findings)
        _advance(replay, rule, states, evaluation, tick, upstream)


# --- text output ----------------------------------------------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], limit: float, width: int = 100, *, lowest: bool = False) -> tuple[str, str]:
    """A sparkline of ``values`` and the number of ticks per column.

    With more than ``width`` values, a column shows the max of its ticks (the
    min with ``lowest``, for ``below`` thresholds), so a breach stays visible.
    """
    if not values:
        return "", ""
    per = max(1, math.ceil(len(values) / width))
    columns = []
    for i in range(0, len(values), per):
        chunk = [v for v in values[i:i + per] if v is not None]
        columns.append((min(chunk) if lowest else max(chunk)) if chunk else None)
    top = max([c for c in columns if c is not None] + [limit, 1e-9])
    line = "".join(" " if c is None else SPARKS[min(len(SPARKS) - 1, int(c / top * (len(SPARKS) - 1)))] for c in columns)
    return line, str(per)


# Lines of each list the text output shows; the newest, since what happened last is what a replay is for.
SHOWN_NOTIFICATIONS = 20
SHOWN_ERRORS = 10


def _left_out(total: int, shown: int) -> str:
    return f" (the oldest {total - shown} not shown here; --format json lists all)" if total > shown else ""


def format_text(result: Replay, rule: Rule) -> str:
    requests = f", {result.requests} search request(s)" if rule.type in SEARCH_TYPES else ""
    lines = []
    if result.note:  # first: it says what the rest does not cover
        lines.append(f"note: {result.note}")
    lines.append(f"rule {result.rule} ({rule.type}): {to_text(result.covered_start)} .. {to_text(result.end)}, "
                 f"{len(result.ticks)} tick(s), {result.mode}{requests}")
    if result.series and rule.type in SEARCH_TYPES:
        threshold = rule.options.threshold
        values = [v for _, v in result.series]
        line, per = sparkline(values, threshold.limit, lowest=threshold.below is not None)
        if rule.options.group_by:
            what = "min over groups" if threshold.below is not None else "max over groups"
        else:
            what = "value"
        lines.append(f"{what} per tick ({per} tick(s) per column) vs {threshold.describe()}; "
                     f"{result.breaching} tick(s) breach:")
        lines.append(f"  {line}")
    lines.append(f"transitions: {len(result.transitions)}")
    for t in result.transitions:
        lines.append(f"  {t['at']} {t['group'] or '(all)'}: {t['from']} -> {t['to']} value={format_value(t['value'])} "
                     f"{t['severity']}")
    lines.append(f"notifications: {len(result.notifications)}{_left_out(len(result.notifications), SHOWN_NOTIFICATIONS)}")
    for n in result.notifications[-SHOWN_NOTIFICATIONS:]:
        to = f" -> {', '.join(n['receivers']) or '(none)'}" if "receivers" in n else ""
        held = f" (held back: {', '.join(n['held'])})" if n.get("held") else ""
        lines.append(f"  {n['at']} {n['kind']}{to}{held}: {n['text']}")
    if result.notifications:
        first = result.notifications[0]
        lines.append(f"first notification as sent ({len(first['blocks'])} blocks):")
        lines.append(f"  header: {first['blocks'][0]['text']['text']}")
        lines.append(f"  text:   {first['text']}")
    if result.actions:
        lines.append(f"actions it would take: {len(result.actions)}")
        for a in result.actions:
            lines.append(f"  {a['group']}: {a['text']}")
    lines.append(f"errors: {len(result.errors)}{_left_out(len(result.errors), SHOWN_ERRORS)}")
    for e in result.errors[-SHOWN_ERRORS:]:
        lines.append(f"  {e['at']}: {e['message']}")
    return "\n".join(terminal(line) for line in lines)
