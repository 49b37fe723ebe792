"""Incremental windows: a count or metric rule searches only what changed since its last evaluation.

A ``threshold`` rule counting events (grouped or not), a ``ratio`` rule (its
numerator and denominator counted alike) or a ``metric`` rule whose
aggregation combines from its parts (``sum``, ``min``, ``max``, and ``avg`` as
a sum and a count of values) on an interval schedule keeps, in memory, its
counts (and metric parts) per group in buckets on a grid of its schedule's interval (coarser
when the window would hold more than MAX_BUCKETS). Each evaluation searches
only the buckets since its previous one plus the settle horizon (``settle:``,
default 2m), and the window's first, partial grid step (its start is rarely on
the grid); the window's count is that piece plus the buckets, so it equals a
full search of [now - delay - window, now - delay) for any ``now``. Events
that become searchable later than ``settle`` after their timestamp are not
counted, as with ``delay``.

Only where it pays (``pays``): a window kept in buckets must be at least
PAYS times what one incremental evaluation reads (two grid steps and
``settle``); shorter ones are searched whole, as before.

What an incremental evaluation sends, and how its buckets read back as a full search's answer, is in
``incremental_search``.

A ``spike`` rule (a count, or a metric as above) keeps both its windows so:
its current one and its baseline, ``offset`` earlier (that plan's ``shift``),
each its own buckets, searched as two pieces in the same ``_msearch``.

A grouped flatline (``below`` with ``group_by``: a count or a metric) reports
every group seen within its lookback (``search.lookback``), a quiet one as
zero or no value: it also keeps, per group, the time of its newest event (a
``max`` of the timestamp in each search), and forgets a group once that is
older than the lookback. Its rebuild searches the whole lookback once.
(Beyond ``max_groups`` groups it reports the busiest in the window, then the
latest seen; a search of the whole lookback, the busiest over the lookback.)

One full search rebuilds the buckets after a start, after any change of the
rule's search (its window, query, filters, groups, metric...) or interval, after a gap as long as the window or a clock set
back, and whenever the stamp in the rule's stored facts is not the cache's
(another instance evaluated the rule meanwhile, or the state was restored):
no other component needs to tell this cache anything. Memory is bounded: at
most MAX_BUCKETS buckets and ``GROUP_CAP`` x ``max_groups`` groups per rule
(the smallest beyond are dropped and counted in the facts), MAX_RULES rules.
"""

from __future__ import annotations

import math
import secrets
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from watchdog.rule import Rule
from watchdog.ruletypes.base import EvalContext
from watchdog.times import to_text

PAYS = 2  # a window is kept in buckets only when a whole search reads at least this many times what a step reads
REBUILDS_AT_ONCE = 100  # rules of one batch that rebuild their buckets in the same evaluation
MAX_BUCKETS = 720  # per rule: a window longer than this many grid steps is searched whole each time
GROUP_CAP = 4  # groups kept per rule, in multiples of its max_groups
MAX_RULES = 5000  # rules whose buckets are kept (least recently evaluated dropped first)
FACT = "window"  # the rule's fact that stamps which cached buckets its last evaluation left
# A metric whose window value follows from its steps' values: an avg is kept as its sum and count of values.
# (Percentiles and cardinality do not combine: those rules search their whole windows.)
DECOMPOSABLE = {"sum": ("m_sum",), "min": ("m_min",), "max": ("m_max",), "avg": ("m_sum", "m_count")}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass
class Buckets:
    """One window's counts: group -> counter -> grid step -> value; the newest step may end at ``end``."""

    grid: timedelta
    window: timedelta
    end: datetime
    shift: timedelta = timedelta(0)  # a spike's baseline: the window this much earlier
    lookback: timedelta | None = None  # a grouped flatline: how long a quiet group is still reported
    options: Any = None  # the rule's options the buckets count for (any change, a new query say, rebuilds)
    token: str = field(default_factory=lambda: secrets.token_hex(6))
    # Per group, its counters in each grid step with events (the step's start in ms since the epoch, oldest first:
    # each evaluation drops steps at the front and replaces those at the back), in the order of ``layout``.
    series: dict[str, dict[int, tuple[float, ...]]] = field(default_factory=dict)
    head: dict[str, tuple[float, ...]] = field(default_factory=dict)  # the window's first, partial, grid step
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> its field values
    dropped: int = 0  # groups dropped over the cap since the last rebuild
    seen: dict[str, datetime] = field(default_factory=dict)  # a flatline's groups: the newest event's time
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # per group, the window's counters

    def stamp(self) -> str:
        return f"{self.token}@{to_text(self.end)}"


