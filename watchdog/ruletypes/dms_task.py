"""``dms_task``: AWS DMS replication tasks that failed or stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from watchdog.rule import Rule
from watchdog.ruletypes.base import EvalContext, Evaluation, RuleType
from watchdog.ruletypes.dms_options import DmsTaskOptions


class DmsTaskRule(RuleType):
    name: ClassVar[str] = "dms_task"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset({"task", "status", "stop_reason", "last_failure"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> DmsTaskOptions:
        return DmsTaskOptions.from_mapping(data)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        raise NotImplementedError(f"evaluation of {cls.name} rules is not built yet")
