"""What every rule type provides, and what evaluation gives back.

A rule type turns validated YAML into a frozen options object, and turns a
source's answers into findings. It knows nothing of schedules, state or Slack.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from watchdog.logfmt import log
from watchdog.rule import Rule, Severity
from watchdog.sqlcheck import RefreshGrant

if TYPE_CHECKING:
    from watchdog.ruletypes.learned import Baselines

logger = logging.getLogger("watchdog.ruletypes")

Path = tuple[str | int, ...]


class RuleError(Exception):
    """An evaluation failure whose message is written for the user (shown as is)."""


class SourceUnavailable(RuleError):
    """A source did not answer (cannot connect, or timed out): reported once for the source, not per rule."""


@dataclass(frozen=True)
class Grants:
    """What the config grants a rule's SQL beyond the built-in allow-lists (see ``watchdog.sqlcheck``).

    ``sql_functions`` is ``rule_sql_functions``; ``refresh`` is what
    ``rule_refresh_sql`` lets a refresh run, None when no config was loaded
    (``validate`` without one: not checked, like ``rule_commands``).
    """

    sql_functions: frozenset[str] = frozenset()
    refresh: RefreshGrant | None = None


NO_GRANTS = Grants()


class OptionsError(Exception):
    """A logical problem in a rule's options that the schema cannot express."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Finding:
    """A condition that currently holds for one group of one rule."""

    group: str
    value: float | str | None
    summary: str
    severity: Severity | None = None  # None: the rule's severity
    details: Mapping[str, Any] = field(default_factory=dict)
    since: datetime | None = None  # when the condition began, when the source knows (a task's stop date, a last load)


@dataclass(frozen=True)
class Observation:
    """The present value of a group whose condition does not hold now: what its resolution states.

    ``summary`` says the present in words (``19 events in the last 5m (above
    20)``, ``task x is running``); a rule type's ``resolved_text`` turns it
    into the resolution's text.
    """

    group: str
    value: float | str | None
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """The result of evaluating one rule once.

    ``findings`` are the groups whose condition holds now; any other group in
    state is ok, except the groups in ``kept``: this evaluation could not
    judge them (their check failed), so they keep their state as it is,
    neither resolved nor advanced. ``present`` gives, for groups seen whose
    condition does not hold, their value now (resolutions state it).
    ``observed`` lists the groups seen at all (for rules that fire when a
    group goes quiet). ``facts`` are shown by ``watchdog status`` and given
    back to the next evaluation.
    """

    findings: tuple[Finding, ...] = ()
    kept: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    present: tuple[Observation, ...] = ()


@dataclass(frozen=True)
class Step:
    """One remediation step to record and announce (``firing`` opens the alert's thread, ``resolved`` closes it)."""

    kind: str  # firing | action | resolved | note (a note is audited and logged, never posted)
    text: str
    severity: Severity = Severity.WARNING
    detail: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False  # a rehearsal: announced as DRY RUN, never paging


class Journal(Protocol):
    """Where acting rule types keep their per-task progress, so a restart never repeats or loses a step."""

    def load(self, rule: Rule) -> dict[str, dict[str, Any]]:
        """The saved records of ``rule``, by group."""

    def record(self, rule: Rule, group: str, record: Mapping[str, Any], step: Step | None) -> None:
        """Save ``record`` and, in the same transaction, ``step``'s notification and audit row.

        A step of kind ``approval`` also opens an approval request for the
        record's episode (answered with ``decision``).
        """

    def decision(self, rule: Rule, episode: str) -> tuple[str, str] | None:
        """The approval of ``episode``: None if never asked, else (``waiting``, "") or (``approved``/``declined``, who)."""


@dataclass(frozen=True)
class RuleView:
    """What an acting rule may know of another rule: when it last ran, its alerting groups, its evaluation error."""

    type: str
    last_run: datetime | None
    alerting: frozenset[str]  # groups pending or firing
    error: str | None = None  # the last evaluation failed with this


@dataclass(frozen=True)
class EvalContext:
    """What the engine tells a rule type at evaluation time (all keyed by rule name)."""

    now: datetime
    active: Mapping[str, frozenset[str]] = field(default_factory=dict)  # groups pending or firing
    observed: Mapping[str, frozenset[str]] = field(default_factory=dict)  # groups seen by the previous evaluation
    facts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the previous evaluation's facts
    journal: Journal | None = None  # for rule types that act (remediation)
    sources: Any = None  # every source, for rule types that act on more than their own
    rules: Callable[[str], RuleView | None] | None = None  # other rules' state, for rule types that act
    baselines: Baselines | None = None  # where learned baselines are kept (freshness learn:, sql_value anomaly:)


def each_rule(rules: Sequence[Rule], evaluate_one: Callable[[Rule], Evaluation]) -> dict[str, Evaluation | Exception]:
    """Evaluate rules one at a time; one rule's failure is that rule's error (its exception), not the batch's."""
    out: dict[str, Evaluation | Exception] = {}
    for rule in rules:
        try:
            out[rule.name] = evaluate_one(rule)
        except Exception as exc:
            out[rule.name] = exc
    return out


def default_resolved_text(group: str, present: Observation | None) -> str:
    """The observation's summary, or that the source gave no current value for the group."""
    if present is not None:
        return present.summary
    where = f"{group}: " if group else ""
    return f"{where}the condition no longer holds (the source reports no current value)"


def resolution(rule_type: type[RuleType] | None, rule: Rule, group: str, seen: Observation | None) -> Observation:
    """``group``'s value now with its resolution text, from the rule type (see ``RuleType.resolved_text``).

    What a resolution states, for the daemon and for ``test-rule`` alike; ``seen`` is the group's
    observation in the evaluation that no longer finds it (None: the source gave none).
    """
    text = seen.summary if seen is not None else ""
    if rule_type is not None:
        try:
            text = rule_type.resolved_text(rule, group, seen)
        except Exception as exc:  # a rule type's bug must not lose the resolution
            log(logger, logging.ERROR, "resolved text failed", rule=rule.name, group=group or None, error=repr(exc))
            text = default_resolved_text(group, seen)
    return Observation(group=group, value=seen.value if seen is not None else None, summary=text,
                       details=seen.details if seen is not None else {})


class RuleType(ABC):
    """A kind of rule: its options and how to evaluate a batch of its rules."""

    name: ClassVar[str]
    source_type: ClassVar[str]
    message_fields: ClassVar[frozenset[str]]
    # True for rule types that act on the world (remediation); their evaluation is given an actuator.
    acts: ClassVar[bool] = False
    # True for rule types whose rules on one source are cheaper evaluated together (they share a schedule phase).
    batches: ClassVar[bool] = False
    # Rule types with the same batch key (e.g. every search type) are evaluated together; None: the type's name.
    batch_key: ClassVar[str | None] = None
    # What an alert of this type is while it fires, in "still stale after dms-tasks recovered" (see ``dependencies``).
    firing_word: ClassVar[str] = "firing"

    @classmethod
    @abstractmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Grants = NO_GRANTS) -> Any:
        """Build the frozen options object from validated YAML, within the config's ``grants``; raises OptionsError."""

    @classmethod
    @abstractmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        """Evaluate rules that share one source; one result (or exception) per rule name."""

    @classmethod
    def resolved_text(cls, rule: Rule, group: str, present: Observation | None) -> str:
        """What the resolution of ``group`` says: the present, never the firing text.

        Given the group's observation from this evaluation (None when the
        evaluation reported nothing about the group), returns one sentence.
        Rule types override it where absence means something specific.
        """
        return default_resolved_text(group, present)
