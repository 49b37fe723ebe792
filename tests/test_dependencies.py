"""The dependency logic, pure: random orders of upstream and dependent transitions against a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.dependencies import (
    Change,
    Decision,
    Explanation,
    Phase,
    Ref,
    Route,
    Settle,
    Upstream,
    cycles,
    decide,
    matching,
)
from watchdog.lifecycle import Kind, Notice
from watchdog.loader import load_rules
from watchdog.rule import Severity

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def notice(kind: Kind, at: datetime, episode: str = "dep-1") -> Notice:
    return Notice(kind=kind, group="fact_orders", at=at, severity=Severity.WARNING, value=1.0, summary="stale",
                  episode=episode)


@dataclass
class Model:
    """Runs ``decide`` over a sequence of events and checks what it routes against what the issue asks."""

    settle: Settle
    now: datetime = T0
    upstream: Upstream | None = None
    episodes: int = 0
    record: Explanation | None = None
    firing: bool = False
    own: str = ""  # the dependent's episode
    explained_start: bool = False  # this episode fired while an upstream fired
    alone: bool = False  # announced on its own (at its start, or after the settle time)
    quiet_since: datetime | None = None  # explained, and no upstream fired at the evaluations since then
    quiet_evaluations: int = 0
    thread: str = ""  # the upstream thread the explained alert was last announced in
    log: list[tuple[str, Decision]] = field(default_factory=list)

    def upstream_fires(self) -> None:
        if self.upstream is None:
            self.episodes += 1
            self.upstream = Upstream("dms-tasks", "prod-to-warehouse", f"up-{self.episodes}", self.now)

    def upstream_resolves(self) -> None:
        self.upstream = None

    def evaluate(self, firing: bool, repeat: bool) -> None:
        notices: list[Notice] = []
        if firing and not self.firing:
            self.episodes += 1
            self.own = f"dep-{self.episodes}"
            notices.append(notice(Kind.FIRING, self.now, self.own))
        elif firing and repeat:
            notices.append(notice(Kind.REPEAT, self.now, self.own))
        elif not firing and self.firing:
            notices.append(notice(Kind.RESOLVED, self.now, self.own))
        current = notice(Kind.FIRING, self.now, self.own) if firing else None
        change = Change(firing_before=self.firing, firing_now=firing, notices=tuple(notices), current=current,
                        announced=self.firing and self.alone)
        ups = [self.upstream] if self.upstream else []
        decision = decide(self.record, change, ups, self.settle, self.now)
        self.check(change, decision)
        self.record = decision.record
        self.firing = firing

    def check(self, change: Change, decision: Decision) -> None:
        routes = [r.route for r in decision.routed]
        if change.firing_now and not change.firing_before:  # a new episode: announced exactly once
            self.explained_start = self.upstream is not None
            self.alone = self.upstream is None
            self.quiet_since, self.quiet_evaluations = None, 0
            assert routes == ([Route.EXPLAINED] if self.explained_start else [Route.ALONE])
            if self.upstream is not None:
                assert decision.record is not None and decision.record.episode == self.upstream.episode
                self.thread = self.upstream.episode
            return
        if not change.firing_now:
            if change.firing_before and self.explained_start and not self.alone:
                assert routes == [Route.SETTLED]  # closed quietly in the thread it was announced in
            elif change.firing_before:
                assert routes == [Route.ALONE]
            assert decision.record is None
            return
        # still firing
        if self.explained_start and not self.alone:
            if self.upstream is not None:
                self.quiet_since, self.quiet_evaluations = None, 0
            else:
                self.quiet_since = self.quiet_since or self.now
                self.quiet_evaluations += 1
            over = (self.now - self.quiet_since >= self.settle.duration if self.settle.duration is not None
                    else self.quiet_evaluations >= self.settle.evaluations) if self.quiet_since else False
            # Nothing explained is announced alone before the settle time, and nothing still firing after it stays silent.
            if over:
                assert routes == [Route.STILL], (routes, self.quiet_evaluations)
                assert decision.record is None
                self.alone = True
            else:
                assert Route.ALONE not in routes and Route.STILL not in routes
                assert set(routes) <= {Route.EXPLAINED}
                assert decision.record is not None and decision.record.phase in (Phase.EXPLAINED, Phase.SETTLING)
                if self.upstream is not None and self.upstream.episode != self.thread:
                    assert routes == [Route.EXPLAINED]  # a new upstream episode: announced in its thread, once
                if self.upstream is not None:
                    assert decision.record.episode == self.upstream.episode
                    self.thread = self.upstream.episode
            return
        # announced alone: its notices go out as they are; an upstream firing after it is linked once
        assert Route.EXPLAINED not in routes and Route.SETTLED not in routes and Route.STILL not in routes
        if Route.LINK in routes:
            assert self.upstream is not None and (self.record is None or self.record.episode != self.upstream.episode)
        if self.upstream is not None and (self.record is None or self.record.episode != self.upstream.episode):
            assert routes.count(Route.LINK) == 1
            assert decision.record is not None and decision.record.phase is Phase.LINKED


evaluation = st.tuples(st.just("eval"), st.booleans(), st.booleans())
events = st.lists(st.one_of(
    st.tuples(st.just("fire")), st.tuples(st.just("resolve")), evaluation, evaluation,
    st.tuples(st.just("wait"), st.integers(1, 600)),
), min_size=8, max_size=80)


def run(model: Model, sequence: list[tuple[object, ...]]) -> None:
    for event in sequence:
        if event[0] == "fire":
            model.upstream_fires()
        elif event[0] == "resolve":
            model.upstream_resolves()
        elif event[0] == "eval":
            model.evaluate(bool(event[1]), bool(event[2]))
            model.now += timedelta(seconds=1)
        else:
            model.now += timedelta(seconds=int(event[1]))  # type: ignore[call-overload]


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 4))
def test_random_orders_with_evaluation_counts(sequence: list[tuple[object, ...]], evaluations: int) -> None:
    run(Model(Settle(evaluations=evaluations)), sequence)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(0, 1200))
def test_random_orders_with_a_settle_time(sequence: list[tuple[object, ...]], seconds: int) -> None:
    run(Model(Settle(duration=timedelta(seconds=seconds))), sequence)


def test_the_issue_story() -> None:
    """The task fails, the table goes stale (in the thread), the task runs again, the table loads: one quiet line."""
    up = Upstream("dms-tasks", "prod-to-warehouse", "up-1", T0)
    fired = decide(None, Change(False, True, (notice(Kind.FIRING, T0),), notice(Kind.FIRING, T0)), [up], Settle(), T0)
    assert [r.route for r in fired.routed] == [Route.EXPLAINED] and fired.record is not None
    repeat = decide(fired.record, Change(True, True, (notice(Kind.REPEAT, T0),), notice(Kind.FIRING, T0)), [up],
                    Settle(), T0)
    assert repeat.routed == ()  # repeats of explained alerts are not sent
    settling = decide(repeat.record, Change(True, True, (), notice(Kind.FIRING, T0)), [], Settle(), T0)
    assert settling.routed == () and settling.record is not None and settling.record.phase is Phase.SETTLING
    closed = decide(settling.record, Change(True, False, (notice(Kind.RESOLVED, T0),)), [], Settle(), T0)
    assert [r.route for r in closed.routed] == [Route.SETTLED] and closed.routed[0].by is not None
    assert closed.routed[0].by.episode == "up-1"


def test_refs_and_matching() -> None:
    assert Ref.parse("dms-tasks") == Ref("dms-tasks", "*")
    ref = Ref.parse("dms-tasks:*/lag")
    assert ref.matches("dms-tasks", "prod/lag") and not ref.matches("dms-tasks", "prod")
    ups = {"dms-tasks": [Upstream("dms-tasks", "prod/lag", "e1", T0), Upstream("dms-tasks", "prod", "e2", T0)]}
    assert [u.episode for u in matching([ref], ups)] == ["e1"]
    assert str(ref) == "dms-tasks:*/lag" and str(Ref.parse("x")) == "x"


def test_cycles_are_named_once() -> None:
    assert cycles({"a": ["b"], "b": ["a"], "c": ["a"]}) == [["a", "b"]]
    assert cycles({"a": ["a"]}) == [["a"]]
    assert cycles({"a": ["b"], "b": ["c"]}) == []
    assert cycles({str(i): [str(i + 1)] for i in range(3000)}) == []  # a long chain: no recursion limit


@given(st.dictionaries(st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdefg"), max_size=3), max_size=6))
def test_cycles_agree_with_reachability(graph: dict[str, list[str]]) -> None:
    """A rule lies on a reported cycle exactly when it can reach itself."""

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    on_cycle = {node for loop in cycles(graph) for node in loop}
    for node in graph:
        if reaches(node, node):
            # every cyclic strongly connected part has at least one reported cycle through it
            assert any(reaches(node, m) and reaches(m, node) for m in on_cycle)
    for node in on_cycle:
        assert reaches(node, node)


def write_rules(tmp_path: Path, rules: dict[str, str]) -> list[str]:
    for name, text in rules.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    result = load_rules([str(tmp_path)])
    return sorted(str(p) for p in result.problems)


DMS = "type: dms_task\nsource: aws\n"


def test_unknown_names_and_cycles_are_validation_errors_naming_the_rules(tmp_path: Path) -> None:
    problems = write_rules(tmp_path, {
        "a": f"name: a\n{DMS}depends_on: [b]\n",
        "b": f"name: b\n{DMS}depends_on: [c, 'dms-taks:x']\n",
        "c": f"name: c\n{DMS}depends_on: [a]\n",
        "dms-tasks": f"name: dms-tasks\n{DMS}",
        "d": f"name: d\n{DMS}depends_on: [d]\n",
        "ok": f"name: ok\n{DMS}depends_on: ['dms-tasks:*/lag']\ndepends_on_settle: 10m\n",
    })
    assert [p.split(": ", 1)[1] for p in problems] == [
        "depends_on[0]: dependency cycle: a -> b -> c -> a; remove one of these depends_on entries",
        "depends_on[0]: dependency cycle: a -> b -> c -> a; remove one of these depends_on entries",
        "depends_on[1]: rule b depends on dms-taks, but no rule is named 'dms-taks' (did you mean 'dms-tasks'?)",
        "depends_on[0]: dependency cycle: a -> b -> c -> a; remove one of these depends_on entries",
        "depends_on[0]: rule d cannot depend on itself",
    ]
    assert [p.split(":")[0].rsplit("/", 1)[1] for p in problems] == ["a.yaml", "b.yaml", "b.yaml", "c.yaml", "d.yaml"]
    loaded = load_rules([str(tmp_path)])
    assert {r.name for r in loaded.rules} == {"dms-tasks", "ok"}  # the others never half-load
    (ok,) = [r for r in loaded.rules if r.name == "ok"]
    assert ok.depends_on == ("dms-tasks:*/lag",) and ok.depends_on_settle == timedelta(minutes=10)


def test_a_cycle_through_healed_when_fresh_is_named(tmp_path: Path) -> None:
    problems = write_rules(tmp_path, {
        "fix": "name: fix\ntype: dms_remediate\nsource: aws\ntasks: [t]\nhealed_when: {fresh: fresh}\n"
               "depends_on: [fresh]\n",
        "fresh": "name: fresh\ntype: freshness\nsource: wh\nchecks: [{name: x, sql: 'select now()'}]\nwarn_after: 1h\n",
    })
    assert len(problems) == 2 and all("dependency cycle: fix -> fresh -> fix" in p for p in problems)
    assert any("fresh.yaml" in p and "fix's healed_when.fresh names fresh" in p for p in problems)


def test_validating_one_file_knows_the_other_rules(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "dms-tasks.yaml").write_text(f"name: dms-tasks\n{DMS}")
    (tmp_path / "new.yaml").write_text(f"name: new\n{DMS}depends_on: [dms-tasks]\n")
    assert load_rules([str(tmp_path / "new.yaml")], known=["dms-tasks"]).problems == []
    assert load_rules([str(tmp_path / "new.yaml")]).problems  # (without them it would name an unknown rule)


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_pattern_and_group_match_or_not_never_raise(pattern: str, group: str) -> None:
    """A rule file's group pattern and a group from data (both untrusted): matching is total and literal text matches."""
    ref = Ref.parse(f"dms-tasks:{pattern}")
    assert isinstance(ref.matches("dms-tasks", group), bool)
    assert not ref.matches("other", group)
    if not any(c in pattern for c in "*?[") and pattern:
        assert ref.matches("dms-tasks", pattern)