@dataclass(frozen=True)
class Plan:
    """What one incremental evaluation searches.

    The window is [end - window, end). Its first grid step is cut by the
    window's start: that piece, [end - window, cut), is searched every time
    (``head``, None when the start is on the grid); the buckets from ``lo``
    (on the grid) to ``end`` are searched again (the last may be partial);
    those between ``cut`` and ``lo`` come from the cache.
    """

    key: tuple[str, str, float]  # source, rule, shift in seconds
    grid: timedelta
    window: timedelta
    lo: datetime
    end: datetime
    full: bool  # a rebuild: every bucket of the window (and a flatline's whole lookback)
    shift: timedelta = timedelta(0)  # a spike's baseline: ``end`` is this much before the rule's window's end
    lookback: timedelta | None = None  # a grouped flatline: how far back its groups are looked for
    reach: datetime | None = None  # a grouped flatline: from when its groups' newest events are searched

    @property
    def cut(self) -> datetime:
        return ceil_grid(self.end - self.window, self.grid)

    @property
    def head(self) -> tuple[datetime, datetime] | None:
        start = self.end - self.window
        return (start, self.cut) if self.cut > start else None

    def pieces(self) -> list[tuple[datetime, datetime]]:
        """The window's time ranges whose counts are searched (the head piece may lie in an earlier dated index)."""
        return ([self.head] if self.head is not None else []) + [(self.lo, self.end)]

    def spans(self) -> list[tuple[datetime, datetime]]:
        """The time ranges searched: the pieces, or from a flatline's ``reach`` when that is earlier.

        A flatline's rebuild reaches back over its whole lookback; later, as far as ``settle`` before its previous
        evaluation, which the window's start may cut: a late event there still tells when its group was last seen.
        """
        pieces = self.pieces()
        if self.reach is None or self.reach >= self.lo:
            return pieces
        return [piece for piece in pieces[:-1] if piece[0] < self.reach] + [(self.reach, self.end)]


