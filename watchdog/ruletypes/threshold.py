"""``threshold``: the count of matching log events in a window, above or below a number."""

from __future__ import annotations

from typing import ClassVar

from watchdog.ruletypes.search import SearchRuleType


class ThresholdRule(SearchRuleType):
    name: ClassVar[str] = "threshold"
    message_fields: ClassVar[frozenset[str]] = frozenset({"count", "threshold", "window", "index", "query", "start", "end"})
