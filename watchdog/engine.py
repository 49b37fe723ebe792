"""The engine: which rules are due, batching them per source, and applying results.

Evaluation produces findings; ``lifecycle.step`` turns them into transitions
and notices; notices are rendered and written to the outbox in the same
transaction as the new state. The engine never talks to Slack.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from watchdog import lifecycle, schedule
from watchdog.baseline import Baseline
from watchdog.clocksteps import StepDetector
from watchdog.config import SearchSource as SearchConfig
from watchdog.escape import storable
from watchdog.explained import Explainer
from watchdog.logfmt import log
from watchdog.notify.render import render, render_step
from watchdog.notify.routing import Router
from watchdog.redact import redact
from watchdog.rule import NotifyTarget, Rule, Severity
from watchdog.ruletypes import RULE_TYPES
from watchdog.ruletypes.base import (
    EvalContext,
    Evaluation,
    Finding,
    Observation,
    RuleError,
    RuleType,
    RuleView,
    SourceUnavailable,
    Step,
    resolution,
)
from watchdog.runner import Batch, Finished, RuleTimeout, Runner
from watchdog.state import StateStore
from watchdog.state_db import Deposed, StoreError
from watchdog.storage import describe as describe_storage_error
from watchdog.times import from_text, to_text, utcnow
from watchdog.timetable import Timetable

logger = logging.getLogger("watchdog.engine")

GUARD_RETRY = timedelta(minutes=1)  # when a rule's schedule or evaluation fails unexpectedly
SELF_RULE = "(watchdog)"  # not a valid rule name, so it never collides with one
# How long past the expected completion of an evaluation (planned start + rule timeout) before watchdog is unhealthy.
HEALTH_GRACE_SECONDS = 60.0


def _group_key(group: str) -> str:
    """A group value as the state store keeps it (see ``state._Connection``)."""
    return redact(storable(group))


@dataclass
class EngineStats:
    """Counters for status, metrics and benchmarks."""

    evaluations: int = 0
    errors: int = 0
    notifications: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=10000))  # seconds late, per dispatch
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=10000))  # seconds, per batch


@dataclass
class Applied:
    """What one evaluation changed (returned for logging and tests)."""

    rule: str
    transitions: tuple[lifecycle.Transition, ...]
    notices: tuple[lifecycle.Notice, ...]
    error: str | None


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, RuleError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def self_rule(ops_channel: str | None) -> Rule:
    """The rule watchdog's own problems are alerted under."""
    return Rule(name=SELF_RULE, type="self", path="", options=None, severity=Severity.WARNING,
                repeat_every=timedelta(days=1), notify=NotifyTarget(channel=ops_channel),
                description="watchdog's own problems")


def _unanswered(result: object) -> bool:
    """Whether an evaluation failed because its source did not answer (cannot connect, timed out)."""
    return isinstance(result, (SourceUnavailable, RuleTimeout))


def _fixed(group: str) -> str:
    """What the resolution of one of watchdog's own problems says."""
    if group.startswith("source "):
        return f"{group} answers again"
    if group.endswith((".yaml", ".yml")):
        return f"{group} loads again"
    return f"{group}: no longer a problem"


class StoreBaselines:
    """Learned baselines kept in the state store (see ``ruletypes.learned.Baselines``).

    What an evaluation learns is held here (``save`` runs on a worker thread) and written with the
    evaluation's outcome, in its one leader transaction (``learned``, then ``written``); until then
    ``load`` sees it too.
    """

    def __init__(self, store: StateStore):
        self.store = store
        self._lock = threading.Lock()
        self._learned: dict[str, dict[str, Baseline]] = {}

    def load(self, rule: str) -> dict[str, Baseline]:
        kept = self.store.baselines(rule)
        with self._lock:
            kept.update(self._learned.get(rule, {}))
        return kept

    def save(self, rule: str, items: Mapping[str, Baseline], now: datetime) -> None:
        with self._lock:
            self._learned.setdefault(rule, {}).update(items)

    def learned(self, rule: str) -> dict[str, Baseline]:
        """What ``rule`` learned and is not written yet, by item."""
        with self._lock:
            return dict(self._learned.get(rule, {}))

    def written(self, rule: str, items: Mapping[str, Baseline]) -> None:
        """Forget ``items`` (``learned``'s answer) once written; what was learned since stays held."""
        with self._lock:
            held = self._learned.get(rule, {})
            for item, baseline in items.items():
                if held.get(item) is baseline:
                    del held[item]
            if not held:
                self._learned.pop(rule, None)


