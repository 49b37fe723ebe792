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
DEFAULT_MIN_COUNT = 1


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
class Selector:
    """Which events: a Lucene ``query`` and/or query DSL ``filter`` clauses (both must match)."""

    query: str | None = None
    filters: tuple[Mapping[str, Any], ...] = ()

    def clauses(self) -> list[Any]:
        out: list[Any] = [{"query_string": {"query": self.query}}] if self.query else []
        out.extend(self.filters)
        return out

    def describe(self) -> str:
        return self.query or ("filter" if self.filters else "all events")

    @classmethod
    def from_value(cls, value: Any) -> Selector:
        """``'level:error'`` or ``{query: ..., filter: [...]}``."""
        if isinstance(value, str):
            return cls(query=value)
        return cls(query=value.get("query"), filters=tuple(value.get("filter", ())))


@dataclass(frozen=True)
class Fraction:
    """``ratio``: numerator events over denominator events, per group, in the same window."""

    numerator: Selector
    denominator: Selector  # Selector(): every event the rule's query selects
    min_denominator: int = 1


@dataclass(frozen=True)
class Baseline:
    """``spike``: the same window ``offset`` earlier, and the count below which neither side is trusted."""

    offset: timedelta
    min_count: int = DEFAULT_MIN_COUNT


@dataclass(frozen=True)
class SearchOptions:
    """Where and what to search, over which window, grouped how; ``fraction`` or ``baseline`` for ratio and spike."""

    source: str
    index: str
    window: timedelta
    threshold: Threshold
    timestamp_field: str = DEFAULT_TIMESTAMP_FIELD
    query: str | None = None
    filters: tuple[Mapping[str, Any], ...] = ()
    delay: timedelta = timedelta(0)
    group_by: tuple[str, ...] = ()  # one field: groups are its values; several: "service=api, region=eu"
    max_groups: int = DEFAULT_MAX_GROUPS
    sample: int = DEFAULT_SAMPLE
    sample_fields: tuple[str, ...] = ()
    metric: Metric | None = None  # None: the value is the count of events
    fraction: Fraction | None = None  # ratio rules
    baseline: Baseline | None = None  # spike rules

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SearchOptions:
        """Build from validated YAML; raises OptionsError for what the schema cannot express."""
        window = opt.duration(data, "window")
        if window <= timedelta(0):
            raise OptionsError(("window",), "window must be longer than 0s")
        raw_group = data.get("group_by", ())
        group_by = (raw_group,) if isinstance(raw_group, str) else tuple(raw_group)
        if len(set(group_by)) != len(group_by):
            raise OptionsError(("group_by",), "a field is named twice in group_by")
        fraction = baseline = None
        keys: tuple[str, str] = ("above", "below")
        if "numerator" in data:
            fraction = Fraction(
                numerator=Selector.from_value(data["numerator"]),
                denominator=Selector.from_value(data["denominator"]) if "denominator" in data else Selector(),
                min_denominator=int(data.get("min_denominator", 1)))
        if "offset" in data:
            offset = opt.duration(data, "offset")
            if offset < window:
                raise OptionsError(("offset",), f"offset ({format_duration(offset)}) must be at least the window "
                                   f"({format_duration(window)}), so the baseline does not overlap it")
            baseline = Baseline(offset=offset, min_count=int(data.get("min_count", DEFAULT_MIN_COUNT)))
            keys = ("ratio_above", "ratio_below")
        return cls(
            source=data["source"],
            index=data["index"],
            window=window,
            threshold=Threshold.from_mapping(data["threshold"], keys=keys),
            timestamp_field=data.get("timestamp_field", DEFAULT_TIMESTAMP_FIELD),
            query=data.get("query"),
            filters=tuple(data.get("filter", ())),
            delay=opt.duration(data, "delay", timedelta(0)),
            group_by=group_by,
            max_groups=int(data.get("max_groups", DEFAULT_MAX_GROUPS)),
            sample=int(data.get("sample", DEFAULT_SAMPLE)),
            sample_fields=tuple(data.get("sample_fields", ())),
            metric=Metric.from_mapping(data["metric"]) if "metric" in data else None,
            fraction=fraction,
            baseline=baseline,
        )

    def describe_window(self) -> str:
        return format_duration(self.window)

    @property
    def selector(self) -> Selector:
        return Selector(self.query, self.filters)
