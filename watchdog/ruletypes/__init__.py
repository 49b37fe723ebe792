"""The rule types, by the name used in rule files' ``type`` key."""

from __future__ import annotations

from watchdog.ruletypes.base import RuleType
from watchdog.ruletypes.dms_remediate import DmsRemediateRule
from watchdog.ruletypes.dms_task import DmsTaskRule
from watchdog.ruletypes.freshness import FreshnessRule
from watchdog.ruletypes.metric import MetricRule
from watchdog.ruletypes.ratio import RatioRule
from watchdog.ruletypes.spike import SpikeRule
from watchdog.ruletypes.sql_value import SqlValueRule
from watchdog.ruletypes.threshold import ThresholdRule

RULE_TYPES: dict[str, type[RuleType]] = {
    cls.name: cls for cls in (ThresholdRule, MetricRule, RatioRule, SpikeRule, FreshnessRule, SqlValueRule, DmsTaskRule,
                              DmsRemediateRule)
}

COMMON_MESSAGE_FIELDS = frozenset({"rule", "group", "value", "severity", "description", "summary", "labels", "state"})


def register(cls: type[RuleType]) -> None:
    """Add a rule type (tests use this for a source-less type)."""
    RULE_TYPES[cls.name] = cls
