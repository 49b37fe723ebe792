"""``dms_remediate``: restart failed DMS tasks safely, then refresh the warehouse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from watchdog.rule import Rule
from watchdog.ruletypes.base import EvalContext, Evaluation, RuleType
from watchdog.ruletypes.dms_options import DmsRemediateOptions


class DmsRemediateRule(RuleType):
    name: ClassVar[str] = "dms_remediate"
    source_type: ClassVar[str] = "dms"
    message_fields: ClassVar[frozenset[str]] = frozenset({"task", "status", "step", "attempt"})
    acts: ClassVar[bool] = True

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> DmsRemediateOptions:
        return DmsRemediateOptions.from_mapping(data, rule_dir)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        raise NotImplementedError(f"evaluation of {cls.name} rules is not built yet")