def route(router: Router | None, store: StateStore, payload: dict[str, Any], kind: str, episode: str,
          now: datetime) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any] | None]:
    """The outbox rows (receiver, payload) of one notification, and an audit detail of what was held back.

    Without a router everything goes to the main notifier (``""``), as before routes existed.
    """
    if router is None:
        return [("", payload)], None
    given = functools.cache(lambda: store.given(episode))  # one query per notification, and only if routing asks
    rows, routing = router.rows(payload, kind, now, lambda receiver: given().get(receiver), lambda: set(given()))
    held = None
    if routing.held:
        held = {"kind": kind, "receivers": [t.receiver for t in routing.held],
                "routes": sorted({t.route for t in routing.held if t.route is not None}), "why": list(routing.trace)}
    return rows, held


class StoreJournal:
    """The Journal of acting rule types, kept in the state store (see ``ruletypes.base.Journal``)."""

    def __init__(self, store: StateStore, clock: Callable[[], datetime], on_notify: Callable[[], None]):
        self.store = store
        self.clock = clock
        self.on_notify = on_notify
        self.router: Router | None = None  # routes (None: everything to the main notifier)

    def load(self, rule: Rule) -> dict[str, dict[str, Any]]:
        return self.store.remediations(rule.name)

    def record(self, rule: Rule, group: str, record: Mapping[str, Any], step: Step | None) -> None:
        now = self.clock()
        notification = audit = None
        rows: list[tuple[str, dict[str, Any]]] | None = None
        if step is not None:
            audit = (f"{step.kind}: {step.text}", dict(step.detail))
            # A question for a person (an approval) is asked even while the rule is silenced.
            muted = step.kind == "note" or not rule.notify.enabled or (step.kind != "approval" and any(
                s.covers(rule.name, group, now) for s in self.store.silences(now)))
            if not muted:
                since = from_text(record.get("since"))
                payload = render_step(rule, group, step.kind, step.text, step.severity.value, now, since, step.detail,
                                      dry_run=step.dry_run)
                payload["actions"] = False  # a step is no alert: no Acknowledge or Silence buttons
                if step.kind == "approval":
                    payload["approval"] = True  # the Slack notifier adds Approve and Decline
                notification = (step.kind, str(record.get("episode", "")), payload)
                rows, _ = route(self.router, self.store, payload, step.kind, notification[1], now)
            log(logger, logging.INFO, "remediation step", rule=rule.name, group=group, step=step.kind, text=step.text,
                severity=step.severity.value, dry_run=step.dry_run or None, muted=muted or None)
        self.store.record_step(rule.name, group, record, now, notification, audit,
                               approval=step is not None and step.kind == "approval", receivers=rows)
        if notification is not None:
            self.on_notify()

    def decision(self, rule: Rule, episode: str) -> tuple[str, str] | None:
        approval = self.store.approval(episode) if episode else None
        if approval is None:
            return None
        if approval["decision"] is None:
            return ("waiting", "")
        return (str(approval["decision"]), f"Slack user {approval['by']}")