def floor_grid(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + step * ((moment - EPOCH) // step)


def ceil_grid(moment: datetime, step: timedelta) -> datetime:
    floor = floor_grid(moment, step)
    return floor if floor == moment else floor + step


_cache: OrderedDict[tuple[str, str, float], Buckets] = OrderedDict()
_lock = threading.Lock()


def grid(rule: Rule) -> timedelta | None:
    """The bucket size of ``rule``'s incremental window, or None when it is searched whole every time.

    The schedule's interval, made coarser when the window would hold more
    than MAX_BUCKETS of them.
    """
    options = rule.options
    every = rule.schedule.every
    if (rule.type not in ("threshold", "ratio", "metric", "spike") or every is None
            or (rule.type == "spike") != (options.baseline is not None)
            or (options.metric is not None and options.metric.agg not in DECOMPOSABLE)):
        return None
    seconds = max(math.ceil(every.total_seconds()), math.ceil(options.window.total_seconds() / MAX_BUCKETS), 1)
    return timedelta(seconds=seconds)


def pays(rule: Rule, settle: timedelta) -> bool:
    """Whether keeping ``rule``'s window in buckets is worth it: a whole search reads at least PAYS times as much.

    An incremental evaluation reads about two grid steps (the new one, the
    window's cut first one) plus ``settle``; a whole one reads the window (a
    grouped flatline, its lookback). A 5m window at ``every: 1m`` with the
    default 2m settle would read most of its window anyway, and pay for its
    buckets in memory and in larger answers: it is searched whole.
    """
    from watchdog.ruletypes.search import lookback, looks_back

    step = grid(rule)
    if step is None:
        return False
    whole = lookback(rule.options) if looks_back(rule.options) else rule.options.window
    return whole >= PAYS * (2 * step + settle)


def pace_rebuilds(planned: Sequence[list[Plan] | None]) -> list[list[Plan] | None]:
    """At most REBUILDS_AT_ONCE of one batch's rules rebuild their buckets; the others search whole windows this time.

    A rebuild's answer holds a bucket per step of the window for each group
    (60 for a 1h window at ``every: 1m``): after a start, 500 of them parsed at
    once made the daemon's memory peak (and stay, as freed memory is seldom
    given back) where a whole-window count is one number. Those left out
    rebuild at their next evaluations, a batch's worth at a time.
    """
    out: list[list[Plan] | None] = []
    rebuilding = 0
    for mine in planned:
        if mine is not None and any(plan.full for plan in mine):
            rebuilding += 1
            if rebuilding > REBUILDS_AT_ONCE:
                out.append(None)
                continue
        out.append(mine)
    return out


def plans(rule: Rule, ctx: EvalContext, settle: timedelta) -> list[Plan] | None:
    """What ``rule``'s evaluation at ``ctx.now`` searches (None: the whole window, as without increments).

    One plan per window: a spike's current window, then its baseline. Both rebuild together.
    """
    from watchdog.ruletypes.search import lookback, looks_back

    step = grid(rule)
    if step is None:
        return None
    options = rule.options
    shifts = [timedelta(0)] + ([options.baseline.offset] if options.baseline is not None else [])
    back = lookback(options) if looks_back(options) else None
    keys = [(rule.source, rule.name, shift.total_seconds()) for shift in shifts]
    with _lock:
        cached = [_cache.get(key) for key in keys]
    end = ctx.now - options.delay
    full = [Plan(key, step, options.window, ceil_grid(end - shift - options.window, step), end - shift, full=True,
                 shift=shift, lookback=back, reach=None if back is None else end - shift - back)
            for key, shift in zip(keys, shifts, strict=True)]
    stamp = ctx.facts.get(rule.name, {}).get(FACT)
    if any(c is None or c.grid != step or c.lookback != back or (c.options is not options and c.options != options)
           for c in cached):
        return full
    olds = [c for c in cached if c is not None]
    if stamp != " ".join(c.stamp() for c in olds):
        return full
    if any(p.end < c.end or p.end - c.end >= options.window for p, c in zip(full, olds, strict=True)):
        return full  # the clock went back, or a gap: rebuild
    return [replace(p, lo=max(floor_grid(c.end - settle, step), p.lo), full=False,
                    reach=None if p.reach is None else max(c.end - settle, p.reach)) for p, c in zip(full, olds, strict=True)]


def stamp(states: Sequence[Buckets]) -> str:
    """The rule's fact naming the cached buckets its evaluation leaves (``plans`` rebuilds on any other)."""
    return " ".join(state.stamp() for state in states)


def absorb(plan: Plan, options: Any, response: Mapping[str, Any]) -> Buckets:
    """Replace the plan's buckets and head with the response's, drop those out of the window; returns the buckets."""
    from watchdog.ruletypes.search import group_buckets

    with _lock:
        cached = None if plan.full else _cache.get(plan.key)
    state = cached or Buckets(grid=plan.grid, window=plan.window, end=plan.end, shift=plan.shift, lookback=plan.lookback,
                              options=options)
    state.options = options  # (equal to the cached buckets' options: ``plans`` checked)
    cut, lo = millis(plan.cut), millis(plan.lo)
    for label, steps in list(state.series.items()):
        keys = list(steps)
        first, last = bisect_left(keys, cut), bisect_left(keys, lo)
        if first >= last:
            del state.series[label]
            continue
        for key in keys[:first] + keys[last:]:  # out of the window, or searched again
            del steps[key]
    state.head = {}
    aggs = response.get("aggregations", {})
    sides: list[tuple[str, tuple[str, ...], Mapping[str, Any]]]
    if options.group_by:
        sides = group_buckets(options, aggs)
    else:
        sides = [("", (), aggs)]
    subs = layout(options)[1:]
    for label, parts, bucket in sides:
        state.parts[label] = parts
        last_seen = bucket.get("last", {}).get("value")
        if last_seen is not None:
            at = EPOCH + timedelta(milliseconds=float(last_seen))
            state.seen[label] = max(at, state.seen.get(label, at))
        mine = state.series.get(label)
        for part in bucket.get("window", bucket).get("slices", {}).get("buckets") or ():
            count = part.get("doc_count")
            if not count:
                continue
            counters = (count, *[_number(part.get(name), value, empty) for name, value, _, empty in subs])
            key = part["key"]
            if key < cut:  # the step the window's start cuts: only its head piece was read
                state.head[label] = counters
            elif mine is None:
                mine = state.series[label] = {key: counters}
            else:
                mine[key] = counters
    state.end = plan.end
    _cap(state, options.max_groups * GROUP_CAP, layout(options))
    with _lock:
        _cache[plan.key] = state
        _cache.move_to_end(plan.key)
        while len(_cache) > MAX_RULES:
            _cache.popitem(last=False)
    return state


def millis(moment: datetime) -> int:
    """A grid step's start as a date histogram's bucket key: milliseconds since the epoch."""
    return (moment - EPOCH) // _MILLISECOND


Counter = tuple[str, str, Callable[[Iterable[float]], float], float]


def layout(options: Any) -> tuple[Counter, ...]:
    """The counters kept per step: (sub-aggregation, the key holding its number, how steps combine, the number when
    absent). The first is the events; a ratio's "numerator" and "denominator"; a metric's parts: "m_sum", "m_count"
    (values of the field), "m_min", "m_max" (infinite where no event had the field)."""
    events: Counter = ("", "doc_count", sum, 0)
    if options.metric is not None:
        return (events, *[(name, "value", *_PARTS[name]) for name in DECOMPOSABLE[options.metric.agg]])
    if options.fraction is not None:
        return events, ("numerator", "doc_count", sum, 0), ("denominator", "doc_count", sum, 0)
    return (events,)


_PARTS: dict[str, tuple[Callable[[Iterable[float]], float], float]] = {
    "m_sum": (sum, 0), "m_count": (sum, 0), "m_min": (min, math.inf), "m_max": (max, -math.inf)}


def _number(sub: Any, key: str, empty: float) -> float:
    value = sub.get(key) if isinstance(sub, Mapping) else None
    return empty if value is None else value


def _totals(state: Buckets, counters: Sequence[Counter]) -> dict[str, dict[str, float]]:
    """Per group, the window's counters (a min or max of no value left out, as the server leaves it null)."""
    totals = {}
    for label, steps in state.series.items():
        rows = [*steps.values(), state.head[label]] if label in state.head else steps.values()
        totals[label] = _named(counters, [combine(column) for (_, _, combine, _), column
                                          in zip(counters, zip(*rows, strict=True), strict=True)])
    for label, head in state.head.items():
        if label not in totals:
            totals[label] = _named(counters, head)
    return totals


def _named(counters: Sequence[Counter], numbers: Sequence[float]) -> dict[str, float]:
    return {name: number for (name, _, _, empty), number in zip(counters, numbers, strict=True)
            if not (number == empty and math.isinf(empty))}


def _cap(state: Buckets, cap: int, counters: Sequence[Counter]) -> None:
    """Keep the ``cap`` groups with the most events in the window (then the latest seen); count the others dropped.

    Leaves the window's totals per group in ``state.totals``; a flatline's groups last seen before its lookback are
    forgotten, as its full search would no longer find them.
    """
    totals = _totals(state, counters)
    if state.lookback is not None:
        since = state.end - state.lookback
        state.seen = {label: at for label, at in state.seen.items() if at >= since}
        for label in state.seen:
            totals.setdefault(label, {"": 0})
    state.parts = {label: parts for label, parts in state.parts.items() if label in totals or label == ""}
    if len(totals) > cap:
        keep = set(ranked(state, totals)[:cap])
        state.dropped += len(totals) - len(keep)
        for groups in (state.series, state.head):
            for label in [g for g in groups if g not in keep]:
                del groups[label]
        state.parts = {label: parts for label, parts in state.parts.items() if label in keep}
        state.seen = {label: at for label, at in state.seen.items() if label in keep}
        totals = {label: total for label, total in totals.items() if label in keep}
    state.totals = totals


def ranked(state: Buckets, totals: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The groups, busiest in the window first, then the latest seen (a quiet flatline group)."""
    never = EPOCH

    def rank(label: str) -> tuple[float, float, str]:
        return -totals[label][""], -(state.seen.get(label, never) - never).total_seconds(), label

    return sorted(totals, key=rank)


def forget(keys: Sequence[tuple[str, str]] | None = None) -> None:
    """Drop the cached buckets of the given (source, rule) keys, or of every rule: the next evaluation rebuilds."""
    with _lock:
        if keys is None:
            _cache.clear()
        for key in [k for k in _cache if keys is not None and k[:2] in keys]:
            del _cache[key]
