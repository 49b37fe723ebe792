"""The driver of ``dependencies``: which upstream alerts fire, and what an evaluation's notices become.

The engine calls ``Explainer.route`` while it records an evaluation of a rule
that depends on others (``depends_on``, or a freshness rule named by a
remediation's ``healed_when.fresh``): it reads the upstream alerts firing now
from the state store, lets ``dependencies.decide`` route each group's
notices, and renders the outbox rows: explained alerts of one evaluation go
out as one reply in the upstream's thread (their outbox episode is the
upstream's), a link as a reply in the alert's own thread, the rest as usual.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from watchdog import dependencies as deps
from watchdog.escape import mrkdwn
from watchdog.lifecycle import GroupState, Kind, Notice, State
from watchdog.notify.render import render, render_explained, render_link
from watchdog.rule import Rule
from watchdog.state import StateStore

Row = tuple[str, str, str, dict[str, Any]]  # (group, kind, episode, payload): an outbox row


@dataclass
class Routing:
    """What ``Explainer.route`` decided for one evaluation."""

    rows: list[Row] = field(default_factory=list)
    states: dict[str, GroupState] = field(default_factory=dict)  # group states it changed (announced alone now)
    explanations: dict[str, deps.Explanation | None] = field(default_factory=dict)
    routed: list[deps.Routed] = field(default_factory=list)


def change_of(group: str, before: GroupState | None, after: GroupState | None, notices: tuple[Notice, ...],
              quiet: bool, now: datetime) -> deps.Change:
    """What one evaluation did to a dependent rule's ``group`` (``before`` and ``after`` its states), for
    ``dependencies.decide``: the daemon and test-rule route alike through this."""
    firing_now = after is not None and after.state is State.FIRING
    return deps.Change(
        firing_before=before is not None and before.state is State.FIRING, firing_now=firing_now, notices=notices,
        current=current_notice(group, after, now) if firing_now and after is not None and not quiet else None,
        announced=before is not None and before.notified_at is not None)


def current_notice(group: str, state: GroupState, now: datetime) -> Notice:
    """The firing notice of ``state`` as it stands now (its value and summary)."""
    return Notice(kind=Kind.FIRING, group=group, at=now, severity=state.severity, value=state.value,
                  summary=state.summary, episode=state.episode, details=state.details, since=state.firing_since)


def still_firing(payload: dict[str, Any], phrase: str) -> dict[str, Any]:
    """``payload`` (a rendered firing notification) with ``phrase`` before its body: announced alone after the settle time."""
    body, marked = str(payload["body"]), str(payload["body_mrkdwn"])
    text, text_marked = str(payload["text"]), str(payload["text_mrkdwn"])
    return {**payload, "body": phrase + body, "body_mrkdwn": mrkdwn(phrase) + marked,
            "text": text[: len(text) - len(body)] + phrase + body,
            "text_mrkdwn": text_marked[: len(text_marked) - len(marked)] + mrkdwn(phrase) + marked}


class Explainer:
    """Applies ``dependencies.decide`` for the engine, reading upstream alerts from the state store.

    ``rules`` gives the rules by name (the engine's, plus its own
    self-monitoring rule); ``acts`` says whether a rule type speaks through
    its remediation journal (its thread is the remediation's episode);
    ``word`` is what a rule type calls firing ("stale").
    """

    def __init__(self, store: StateStore, rules: Callable[[], Mapping[str, Rule]], acts: Callable[[Rule], bool],
                 word: Callable[[Rule], str]):
        self.store = store
        self.rules = rules
        self.acts = acts
        self.word = word
        self.refs: dict[str, list[deps.Ref]] = {}

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Note every rule's dependencies: those it states, and those implied (``healed_when.fresh``)."""
        rules = list(rules)
        implied = deps.implied((r.name, r.type, r.options) for r in rules)
        self.refs = {}
        for rule in rules:
            refs = [deps.Ref.parse(text) for text in rule.depends_on] + implied.get(rule.name, [])
            if refs:
                self.refs[rule.name] = refs

    def upstreams(self, refs: Iterable[deps.Ref]) -> list[deps.Upstream]:
        """The upstream alerts firing now that ``refs`` name."""
        firing: dict[str, list[deps.Upstream]] = {}
        rules = self.rules()
        names = {ref.rule for ref in refs}
        groups = self.store.groups(names)  # one query for every upstream rule
        for name in names:
            rule = rules.get(name)
            acting = rule is not None and self.acts(rule)
            threads = self.store.remediations(name) if acting else {}
            firing[name] = []
            for group, state in sorted(groups.get(name, {}).items()):
                # Only an announced upstream alert explains (a remediation speaks in its episode's thread): one
                # that records state only (notify: [], silenced) has no thread to tell its dependents in.
                thread = str(threads.get(group, {}).get("episode") or "") if acting else \
                    (state.episode if state.notified_at is not None else "")
                if state.state is State.FIRING and thread:
                    firing[name].append(deps.Upstream(name, group, thread, state.firing_since or state.since))
        return deps.matching(list(refs), firing)

    def route(self, rule: Rule, prev: Mapping[str, GroupState], new: Mapping[str, GroupState | None],
              notices: Mapping[str, tuple[Notice, ...]], quiet: Callable[[str], bool], now: datetime) -> Routing:
        """Route the notices of one evaluation of ``rule`` (a dependent rule); ``new`` holds every judged group's state."""
        routing = Routing()
        refs = self.refs.get(rule.name, [])
        records = self.store.explanations(rule.name).get(rule.name, {})
        upstreams = self.upstreams(refs) if refs else []
        settle = deps.Settle(duration=rule.depends_on_settle) if rule.depends_on_settle is not None else deps.DEFAULT_SETTLE
        for group in sorted(set(new) | set(notices)):
            before, after = prev.get(group), new.get(group, prev.get(group))
            change = change_of(group, before, after, notices.get(group, ()), quiet(group), now)
            decision = deps.decide(records.get(group), change, upstreams, settle, now)
            if decision.record != records.get(group):
                routing.explanations[group] = decision.record
            if decision.changed_notified and after is not None:
                routing.states[group] = replace(after, notified_at=now)
            routing.routed.extend(decision.routed)
        routing.rows = self.rows(rule, routing.routed)
        return routing

    def rows(self, rule: Rule, routed: Iterable[deps.Routed]) -> list[Row]:
        """The outbox rows of routed notices (see ``render_routed``)."""
        rules = self.rules()

        def channel(name: str) -> str | None:
            upstream = rules.get(name)
            return upstream.notify.channel if upstream is not None else rule.notify.channel

        return render_routed(rule, routed, self.word(rule), channel)


def render_routed(rule: Rule, routed: Iterable[deps.Routed], word: str, channel: Callable[[str], str | None]) -> list[Row]:
    """The outbox rows of routed notices of ``rule``: explained ones of one thread as one reply, in group order.

    ``word`` is what the rule type calls firing ("stale"); ``channel`` gives
    an upstream rule's Slack channel (where its thread is).
    """
    rows: list[Row] = []
    together: dict[tuple[str, str], list[deps.Routed]] = defaultdict(list)
    for item in routed:
        notice, by = item.notice, item.by
        if item.route is deps.Route.ALONE or by is None:
            rows.append((notice.group, notice.kind.value, notice.episode, render(rule, notice)))
        elif item.route is deps.Route.STILL:
            phrase = f"still {word} after {by.name} recovered: "
            payload = {**still_firing(render(rule, notice), phrase), "after_upstream": by.name}
            rows.append((notice.group, Kind.FIRING.value, notice.episode, payload))
        elif item.route is deps.Route.LINK:
            rows.append((notice.group, "link", notice.episode, render_link(rule, notice, by.name, by.episode)))
        else:
            together[(item.route.value, by.episode)].append(item)
    for (kind, episode), items in together.items():
        by = items[-1].by
        assert by is not None
        notes = [i.notice for i in items]
        group = notes[0].group if len(notes) == 1 else ""
        rows.append((group, kind, episode, render_explained(rule, kind, notes, by.name, episode, channel(by.rule))))
    return rows