class Engine:
    def __init__(self, rules: Sequence[Rule], store: StateStore, sources: Any, *, workers: int = 4,
                 timeout: timedelta = timedelta(seconds=60), clock: Callable[[], datetime] = utcnow,
                 rule_types: Mapping[str, type[RuleType]] = RULE_TYPES,
                 on_notify: Callable[[], None] | None = None, ops_channel: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_storage: Callable[[str | None, datetime | None], None] | None = None):
        self.store = store
        # Evaluations that could not be written (full disk, failing storage), by rule, oldest first.
        self.held: dict[str, tuple[Rule, Evaluation | BaseException, datetime, float]] = {}
        self.storage_error: str | None = None
        self.storage_since: datetime | None = None
        self.on_storage = on_storage or (lambda error, since: None)
        self.monotonic = monotonic
        self.timeout = timeout.total_seconds()
        self.steps = StepDetector()
        # Monotonic time by which some evaluation must complete, or watchdog is unhealthy (None: nothing expected yet).
        self.expected_by: float | None = None
        self.last_completed: float | None = None
        self.sources = sources
        self.clock = clock
        self.rule_types = rule_types
        self.on_notify = on_notify or (lambda: None)
        self.ops_channel = ops_channel
        self.wake = threading.Event()
        self.runner = Runner(workers, timeout.total_seconds(), self.wake)
        self.rules: dict[str, Rule] = {}
        self.next_run = Timetable()
        # Rules found due while still running (a stuck thread): looked at on every pass until they are free.
        self.deferred: dict[str, datetime] = {}
        self._order: dict[str, int] = {}  # a rule's place in the rule set: due rules are dispatched in this order
        self.stats = EngineStats()
        self.journal = StoreJournal(store, clock, self._note_recorded)
        self.explainer = Explainer(store, self._known_rules, self._acts, self._firing_word)
        self.baselines = StoreBaselines(store)
        self._router: Router | None = None
        self._quiet_until: datetime | None = None  # read by the delivery thread: see quiet_until
        self._recorded = False  # notifications recorded since the engine was last quiet
        self.invalid_files: dict[str, str] = {}  # rule files that do not load -> the self alert's text
        self.own_problems: dict[str, str] = {}  # watchdog's other problems (Slack Socket Mode down)
        self.socket: Any = None  # the Slack Socket Mode health, when buttons are on (for metrics and status)
        self.source_problems: dict[str, str] = {}  # sources that do not answer -> their last error
        self.set_rules(rules)

    @property
    def router(self) -> Router | None:
        """The routes notifications are recorded for (None: everything to the main notifier)."""
        return self._router

    @router.setter
    def router(self, router: Router | None) -> None:
        self._router = router
        self.journal.router = router

    def _note_recorded(self) -> None:
        self._recorded = True
        self.on_notify()

    def quiet_until(self) -> datetime | None:
        """The earliest moment an evaluation could record another notification (None: any moment).

        Safe to call from another thread: the engine thread replaces the value
        after each dispatch and collect. The outbox ends a group wait early
        when nothing can join the group before it would end.
        """
        return self._quiet_until

    def _update_quiet(self) -> None:
        if not self.runner.idle():
            self._quiet_until = None
            return
        self._quiet_until = self._soonest() or self.clock() + timedelta(days=1)
        if self._recorded:
            self._recorded = False
            self.on_notify()  # let the delivery thread see that what it holds is complete

    def set_rules(self, rules: Sequence[Rule]) -> list[str]:
        """Replace the rule set; returns the names of removed rules (their alerts are resolved)."""
        now = self.clock()
        records = self.store.rule_records()
        new = {r.name: r for r in rules if r.enabled}
        removed = [name for name in self.rules if name not in new]
        for name in removed:
            try:
                self._resolve_removed(self.rules[name], now)
            except Exception:  # its alerts stay as they are; the other rules carry on
                logger.error("cannot resolve the alerts of a removed rule", exc_info=True,
                             extra={"fields": {"rule": name}})
            self.next_run.pop(name, None)
        for name, rule in new.items():
            old = self.rules.get(name)
            if old is None or old.schedule != rule.schedule or name not in self.next_run:
                stored = records[name].next_run if name in records else None
                self.next_run[name] = self._planned(
                    rule, now, lambda rule=rule, stored=stored: schedule.first_run(  # type: ignore[misc]
                        self._phase_key(rule), rule.schedule, now, stored))
        self.rules = new
        self._order = {name: i for i, name in enumerate(new)}
        self.explainer.set_rules(new.values())
        self.expected_by = None
        return removed

    def _known_rules(self) -> Mapping[str, Rule]:
        """The rules by name, watchdog's own self-monitoring rule included (rules may depend on it)."""
        return {**self.rules, SELF_RULE: self_rule(self.ops_channel)}

    def _acts(self, rule: Rule) -> bool:
        rule_type = self.rule_types.get(rule.type)
        return rule_type is not None and rule_type.acts

    def _firing_word(self, rule: Rule) -> str:
        rule_type = self.rule_types.get(rule.type)
        return rule_type.firing_word if rule_type is not None else "firing"

    def load_from_store(self) -> None:
        """Start leading (another instance may have led until now): read the state again.

        Schedules come from the rule records the previous leader wrote, results
        held while deposed are dropped (the other leader wrote its own), and
        watchdog's own problems are reported again. Any in-memory copy of the
        store's state (rule records, groups) must be (re)loaded here: while this
        instance stood by, the leader changed the store under it.
        """
        self.held.clear()
        self.storage_error = self.storage_since = None
        rules = list(self.rules.values())
        self.rules, self.next_run, self.deferred = {}, Timetable(), {}
        self.set_rules(rules)
        self.last_completed = None
        self._report_self()

    def stand_by(self) -> None:
        """Stop leading: nothing is expected of this instance until it leads again (it stays healthy)."""
        self.expected_by = None

    def _planned(self, rule: Rule, now: datetime, plan: Callable[[], datetime]) -> datetime:
        """``plan()``, or a retry in a minute when it fails: a schedule that cannot be computed never stops the loop."""
        try:
            return plan()
        except Exception:
            logger.error("cannot compute the next run; retrying in a minute", exc_info=True,
                         extra={"fields": {"rule": rule.name}})
            return now + GUARD_RETRY

    def _phase_key(self, rule: Rule) -> str:
        """What a rule's schedule jitter derives from.

        Rules whose type batches (one ``_msearch`` for all rules due together on
        a source) share the phase of their source, so they come due together;
        the others spread by their own name.
        """
        rule_type = self.rule_types.get(rule.type)
        if rule_type is not None and rule_type.batches:
            return f"{self._batch_key(rule)}/{rule.source}"
        return rule.name

    def _batch_key(self, rule: Rule) -> str:
        """Rules with the same batch key and source are evaluated together (all search types share one)."""
        rule_type = self.rule_types.get(rule.type)
        return (rule_type.batch_key if rule_type is not None else None) or rule.type

    def _resolve_removed(self, rule: Rule, now: datetime) -> None:
        # A removed rule resolves now: it will not be evaluated again to see its condition stay false.
        gone = tuple(Observation(group=g, value=None, summary="the rule was removed or disabled; its alert is closed")
                     for g in self.store.groups(rule.name).get(rule.name, {}))
        applied = self._apply(replace(rule, keep_firing_for=timedelta(0)), Evaluation(present=gone), now, now, 0.0)
        try:
            self.store.forget_rule(rule.name)
        except Deposed:  # the leader removes it
            pass
        except StoreError as exc:  # its rows stay until a later removal succeeds; status still shows them
            self._storage_failed(exc)
        log(logger, logging.INFO, "rule removed", rule=rule.name, resolved=len(applied.transitions))

    # --- scheduling ------------------------------------------------------------------

    def due(self, now: datetime) -> list[Rule]:
        """The rules planned at or before ``now`` and not running, in rule-set order; the caller dispatches them.

        Costs the due rules, not the rule set (see ``timetable``): a rule
        returned here leaves the timetable's heap until its next run is set.
        """
        candidates = [name for name, when in self.deferred.items() if self.next_run.get(name) == when]
        candidates += self.next_run.take_due(now)
        self.deferred = {}
        if not candidates:
            return []
        busy = self.runner.busy()
        out: dict[str, Rule] = {}
        for name in candidates:
            if name in busy:
                self.deferred[name] = self.next_run[name]
            elif name in self.rules:
                out[name] = self.rules[name]
        return sorted(out.values(), key=lambda r: self._order.get(r.name, 0))

    def _soonest(self) -> datetime | None:
        """The earliest planned run of a rule not in flight (None: no rules)."""
        times = [t for name, t in self.deferred.items() if self.next_run.get(name) == t]
        soonest = self.next_run.soonest()
        if soonest is not None:
            times.append(soonest)
        return min(times, default=None)

    def dispatch(self, rules: Sequence[Rule], now: datetime) -> None:
        """Hand the rules to the runner, one batch per (batch key, source): every search type due on a source together."""
        batches: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        for rule in rules:
            batches[(self._batch_key(rule), rule.source)].append(rule)
        names = [rule.name for rule in rules]  # only these rules' rows: a dispatch costs its batch, not the rule set
        active = self.store.groups(names)
        records = self.store.rule_records(names)
        for (_, source_name), batch in batches.items():
            try:
                self._dispatch_batch(source_name, batch, active, records, now)
            except Exception as exc:  # each rule of the batch is in error; the other batches go out
                logger.error("cannot dispatch an evaluation", exc_info=True,
                             extra={"fields": {"rules": ",".join(r.name for r in batch)}})
                for rule in batch:
                    self.next_run[rule.name] = now + GUARD_RETRY
                    self._apply_guarded(rule, exc, now, now, 0.0)

    def _dispatch_batch(self, source_name: str, batch: list[Rule], active: Mapping[str, Any],
                        records: Mapping[str, Any], now: datetime) -> None:
        """Hand one batch to the runner."""
        rule_type = self.rule_types[batch[0].type]
        ctx = EvalContext(
            now=now, active={r.name: frozenset(active.get(r.name, {})) for r in batch},
            observed={r.name: frozenset(records[r.name].facts.get("observed", ())) if r.name in records else frozenset()
                      for r in batch},
            facts={r.name: records[r.name].facts for r in batch if r.name in records and records[r.name].facts},
            journal=self.journal if rule_type.acts else None, sources=self.sources if rule_type.acts else None,
            rules=self.view if rule_type.acts else None, baselines=self.baselines)
        planned = {r.name: self.next_run[r.name] for r in batch}
        self.stats.lags.extend((now - t).total_seconds() for t in planned.values())

        def work(rule_type: type[RuleType] = rule_type, batch: list[Rule] = batch, source_name: str = source_name,
                 ctx: EvalContext = ctx) -> Mapping[str, Any]:
            # The window ends when the search goes out, not when the batch was queued: a batch that waited
            # for a worker (or for the CPU) still sees the events that arrived meanwhile.
            return rule_type.evaluate(batch, self.sources.get(source_name), replace(ctx, now=max(ctx.now, self.clock())))

        self._quiet_until = None
        # A search only reads: a stop abandons it rather than wait for a cluster that holds it.
        reads_only = not rule_type.acts and isinstance(getattr(self.sources, "configs", {}).get(source_name), SearchConfig)
        self.runner.submit(Batch(rules=tuple(r.name for r in batch), work=work, planned=(now, planned),
                                 writes=not reads_only))

    def view(self, name: str) -> RuleView | None:
        """Another rule's state as an acting rule may see it (None: no such rule)."""
        rule = self.rules.get(name)
        if rule is None:
            return None
        record = self.store.rule_record(name)
        groups = self.store.groups(name).get(name, {})
        return RuleView(type=rule.type, last_run=record.last_run if record else None,
                        alerting=frozenset(g for g, s in groups.items() if s.state != lifecycle.State.OK),
                        error=record.health.last_error if record and record.health.errors else None)

    def collect(self) -> list[Applied]:
        """Apply every finished evaluation; returns what changed."""
        applied: list[Applied] = []
        for finished in self.runner.collect():
            self.stats.durations.append(finished.duration)
            applied.extend(self._apply_batch(finished))
            self.last_completed = self.monotonic()
            self.expected_by = None
        self._update_quiet()
        return applied

    def _apply_batch(self, finished: Finished) -> list[Applied]:
        ran_at, planned = finished.batch.planned
        now = self.clock()
        out = []
        answered: set[str] = set()
        silent: dict[str, str] = {}
        for name, result in finished.outcome.items():
            rule = self.rules.get(name)
            if rule is None:  # removed while it ran
                self.baselines.written(name, self.baselines.learned(name))
                continue
            if _unanswered(result):
                silent.setdefault(rule.source, _describe_error(result))
            elif not isinstance(result, BaseException):
                answered.add(rule.source)
            # A clock set back while this ran would otherwise put its next run a whole step away.
            following = self._planned(rule, now, lambda rule=rule, name=name: schedule.following_run(  # type: ignore[misc]
                self._phase_key(rule), rule.schedule, planned[name], now))
            self.next_run[name] = schedule.clamp(rule.schedule, following, now)
            applied = self._apply_guarded(rule, result, ran_at, now, finished.duration)
            if applied is not None:
                out.append(applied)
        self._note_sources(silent, answered - set(silent))
        return out

    def _note_sources(self, silent: Mapping[str, str], answered: set[str]) -> None:
        """Raise one self-monitoring alert per source that does not answer (at its first timeout); resolve it when it does."""
        before = dict(self.source_problems)
        for source in answered:
            self.source_problems.pop(source, None)
        for source, error in silent.items():
            if source not in self.source_problems:
                log(logger, logging.WARNING, "source does not answer", source=source, error=error)
            self.source_problems[source] = error
        if set(before) != set(self.source_problems):
            for source in set(before) - set(self.source_problems):
                log(logger, logging.INFO, "source answers again", source=source)
            self._report_self()

    def _apply_guarded(self, rule: Rule, result: Evaluation | BaseException, ran_at: datetime, now: datetime,
                       duration: float) -> Applied | None:
        """``_apply``, where an unexpected exception (a bug in a rule type or in rendering) puts the rule in error.

        Returns None only when even recording the error fails (the state store is broken).
        """
        try:
            return self._apply(rule, result, ran_at, now, duration)
        except Exception as exc:
            logger.error("cannot apply an evaluation; the rule is in error", exc_info=True,
                         extra={"fields": {"rule": rule.name}})
            if isinstance(result, BaseException):
                return None  # the error itself could not be recorded
            try:
                return self._apply(rule, RuleError(f"internal error: {_describe_error(exc)}"), ran_at, now, duration)
            except Exception:
                logger.error("cannot record a rule error", exc_info=True, extra={"fields": {"rule": rule.name}})
                return None

    def _apply(self, rule: Rule, result: Evaluation | BaseException, ran_at: datetime, now: datetime,
               duration: float) -> Applied:
        """Record one evaluation; when the state database cannot be written, hold it in memory instead.

        A held evaluation is replaced by the rule's next one (the newer finding
        is the truth now), so what is held stays bounded by the number of
        rules; ``retry_held`` writes them once the database takes writes again.
        """
        try:
            applied = self._record(rule, result, ran_at, now, duration)
        except Deposed as exc:  # another instance leads now: it evaluates again; this result is not ours to write
            self.baselines.written(rule.name, self.baselines.learned(rule.name))  # nor what it learned
            log(logger, logging.INFO, "evaluation not recorded: no longer the leader", rule=rule.name, error=str(exc))
            return Applied(rule.name, (), (), None)
        except StoreError as exc:
            self.held.pop(rule.name, None)
            self.held[rule.name] = (rule, result, ran_at, duration)
            self._storage_failed(exc)
            return Applied(rule.name, (), (), _describe_error(result) if isinstance(result, BaseException) else None)
        self.held.pop(rule.name, None)
        return applied

    def retry_held(self) -> None:
        """Write held evaluations, oldest first, stopping at the first that still fails."""
        if not self.held:
            return
        for name, (rule, result, ran_at, duration) in list(self.held.items()):
            try:
                self._record(rule, result, ran_at, self.clock(), duration)
            except Deposed:  # the leader now writes its own results
                self.held.clear()
                return
            except StoreError as exc:
                self._storage_failed(exc)
                return
            del self.held[name]
        log(logger, logging.WARNING, "state database writable again; held evaluations written",
            since=to_text(self.storage_since))
        self.storage_error = None
        self.on_storage(None, self.storage_since)
        self.storage_since = None

    def _storage_failed(self, exc: StoreError) -> None:
        error = describe_storage_error(exc)
        if self.storage_error is None:
            self.storage_since = self.clock()
            log(logger, logging.ERROR, "state database cannot be written; holding results in memory and retrying",
                error=error, held=len(self.held))
            self.on_storage(error, self.storage_since)
        self.storage_error = error

    def _record(self, rule: Rule, result: Evaluation | BaseException, ran_at: datetime, now: datetime,
                duration: float) -> Applied:
        record = self.store.rule_record(rule.name)
        prev_health = record.health if record else lifecycle.Health()
        prev_states = self.store.groups(rule.name).get(rule.name, {})
        silences = self.store.silences(now)
        acks = self.store.acks(rule.name)

        acts = self.rule_types[rule.type].acts if rule.type in self.rule_types else False

        def silenced(group: str) -> bool:
            prev = prev_states.get(group)
            episode = prev.episode if prev is not None else None
            return not rule.notify.enabled or any(s.covers(rule.name, group, now, episode) for s in silences)

        def acknowledged(group: str) -> Severity | None:
            prev, ack = prev_states.get(group), acks.get(group)
            return ack.severity if ack is not None and prev is not None and ack.episode == prev.episode else None

        def quiet(group: str) -> bool:  # acting rules speak through their journal
            return acts or silenced(group)

        policy = lifecycle.Policy.of(rule)
        states: dict[str, lifecycle.GroupState | None] = {}
        judged: dict[str, lifecycle.GroupState | None] = {}  # every group judged now, changed or not
        transitions: list[lifecycle.Transition] = []
        notices: list[lifecycle.Notice] = []
        facts = None
        error = None
        if isinstance(result, BaseException):
            error = _describe_error(result)
            # A source that does not answer is reported once for the source, not once per rule on it.
            health, notice = lifecycle.health_step(prev_health, error, now, silenced=silenced("") or _unanswered(result))
            log(logger, logging.WARNING, "evaluation failed", rule=rule.name, error=error, errors=health.errors)
        else:
            health, notice = lifecycle.health_step(prev_health, None, now, silenced=silenced(""))
            facts = dict(result.facts)
            if result.observed:
                facts["observed"] = sorted({_group_key(g) for g in result.observed})
            # Groups come from data: made storable (a lone surrogate) and redacted as the state store will
            # write them, so a group is the same group in memory and on disk.
            findings = {_group_key(f.group): f if _group_key(f.group) == f.group else replace(f, group=_group_key(f.group))
                        for f in result.findings}
            present = {storable(o.group): o for o in result.present}
            for group in sorted(set(prev_states) | set(findings)):
                if group not in findings and group in result.kept:
                    continue  # not judged this time (its check failed): neither resolved nor advanced
                now_value = None
                if group not in findings and group in prev_states:
                    now_value = self._resolution(rule, group, present.get(group))
                moved = lifecycle.step(policy, group, prev_states.get(group), findings.get(group), now,
                                       silenced=quiet(group), acknowledged=acknowledged(group), present=now_value)
                if moved.state != prev_states.get(group):
                    states[group] = moved.state
                judged[group] = moved.state
                transitions.extend(moved.transitions)
                notices.extend(moved.notices)
        explanations = None
        if rule.name in self.explainer.refs and error is None:
            # A rule that depends on others: its notices are routed by what explains them (see ``dependencies``).
            by_group: dict[str, tuple[lifecycle.Notice, ...]] = {}
            for n in notices:
                by_group[n.group] = by_group.get(n.group, ()) + (n,)
            routing = self.explainer.route(rule, prev_states, judged, by_group, quiet, now)
            states.update(routing.states)
            explanations = routing.explanations
            rows = routing.rows
        else:
            rows = [(n.group, n.kind.value, n.episode, render(rule, n)) for n in notices]
        if notice is not None:
            notices.append(notice)
            rows.append((notice.group, notice.kind.value, notice.episode, self._route(render(rule, notice), notice.kind)))
        routed_rows, held = self._routed(rows, now)
        next_run = self.next_run.get(rule.name, now)
        learned = self.baselines.learned(rule.name)
        self.store.record_evaluation(rule.name, ran_at=ran_at, next_run=next_run, duration=duration, health=health,
                                     states=states, notifications=routed_rows, facts=facts,
                                     audit=[(t.group, f"{t.from_}->{t.to}", {"value": t.value}) for t in transitions]
                                     + held,
                                     recorded_at=now, explanations=explanations, baselines=learned)
        self.baselines.written(rule.name, learned)
        for t in transitions:
            log(logger, logging.INFO, "transition", rule=rule.name, group=t.group or None, state=t.to, previous=t.from_,
                value=t.value, severity=t.severity.value)
        if error is None:
            log(logger, logging.DEBUG, "evaluated", rule=rule.name, findings=len(states), duration=duration)
        self.stats.evaluations += 1
        self.stats.errors += error is not None
        self.stats.notifications += len(rows)
        if rows:
            self._note_recorded()
        return Applied(rule.name, tuple(transitions), tuple(notices), error)

    def _routed(self, rows: Sequence[tuple[str, str, str, Mapping[str, Any]]], now: datetime
                ) -> tuple[list[tuple[str, str, str, Mapping[str, Any], str]], list[tuple[str, str, Mapping[str, Any]]]]:
        """Each (group, kind, episode, payload) row once per receiver its routes give it (with the receiver),
        and the audit rows of what muted routes held back."""
        out: list[tuple[str, str, str, Mapping[str, Any], str]] = []
        held: list[tuple[str, str, Mapping[str, Any]]] = []
        for group, kind, episode, payload in rows:
            routed, muted = route(self.router, self.store, dict(payload), kind, episode, now)
            out += [(group, kind, episode, routed_payload, receiver) for receiver, routed_payload in routed]
            if muted is not None:  # a muted route sends nothing; what it held back is recorded
                held.append((group, "held back", muted))
        return out, held

    def _resolution(self, rule: Rule, group: str, seen: Observation | None) -> Observation:
        return resolution(self.rule_types.get(rule.type), rule, group, seen)

    def _route(self, payload: dict[str, Any], kind: lifecycle.Kind) -> dict[str, Any]:
        """watchdog's own problems (a rule that keeps failing) go to the ops channel when there is one."""
        if self.ops_channel and kind in (lifecycle.Kind.ERROR, lifecycle.Kind.RECOVERED):
            payload["channel"] = self.ops_channel
        return payload

    def report_invalid_files(self, problems: Mapping[str, str]) -> None:
        """Alert once per rule file that fails to load (the previous version keeps running); resolve when fixed."""
        self.invalid_files = {f: f"rule file does not load: {m}" for f, m in problems.items()}
        self._report_self()

    def report_problem(self, group: str, summary: str | None) -> None:
        """Raise (or, with None, resolve) one of watchdog's own problems, e.g. the Slack connection being down."""
        if summary is None:
            if self.own_problems.pop(group, None) is None:
                return
        else:
            self.own_problems[group] = summary
        self._report_self()

    def _report_self(self) -> None:
        """Apply watchdog's own problems as the findings of its self-monitoring rule (one group per problem)."""
        problems = {**self.invalid_files, **self.own_problems}
        if not problems and not self.source_problems and not self.store.groups(SELF_RULE):
            return
        now = self.clock()
        rule = self_rule(self.ops_channel)
        findings = tuple(Finding(group=f, value=None, summary=m) for f, m in problems.items())
        # The errors of the rules on a source that does not answer join its alert (named in it), never alone.
        findings += tuple(Finding(group=f"source {s}", value=None, severity=Severity.CRITICAL,
                                  summary=f"source {s} does not answer; its rules cannot be evaluated"
                                          f"{self._rules_on(s)}: {m}")
                          for s, m in self.source_problems.items())
        current = {f.group for f in findings}
        fixed = tuple(Observation(group=g, value=None, summary=_fixed(g))
                      for g in self.store.groups(SELF_RULE).get(SELF_RULE, {}) if g not in current)
        self._apply_guarded(rule, Evaluation(findings=findings, present=fixed), now, now, 0.0)

    def _rules_on(self, source: str, shown: int = 10) -> str:
        """`` (a, b and 3 more)``: the rules on ``source``, for its alert."""
        names = sorted(name for name, rule in self.rules.items() if rule.options is not None and rule.source == source)
        if not names:
            return ""
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return f" ({', '.join(names[:shown])}{more})"

    # --- driving ------------------------------------------------------------------------

    def run_pending(self) -> list[Applied]:
        """Collect finished work and dispatch what is due now."""
        self.retry_held()
        applied = self.collect()
        now = self.clock()
        self.follow_clock(now)
        due = self.due(now)
        if due:
            self.dispatch(due, now)
        self._expect(now)
        return applied

    def follow_clock(self, now: datetime) -> timedelta | None:
        """Detect a wall-clock step since the last call; move interval schedules and retries with it.

        Interval rules keep the time left until their next run, measured on
        the monotonic clock; cron rules keep their wall-clock times (that is
        what cron means: a clock set back runs nothing twice, one set forward
        runs what it skipped once). Outbox retries are moved by the step too.
        Returns the step, or None.
        """
        jump = self.steps.step(now, self.monotonic())
        if jump is None:
            return None
        log(logger, logging.WARNING, "wall clock stepped", seconds=round(jump.total_seconds(), 3), now=now.isoformat())
        if jump < timedelta(0):  # set back; a step forward needs nothing: what became due runs once
            for name, rule in self.rules.items():
                if rule.schedule.every is not None:
                    self.next_run[name] = schedule.clamp(rule.schedule, self.next_run[name] + jump, now)
            try:
                self.store.shift_retries(jump, now)
            except Deposed:
                pass
            except StoreError as exc:
                self._storage_failed(exc)
            self.on_notify()
        return jump

    def _expect(self, now: datetime) -> None:
        """Note by when (monotonic) the next evaluation should complete, if not noted since the last one."""
        if self.expected_by is not None or not self.next_run:
            return
        soonest = self._soonest()
        if soonest is None:  # every rule is running: the next completes within the timeout
            soonest = now
        self.expected_by = self.monotonic() + max(0.0, (soonest - now).total_seconds()) + self.timeout + HEALTH_GRACE_SECONDS

    def health(self) -> tuple[bool, str]:
        """Whether evaluations complete when expected (on the monotonic clock, immune to clock steps), and why."""
        mono = self.monotonic()
        since = "never" if self.last_completed is None else f"{mono - self.last_completed:.0f}s ago"
        if self.expected_by is not None and mono > self.expected_by:
            return False, (f"no evaluation completed in the expected time (last completed {since}, one was due "
                           f"{mono - self.expected_by + HEALTH_GRACE_SECONDS:.0f}s ago including the rule timeout)")
        return True, f"last evaluation completed {since}"

    def seconds_until_next(self) -> float:
        """How long the loop may sleep: until the next rule is due or a running batch's deadline."""
        now = self.clock()
        soonest = self.next_run.soonest()  # deferred rules are running: their end wakes the loop
        waits = [] if soonest is None else [(soonest - now).total_seconds()]
        deadline = self.runner.next_deadline()
        if deadline is not None:
            waits.append(deadline - time.monotonic())
        return max(0.0, min(waits, default=60.0))

    def run_all_once(self, timeout: float) -> list[Applied]:
        """Evaluate every rule now and wait for all of them (``watchdog run --once``).

        Rules that only observe run first and rules that act (remediation)
        after them, so one round reports the world as it found it before
        changing it; each phase's results are applied in rule-name order, so
        the same world gives the same transitions and notifications, in the
        same order, every run.
        """
        deadline = time.monotonic() + timeout
        applied: list[Applied] = []
        for acting in (False, True):
            phase = [r for r in self.rules.values() if r.type in self.rule_types and self.rule_types[r.type].acts == acting]
            now = self.clock()
            for rule in phase:
                self.next_run[rule.name] = now
            self.dispatch(phase, now)
            finished: list[Finished] = []
            while not self.runner.idle() and time.monotonic() < deadline:
                self.wake.wait(0.2)
                self.wake.clear()
                finished.extend(self.runner.collect())
            for done in sorted(finished, key=lambda f: f.batch.rules):
                self.stats.durations.append(done.duration)
                applied.extend(self._apply_batch(done))
        return applied
