"""Options shared by the search rule types (``threshold``, ``metric``, ``ratio``, ``spike``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from watchdog.durations import format_duration
from watchdog.ruletypes import options as opt
from watchdog.ruletypes.base import OptionsError
from watchdog.ruletypes.thresholds import Threshold

DEFAULT_TIMESTAMP_FIELD = "@timestamp"
DEFAULT_MAX_GROUPS = 50
DEFAULT_SAMPLE = 3


@dataclass(frozen=True)
class Metric:
    """The aggregation of a ``metric`` rule: ``avg`` of ``duration_ms`` and so on."""

    agg: str  # avg | max | min | sum | cardinality | percentile
    field: str
    percent: float | None = None

    def describe(self) -> str:
        if self.agg == "percentile":
            return f"p{self.percent:g}({self.field})"
        return f"{self.agg}({self.field})"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Metric:
        (agg, value), = data.items()
        if agg == "percentile":
            return cls(agg=agg, field=value["field"], percent=float(value["percent"]))
        return cls(agg=agg, field=value)


@dataclass(frozen=True)
class SearchOptions:
    """Where and what to search, over which window, grouped how."""

    source: str
    index: str
    window: timedelta
    threshold: Threshold
    timestamp_field: str = DEFAULT_TIMESTAMP_FIELD
    query: str | None = None
    filters: tuple[Mapping[str, Any], ...] = ()
    delay: timedelta = timedelta(0)
    group_by: str | None = None
    max_groups: int = DEFAULT_MAX_GROUPS
    sample: int = DEFAULT_SAMPLE
    sample_fields: tuple[str, ...] = ()
    metric: Metric | None = None  # None: the value is the count of events

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SearchOptions:
        window = opt.duration(data, "window")
        if window <= timedelta(0):
            raise OptionsError(("window",), "window must be longer than 0s")
        return cls(
            source=data["source"],
            index=data["index"],
            window=window,
            threshold=Threshold.from_mapping(data["threshold"]),
            timestamp_field=data.get("timestamp_field", DEFAULT_TIMESTAMP_FIELD),
            query=data.get("query"),
            filters=tuple(data.get("filter", ())),
            delay=opt.duration(data, "delay", timedelta(0)),
            group_by=data.get("group_by"),
            max_groups=int(data.get("max_groups", DEFAULT_MAX_GROUPS)),
            sample=int(data.get("sample", DEFAULT_SAMPLE)),
            sample_fields=tuple(data.get("sample_fields", ())),
            metric=Metric.from_mapping(data["metric"]) if "metric" in data else None,
        )

    def describe_window(self) -> str:
        return format_duration(self.window)
