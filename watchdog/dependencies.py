"""Rules that depend on others: a dependent alert is explained by a firing upstream alert.

One failure, one incident. While an alert of an upstream rule fires (a failed
DMS task, a remediation in progress), a new alert of a rule that says
``depends_on:`` that rule is *explained* by it: it is recorded as always, but
announced once in the upstream's thread ("also affected: ..."), never alone,
never paged, and its repeats are not sent. When no upstream fires any more the
dependent gets a settle time (``depends_on_settle``, default two of its own
evaluations): resolving within it closes it quietly in the same thread; still
firing after it, it is announced on its own ("still stale after dms-tasks
recovered"). An alert that fired before its upstream did stays as it is and
gains a link to the upstream's thread.

Pure, like ``lifecycle``: ``decide`` takes one dependent group's explanation
record, what its lifecycle step did, the upstream alerts firing now, the
settle policy and ``now``, and returns the new record and where each notice
goes (``Route``). The engine applies it; ``watchdog test-rule`` replays it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from fnmatch import fnmatchcase

from watchdog.lifecycle import Kind, Notice

DEFAULT_SETTLE_EVALUATIONS = 2  # the dependent's own evaluations after its upstream resolved


@dataclass(frozen=True)
class Ref:
    """One ``depends_on`` entry: a rule name, or ``rule:group-pattern`` (a glob over the upstream's groups)."""

    rule: str
    pattern: str = "*"

    @classmethod
    def parse(cls, text: str) -> Ref:
        """``dms-tasks`` or ``dms-tasks:*/lag``; the rule part is a rule name, the group part a glob."""
        rule, _, pattern = text.partition(":")
        return cls(rule=rule, pattern=pattern or "*")

    def matches(self, rule: str, group: str) -> bool:
        return rule == self.rule and fnmatchcase(group, self.pattern)

    def __str__(self) -> str:
        return self.rule if self.pattern == "*" else f"{self.rule}:{self.pattern}"


@dataclass(frozen=True)
class Settle:
    """How long an explained alert may take to resolve once no upstream fires.

    ``evaluations`` of its own (the default), or ``duration`` when the rule
    says ``depends_on_settle:``.
    """

    evaluations: int = DEFAULT_SETTLE_EVALUATIONS
    duration: timedelta | None = None


DEFAULT_SETTLE = Settle()


@dataclass(frozen=True)
class Upstream:
    """An upstream alert firing now: the rule and group, its thread (episode) and since when it fires."""

    rule: str
    group: str
    episode: str
    since: datetime

    @property
    def name(self) -> str:
        return f"{self.rule} [{self.group}]" if self.group else self.rule


class Phase(str, Enum):
    EXPLAINED = "explained"  # an upstream fires: announced in its thread
    SETTLING = "settling"  # no upstream fires any more: the settle time runs
    LINKED = "linked"  # fired before its upstream: stays alone, its thread links the upstream's


@dataclass(frozen=True)
class Explanation:
    """What explains one dependent alert (kept in the state store beside its lifecycle state)."""

    phase: Phase
    rule: str  # the upstream rule and group
    group: str
    episode: str  # the upstream's thread: where it was announced (or which thread its own links)
    since: datetime  # when it was explained (or linked)
    resolved_at: datetime | None = None  # settling: the first evaluation that found no upstream firing
    evaluations: int = 0  # settling: evaluations since then, that one included

    @property
    def name(self) -> str:
        return f"{self.rule} [{self.group}]" if self.group else self.rule


class Route(str, Enum):
    """Where one notice of a dependent alert goes."""

    ALONE = "alone"  # as the lifecycle made it, in the alert's own thread
    EXPLAINED = "explained"  # "also affected" in the upstream's thread; never pages
    SETTLED = "explained_resolved"  # closed quietly in the upstream's thread
    STILL = "still"  # alone after the settle time: "still firing after the upstream recovered"
    LINK = "link"  # a reply in the alert's own thread, linking the upstream's (it fired first)


@dataclass(frozen=True)
class Routed:
    route: Route
    notice: Notice
    by: Explanation | None = None  # the explanation it is sent under (None: alone)


@dataclass(frozen=True)
class Decision:
    record: Explanation | None  # the group's new explanation (None: none)
    routed: tuple[Routed, ...] = ()

    @property
    def changed_notified(self) -> bool:
        """Whether the alert was announced alone now (its repeats count from now)."""
        return any(r.route is Route.STILL for r in self.routed)


@dataclass(frozen=True)
class Change:
    """What one evaluation did to a dependent group, as the lifecycle decided it.

    ``current`` is the alert's firing notice as it stands now (its value and
    summary), used to announce it in a new thread or alone; ``announced``
    says its firing was sent on its own before (it has its own thread).
    """

    firing_before: bool
    firing_now: bool
    notices: tuple[Notice, ...] = ()
    current: Notice | None = None
    announced: bool = False


ANNOUNCING = (Kind.FIRING, Kind.SEVERITY)  # notices worth a line in the upstream's thread (a repeat is not)


def explaining(upstreams: Iterable[Upstream], keep: str | None = None) -> Upstream | None:
    """The upstream that explains: the one whose thread is ``keep`` if it still fires, else the first to fire."""
    ordered = sorted(upstreams, key=lambda u: (u.since, u.rule, u.group))
    for upstream in ordered:
        if keep is not None and upstream.episode == keep:
            return upstream
    return ordered[0] if ordered else None


def settled(record: Explanation, settle: Settle, now: datetime) -> bool:
    """Whether a settling alert's settle time is over."""
    if settle.duration is not None:
        return record.resolved_at is not None and now - record.resolved_at >= settle.duration
    return record.evaluations >= settle.evaluations


def _explained(upstream: Upstream, now: datetime) -> Explanation:
    return Explanation(Phase.EXPLAINED, upstream.rule, upstream.group, upstream.episode, now)


def decide(prev: Explanation | None, change: Change, upstreams: Sequence[Upstream], settle: Settle,
           now: datetime) -> Decision:
    """Route one dependent group's notices for one evaluation, given the upstream alerts firing now.

    Returns the group's new explanation record and every notice with its
    route. Never raises.
    """
    notices = change.notices
    if not change.firing_now:
        if prev is not None and prev.phase is not Phase.LINKED:
            # Resolved while explained (or settling): one quiet line in the thread it was announced in.
            return Decision(None, tuple(Routed(Route.SETTLED, n, prev) for n in notices if n.kind is Kind.RESOLVED))
        return Decision(None, tuple(Routed(Route.ALONE, n) for n in notices))

    if prev is not None and prev.phase in (Phase.EXPLAINED, Phase.SETTLING):
        upstream = explaining(upstreams, keep=prev.episode)
        if upstream is not None:
            record = replace(prev, phase=Phase.EXPLAINED, rule=upstream.rule, group=upstream.group, resolved_at=None,
                             evaluations=0)
            if upstream.episode != prev.episode:  # a new upstream episode: announced in its thread, once
                record = _explained(upstream, now)
                current = change.current or next((n for n in notices if n.kind in ANNOUNCING), None)
                return Decision(record, (Routed(Route.EXPLAINED, current, record),) if current else ())
            return Decision(record, tuple(Routed(Route.EXPLAINED, n, record) for n in notices if n.kind in ANNOUNCING))
        if prev.phase is Phase.EXPLAINED:
            record = replace(prev, phase=Phase.SETTLING, resolved_at=now, evaluations=1)
        else:
            record = replace(prev, evaluations=prev.evaluations + 1)
        if settled(record, settle, now):
            current = change.current or next((n for n in notices if n.kind in ANNOUNCING), None)
            return Decision(None, (Routed(Route.STILL, current, record),) if current else ())
        return Decision(record)  # settling: nothing is sent (repeats and severity changes wait for its end)

    upstream = explaining(upstreams, keep=prev.episode if prev is not None else None)
    fires_first = not change.firing_before or (prev is None and any(n.kind is Kind.FIRING for n in notices))
    if upstream is not None and fires_first:
        record = _explained(upstream, now)
        return Decision(record, tuple(Routed(Route.EXPLAINED, n, record) for n in notices if n.kind in ANNOUNCING))
    routed = tuple(Routed(Route.ALONE, n) for n in notices)
    if upstream is None:
        return Decision(None, routed)
    if prev is not None and prev.episode == upstream.episode:
        return Decision(prev, routed)
    # It fired before this upstream did: it stays as it is and gains a link to the upstream's thread.
    record = Explanation(Phase.LINKED, upstream.rule, upstream.group, upstream.episode, now)
    link = (Routed(Route.LINK, change.current, record),) if change.announced and change.current is not None else ()
    return Decision(record, routed + link)


def matching(refs: Sequence[Ref], firing: Mapping[str, Sequence[Upstream]]) -> list[Upstream]:
    """The upstream alerts firing now that ``refs`` name, from the firing alerts by rule."""
    out: list[Upstream] = []
    for ref in refs:
        out += [u for u in firing.get(ref.rule, ()) if ref.matches(u.rule, u.group) and u not in out]
    return out


# --- the dependency graph (validated when rules load) ---------------------------------------------------------


def implied(rules: Iterable[tuple[str, str, object]]) -> dict[str, list[Ref]]:
    """Dependencies no rule states: a ``dms_remediate`` rule's ``healed_when.fresh`` rule depends on it.

    Given (name, type, options) per rule, returns extra refs by dependent rule name.
    """
    out: dict[str, list[Ref]] = {}
    for name, type_name, options in rules:
        if type_name != "dms_remediate":
            continue
        verify = getattr(options, "verify", None)  # (``DmsRemediateOptions.verify``: its healed_when)
        fresh = getattr(verify, "freshness_rule", None) if verify is not None else None
        if isinstance(fresh, str) and fresh != name:
            out.setdefault(fresh, []).append(Ref(name))
    return out


def cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every dependency cycle in ``graph`` (rule -> the rules it depends on), each once, as a path of names.

    A cycle is reported starting at its smallest name, so the same cycle is
    named the same way whichever rule the search started from.
    """
    found: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        # Iterative depth-first search: a long chain of rules must not exhaust the interpreter's stack.
        path: list[str] = [root]
        todo: list[list[str]] = [sorted(set(graph.get(root, ())), reverse=True)]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):]
                start = loop.index(min(loop))
                canonical = loop[start:] + loop[:start]
                found.setdefault(tuple(canonical), canonical)
            elif nxt in graph and nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(sorted(set(graph.get(nxt, ())), reverse=True))
    return [found[key] for key in sorted(found)]
