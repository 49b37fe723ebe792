"""``metric``: an aggregation over a field (avg, max, percentile...), above or below a number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from watchdog.rule import Rule
from watchdog.ruletypes import search
from watchdog.ruletypes.base import EvalContext, Evaluation, RuleType
from watchdog.ruletypes.search_options import SearchOptions


class MetricRule(RuleType):
    name: ClassVar[str] = "metric"
    source_type: ClassVar[str] = "search"
    batches: ClassVar[bool] = True
    message_fields: ClassVar[frozenset[str]] = frozenset(
        {"count", "metric", "threshold", "window", "index", "query", "start", "end"})

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str) -> SearchOptions:
        return SearchOptions.from_mapping(data)

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        return search.evaluate(rules, source, ctx)
