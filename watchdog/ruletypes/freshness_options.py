"""Options of the ``freshness`` rule type: which load times to check, and how old is too old."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from watchdog import sqlcheck
from watchdog.ruletypes import options as opt
from watchdog.ruletypes.base import OptionsError

DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class FreshnessCheck:
    """One load time to watch: ``table`` + ``loaded_at``, or ``sql``."""

    name: str
    warn_after: timedelta
    error_after: timedelta | None
    timezone: ZoneInfo
    table: tuple[str, ...] | None = None  # (schema, table) or (table,)
    loaded_at: str | None = None
    sql: str | None = None


@dataclass(frozen=True)
class FreshnessOptions:
    source: str
    checks: tuple[FreshnessCheck, ...]
    warn_after: timedelta
    error_after: timedelta | None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FreshnessOptions:
        warn_after = opt.duration(data, "warn_after")
        error_after = opt.optional_duration(data, "error_after")
        zone_name = data.get("timezone", DEFAULT_TIMEZONE)
        zone = opt.timezone(zone_name, ("timezone",))
        checks = []
        seen: set[str] = set()
        for index, raw in enumerate(data["checks"]):
            path = ("checks", index)
            name = raw["name"]
            if name in seen:
                raise OptionsError(path + ("name",), f"check name '{name}' is used twice in this rule")
            seen.add(name)
            warn = opt.optional_duration(raw, "warn_after") or warn_after
            error = opt.optional_duration(raw, "error_after") or error_after
            if error is not None and error <= warn:
                where = path if ("error_after" in raw or "warn_after" in raw) else ()
                raise OptionsError(where + ("error_after",), f"error_after ({error}) must be longer than warn_after ({warn})")
            table = tuple(raw["table"].split(".")) if "table" in raw else None
            if "sql" in raw:
                problem = sqlcheck.check_query(raw["sql"])
                if problem is not None:
                    raise OptionsError(path + ("sql",), f"must be one read-only query: {problem}")
            check_zone = opt.timezone(raw["timezone"], path + ("timezone",)) if "timezone" in raw else zone
            checks.append(FreshnessCheck(name=name, warn_after=warn, error_after=error, timezone=check_zone,
                                         table=table, loaded_at=raw.get("loaded_at"), sql=raw.get("sql")))
        return cls(source=data["source"], checks=tuple(checks), warn_after=warn_after, error_after=error_after)
