"""Shared scans: searches that read the same time ranges of the same indices go to the cluster as one.

Search rules due together on a source share a schedule phase, so their
incremental evaluations read the same minutes of the same dated indices: each
is a ``size: 0`` search whose query is ``bool.filter: [TIME, *selector]``
with its own aggregations. Sent one by one, every shard answers a request per
rule; packed, one per pack: the packed query is TIME and any of the rules' selectors, and each
rule's aggregations sit under a ``filter`` aggregation of its own selector.
(On osmem-server, which reads every event of a time range per search, the
CPU is about the same either way, see ``bench.shared_scans``; what it saves
there is requests.)

``pack`` groups the searches; ``unpack`` gives each original search the
response it would have had alone (``hits.total`` is the filter's exact
``doc_count``). A packed search the cluster refuses for what it holds (HTTP
400: a query it cannot parse, one of its limits) is sent again unpacked by the
caller, so one rule's bad query fails only that rule; a search that then fails
alone is not packed again at its later evaluations (``Refusals`` remembers it
without its time). A busy or failing cluster's error (429, 5xx, a timeout) is
every member's: splitting would only ask it 50 times more. A ``composite``
aggregation (multi-field ``group_by`` on older clusters) is never packed, as
the cluster refuses it under another aggregation. Limits keep a pack far from
the cluster's own: at most PACK_MAX searches, an estimate of the buckets they
make within BUCKET_BUDGET (the cluster refuses more than ``search.max_buckets``,
65,535 by default), and their selectors within SELECTOR_CHARS (a query's
clauses count against ``indices.query.bool.max_clause_count``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

PACK_MAX = 50  # searches per packed search
BUCKET_BUDGET = 20_000  # estimated buckets per packed search
SELECTOR_CHARS = 20_000  # the packed selectors, serialized
REFUSALS_KEPT = 10_000  # searches remembered as not to be packed
_BODY_KEYS = frozenset({"size", "query", "aggs", "track_total_hits"})


class Request(Protocol):
    """A search as the source sends it (``SearchRequest``)."""

    @property
    def index(self) -> str: ...

    @property
    def body(self) -> Mapping[str, Any]: ...

    @property
    def ignore_unavailable(self) -> bool: ...


@dataclass(frozen=True)
class Pack:
    """What goes to the cluster as one search: ``members`` (positions in the caller's list) and their search."""

    members: tuple[int, ...]
    body: Mapping[str, Any]  # the packed body (the member's own when it is alone)


@dataclass(frozen=True)
class _Shape:
    key: str  # index, ignore_unavailable and the time clause: what members of one pack share
    selector: list[Any]  # the rest of the query's filter
    aggs: Mapping[str, Any]
    buckets: int
    chars: int
    selector_text: str

    @property
    def fingerprint(self) -> str:
        """The search but its time (and so its dated indices): the same at every evaluation of a rule."""
        return self.selector_text + json.dumps(self.aggs, sort_keys=True, default=str)


class Refusals:
    """Searches that failed alone after their pack was refused: sent alone from then on (bounded, thread-safe)."""

    def __init__(self, kept: int = REFUSALS_KEPT):
        self.kept = kept
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request: Request) -> None:
        shape = _shape(request)
        if shape is None:
            return
        with self._lock:
            self._seen[shape.fingerprint] = None
            while len(self._seen) > self.kept:
                self._seen.popitem(last=False)

    def __contains__(self, shape: object) -> bool:
        if not self._seen or not isinstance(shape, _Shape):  # (the usual case: nothing to compute)
            return False
        fingerprint = shape.fingerprint
        with self._lock:
            return fingerprint in self._seen


def pack(requests: Sequence[Request], refused: Refusals | None = None) -> list[Pack]:
    """The searches to send for ``requests``, in order of each pack's first member; every position in exactly one."""
    packs: list[list[int]] = []
    open_: dict[str, tuple[list[int], list[int]]] = {}  # key -> (members, [buckets, chars])
    shapes: dict[int, _Shape] = {}
    for position, request in enumerate(requests):
        shape = _shape(request)
        if shape is None or (refused is not None and shape in refused):
            packs.append([position])
            continue
        shapes[position] = shape
        current = open_.get(shape.key)
        if current is not None:
            members, totals = current
            if (len(members) < PACK_MAX and totals[0] + shape.buckets <= BUCKET_BUDGET
                    and totals[1] + shape.chars <= SELECTOR_CHARS):
                members.append(position)
                totals[0] += shape.buckets
                totals[1] += shape.chars
                continue
        members = [position]
        packs.append(members)
        open_[shape.key] = (members, [shape.buckets, shape.chars])
    return [Pack(tuple(members), requests[members[0]].body if len(members) == 1
                 else _packed_body(requests[members[0]], [shapes[m] for m in members])) for members in packs]