def test_explained_notifications_never_reach_a_pager() -> None:
    """What the engine records for explained alerts (and links) is routed past PagerDuty, whatever the routes say."""
    from watchdog.notify.render import render_explained, render_link
    from watchdog.notify.routing import Router, parse_route
    from watchdog.rule import Rule

    rule = Rule(name="warehouse-freshness", type="freshness", path="", options=None, severity=Severity.CRITICAL)
    router = Router([parse_route(1, {"match": {"severity": "critical"}, "receivers": ["pager", "slack"]})], {},
                    {"slack": "slack", "console": "console", "pager": "pagerduty"}, "slack")
    critical = Notice(kind=Kind.FIRING, group="fact_orders", at=T0, severity=Severity.CRITICAL, value=1.0,
                      summary="stale", episode="dep-1", since=T0)
    resolved = Notice(kind=Kind.RESOLVED, group="fact_orders", at=T0, severity=Severity.CRITICAL, value=1.0,
                      summary="fresh", episode="dep-1", since=T0)
    for kind, payload in (("explained", render_explained(rule, "explained", [critical], "dms-tasks", "up-1", None)),
                          ("explained_resolved", render_explained(rule, "explained_resolved", [resolved], "dms-tasks",
                                                                  "up-1", None)),
                          ("link", render_link(rule, critical, "dms-tasks", "up-1"))):
        assert router.for_payload(payload, kind, T0).receivers == ("slack",), kind
    assert router.for_payload({"rule": rule.name, "severity": "critical", "labels": {}}, "firing", T0).receivers == \
        ("pager", "slack")  # (the same alert announced alone pages)
