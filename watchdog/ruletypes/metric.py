"""``metric``: an aggregation over a field (avg, max, percentile...), above or below a number."""

from __future__ import annotations

from typing import ClassVar

from watchdog.ruletypes.search import SearchRuleType


class MetricRule(SearchRuleType):
    name: ClassVar[str] = "metric"
    message_fields: ClassVar[frozenset[str]] = frozenset({"count", "metric", "threshold", "window", "index", "query", "start", "end"})
