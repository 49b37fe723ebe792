"""Options of the ``sql_value`` rule type: read-only queries that return numbers, and their thresholds."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from watchdog import sqlcheck
from watchdog.ruletypes.base import OptionsError
from watchdog.ruletypes.learned import Anomaly, anomaly_options
from watchdog.ruletypes.thresholds import Threshold


@dataclass(frozen=True)
class ValueCheck:
    """One query: one number, or (group, number) rows; compared with ``threshold`` and/or its learned ``anomaly``."""

    name: str
    sql: str
    threshold: Threshold | None
    anomaly: Anomaly | None = None


@dataclass(frozen=True)
class SqlValueOptions:
    source: str
    checks: tuple[ValueCheck, ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], functions: Collection[str] = ()) -> SqlValueOptions:
        """Build from validated YAML; raises OptionsError (a second statement, a write, a check without a threshold).

        ``functions`` are the config's ``rule_sql_functions``.
        """
        default = Threshold.from_mapping(data["threshold"]) if "threshold" in data else None
        checks = []
        seen: set[str] = set()
        for index, raw in enumerate(data["checks"]):
            path = ("checks", index)
            name = raw["name"]
            if name in seen:
                raise OptionsError(path + ("name",), f"check name '{name}' is used twice in this rule")
            seen.add(name)
            problem = sqlcheck.check_query(raw["sql"], functions)
            if problem is not None:
                raise OptionsError(path + ("sql",), f"must be one read-only query: {problem}")
            anomaly = anomaly_options(raw["anomaly"], path + ("anomaly",), functions) if "anomaly" in raw else None
            threshold: Threshold | None
            if "threshold" in raw:
                threshold = Threshold.from_mapping(raw["threshold"], path + ("threshold",))
            elif default is not None:
                threshold = default
            elif anomaly is not None:
                threshold = None
            else:
                raise OptionsError(path, f"check '{name}' has no threshold: give one here or a rule-level threshold, "
                                         "or anomaly: {history: 28d}")
            checks.append(ValueCheck(name=name, sql=raw["sql"], threshold=threshold, anomaly=anomaly))
        return cls(source=data["source"], checks=tuple(checks))
