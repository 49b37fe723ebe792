"""A test-only rule type whose source answers what the test says, for engine tests where no real source is the point."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from watchdog.rule import NotifyTarget, Rule, Schedule, Severity
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, Observation, RuleType


@dataclass(frozen=True)
class ScriptedOptions:
    source: str = "scripted"


class ScriptedSource:
    """Answers per rule: a value (fires above 10), an exception, or a wait on an event (a hung source)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def answer(self, rule: str) -> Evaluation:
        value = self.values.get(rule, 0)
        if isinstance(value, threading.Event):
            value.wait(30)
            value = 0
        if isinstance(value, BaseException):
            raise value
        if isinstance(value, Evaluation):  # as given, however odd
            return value
        if isinstance(value, dict):  # group -> value
            findings = tuple(Finding(group=g, value=v, summary=f"value {v}") for g, v in value.items() if v > 10)
            present = tuple(Observation(group=g, value=v, summary=f"value {v} now") for g, v in value.items() if v <= 10)
            return Evaluation(findings=findings, observed=tuple(value), present=present)
        if value > 10:  # above 1000 it is critical
            severity = Severity.CRITICAL if value > 1000 else None
            return Evaluation(findings=(Finding(group="", value=value, summary=f"value {value}", severity=severity),))
        return Evaluation(present=(Observation(group="", value=value, summary=f"value {value} now"),))


class ScriptedRule(RuleType):
    name: ClassVar[str] = "scripted"
    source_type: ClassVar[str] = "scripted"
    message_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Any = None) -> ScriptedOptions:
        return ScriptedOptions()

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        with source.lock:
            source.calls.append(tuple(r.name for r in rules))
        out: dict[str, Evaluation | Exception] = {}
        for rule in rules:
            try:
                out[rule.name] = source.answer(rule.name)
            except Exception as exc:
                out[rule.name] = exc
        return out


class OneSource:
    def __init__(self, source: Any):
        self.source = source

    def get(self, name: str) -> Any:
        return self.source


def scripted_rule(name: str, *, every: timedelta = timedelta(minutes=1), for_: timedelta = timedelta(0),
                  repeat_every: timedelta = timedelta(hours=4), notify: bool = True, source: str = "scripted") -> Rule:
    return Rule(name=name, type="scripted", path=f"/rules/{name}.yaml", options=ScriptedOptions(source=source),
                schedule=Schedule(every=every), severity=Severity.WARNING, for_=for_, repeat_every=repeat_every,
                notify=NotifyTarget(enabled=notify))


TYPES = {"scripted": ScriptedRule}