def unpack(packed: Pack, answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Each member's response from the packed search's ``answer`` (a member alone gets the answer as it is).

    Raises KeyError, TypeError or ValueError when the answer lacks a member's
    part or it is malformed (the caller sends the members again, alone).
    """
    if len(packed.members) == 1:
        return [answer]
    aggregations = answer["aggregations"]
    out: list[Mapping[str, Any]] = []
    for number in range(len(packed.members)):
        part = aggregations[f"p{number}"]
        out.append({
            "took": answer.get("took"), "timed_out": answer.get("timed_out", False), "_shards": answer.get("_shards"),
            "hits": {"total": {"value": int(part["doc_count"]), "relation": "eq"}, "max_score": None, "hits": []},
            "aggregations": {name: value for name, value in part.items() if name != "doc_count"},
        })
    return out


def _packed_body(first: Request, shapes: Sequence[_Shape]) -> dict[str, Any]:
    time_clause = first.body["query"]["bool"]["filter"][0]
    selectors = [{"bool": {"filter": shape.selector}} for shape in shapes]
    return {
        "size": 0,
        "query": {"bool": {"filter": [time_clause, {"bool": {"should": selectors, "minimum_should_match": 1}}]}},
        "aggs": {f"p{number}": {"filter": selector, **({"aggs": shape.aggs} if shape.aggs else {})}
                 for number, (selector, shape) in enumerate(zip(selectors, shapes, strict=True))},
    }


def _shape(request: Request) -> _Shape | None:
    """What a packable search shares and brings (None: it goes alone).

    Packable: ``size: 0``, nothing but a query and aggregations (or none: a
    count), the query a ``bool`` of ``filter`` clauses only, whose first
    clause (the time) the pack's members share.
    """
    body = request.body
    if not isinstance(body, Mapping) or set(body) - _BODY_KEYS or body.get("size") != 0:
        return None
    query, aggs = body.get("query"), body.get("aggs", {})  # (no aggregations: a count, the filter's doc_count)
    if not isinstance(aggs, Mapping) or not isinstance(query, Mapping) or set(query) != {"bool"}:
        return None
    clauses = query["bool"]
    if not isinstance(clauses, Mapping) or set(clauses) != {"filter"}:
        return None
    filters = clauses["filter"]
    if not isinstance(filters, list) or not filters:
        return None
    span = _span_seconds(filters[0])
    buckets = _buckets(aggs, span)
    if buckets is None or buckets > BUCKET_BUDGET:
        return None
    time_text = json.dumps(filters[0], sort_keys=True, default=str)
    selector = list(filters[1:])
    selector_text = json.dumps(selector, sort_keys=True, default=str)
    return _Shape(key=json.dumps([request.index, bool(request.ignore_unavailable), time_text]), selector=selector,
                  aggs=aggs, buckets=buckets, chars=len(selector_text), selector_text=selector_text)


def _span_seconds(clause: Any) -> float | None:
    """The seconds a time clause (a ``range``, or a ``bool.should`` of ranges) covers; None when unknown."""
    if not isinstance(clause, Mapping):
        return None
    if "range" in clause and isinstance(clause["range"], Mapping) and len(clause["range"]) == 1:
        bounds = next(iter(clause["range"].values()))
        try:
            start = datetime.fromisoformat(str(bounds["gte"]))
            end = datetime.fromisoformat(str(bounds["lt"]))
        except (KeyError, TypeError, ValueError):
            return None
        return max((end - start).total_seconds(), 0.0)
    should = clause.get("bool", {}).get("should") if isinstance(clause.get("bool"), Mapping) else None
    if isinstance(should, list) and should:
        spans = [_span_seconds(one) for one in should]
        return None if any(s is None for s in spans) else sum(s for s in spans if s is not None)
    return None


def _buckets(aggs: Mapping[str, Any], span: float | None) -> int | None:
    """An upper estimate of the buckets ``aggs`` make over ``span`` seconds (None: cannot tell)."""
    total = 0
    for agg in aggs.values():
        if not isinstance(agg, Mapping):
            return None
        here: int | None = 1
        if "composite" in agg:  # (the cluster refuses a composite aggregation under another: never packed)
            return None
        for kind in ("terms", "multi_terms"):
            if kind in agg:
                here = int(agg[kind].get("size", 10)) if isinstance(agg[kind], Mapping) else None
        if "date_histogram" in agg:
            here = _histogram_buckets(agg["date_histogram"], span)
        elif "histogram" in agg or "auto_date_histogram" in agg:
            here = None
        sub = agg.get("aggs")
        inner = _buckets(sub, span) if isinstance(sub, Mapping) and sub else 0
        if here is None or inner is None:
            return None
        total += here * (1 + inner)
    return total


def _histogram_buckets(histogram: Any, span: float | None) -> int | None:
    if span is None or not isinstance(histogram, Mapping):
        return None
    interval = str(histogram.get("fixed_interval", ""))
    if not interval.endswith("s") or not interval[:-1].isdigit() or int(interval[:-1]) <= 0:
        return None
    return int(span // int(interval[:-1])) + 2
