"""Learned checks as rule types use them: options, the baselines kept in the state, bounded history queries.

``watchdog.baseline`` learns (pure); this module feeds it. Per item (a check,
or check/group) the state keeps the small model last learned and the history
it learns from: load times or (time, value) points, trimmed to the check's
``history`` and capped at ``HISTORY_CAP`` entries. The source's own history
(a table's distinct load times, or ``history_sql``'s rows) is read at most
once per item per ``REFETCH``, under the source's statement timeout, capped
at ``HISTORY_ROWS`` rows; between reads, what watchdog itself observes is
added (each new last load; a value at most every ``RECORD_EVERY``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from psycopg2 import sql as pgsql

from watchdog import baseline, sqlcheck
from watchdog.baseline import Baseline, Cadence, Direction, Learning, Margins, Usual
from watchdog.durations import parse_duration
from watchdog.logfmt import log
from watchdog.ruletypes.base import OptionsError, Path

logger = logging.getLogger("watchdog.learned")

REFETCH = timedelta(hours=1)  # a source's history is read at most this often per item
HISTORY_ROWS = 5000  # rows one history query may return
HISTORY_CAP = 5000  # entries kept per item
RECORD_EVERY = timedelta(minutes=15)  # observed values closer than this to the previous one are not kept
DEFAULT_MARGINS = Margins()


@dataclass(frozen=True)
class Learn:
    """``learn:`` of a freshness check: the history to learn its cadence from, and the margins."""

    history: timedelta = baseline.DEFAULT_HISTORY
    margins: Margins = DEFAULT_MARGINS


@dataclass(frozen=True)
class Anomaly:
    """``anomaly:`` of a sql_value check: history, the side that alerts, margins, and optional ``history_sql``."""

    history: timedelta = baseline.DEFAULT_HISTORY
    direction: Direction = "both"
    margins: Margins = DEFAULT_MARGINS
    history_sql: str | None = None


def _margins(raw: Mapping[str, Any], path: Path) -> Margins:
    warn = float(raw.get("warn_margin", baseline.WARN_MARGIN))
    error = float(raw.get("error_margin", baseline.ERROR_MARGIN))
    if not warn < error:
        raise OptionsError(path + ("error_margin",), f"error_margin ({error:g}) must be larger than warn_margin ({warn:g})")
    return Margins(warn=warn, error=error)


def _history(raw: Mapping[str, Any]) -> timedelta:
    return parse_duration(str(raw["history"])) if "history" in raw else baseline.DEFAULT_HISTORY


def learn_options(raw: Mapping[str, Any], path: Path) -> Learn:
    """``learn:`` as validated by the schema; raises OptionsError naming the key."""
    return Learn(history=_history(raw), margins=_margins(raw, path))


def anomaly_options(raw: Mapping[str, Any], path: Path, functions: Collection[str] = ()) -> Anomaly:
    """``anomaly:`` as validated by the schema; ``history_sql`` must pass the read-only check, as ``sql`` does
    (``functions``: the config's ``rule_sql_functions``). Raises OptionsError."""
    text = raw.get("history_sql")
    if text is not None:
        problem = sqlcheck.check_query(text, functions)
        if problem is not None:
            raise OptionsError(path + ("history_sql",), f"must be one read-only query: {problem}")
    return Anomaly(history=_history(raw), direction=cast(Direction, raw.get("direction", "both")),
                   margins=_margins(raw, path), history_sql=None if text is None else str(text))


# --- where baselines are kept ---------------------------------------------------------------------------------


class Baselines(Protocol):
    """Where learned baselines are kept: the state store in the daemon, memory in ``test-rule``."""

    def load(self, rule: str) -> dict[str, Baseline]:
        """Every kept baseline of ``rule``, by item."""

    def save(self, rule: str, items: Mapping[str, Baseline], now: datetime) -> None:
        """Keep ``items`` (the others stay as they are)."""


class MemoryBaselines:
    """Baselines kept in memory only (``test-rule`` learns, and forgets)."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, Baseline]] = {}

    def load(self, rule: str) -> dict[str, Baseline]:
        return dict(self.kept.get(rule, {}))

    def save(self, rule: str, items: Mapping[str, Baseline], now: datetime) -> None:
        self.kept.setdefault(rule, {}).update(items)


class Book:
    """One evaluation's view of a rule's baselines: read once, written once (``flush``) with what changed."""

    def __init__(self, where: Baselines | None, rule: str):
        self.where = where
        self.rule = rule
        self.kept = where.load(rule) if where is not None else {}
        self.changed: dict[str, Baseline] = {}

    def get(self, item: str) -> Baseline | None:
        return self.changed.get(item) or self.kept.get(item)

    def due(self, item: str, now: datetime) -> bool:
        """Whether the source's history of ``item`` may be read now (at most once per REFETCH)."""
        kept = self.get(item)
        return kept is None or kept.fetched_at is None or not (timedelta(0) <= now - kept.fetched_at < REFETCH)

    def put(self, item: str, value: Baseline) -> None:
        self.changed[item] = value

    def flush(self, now: datetime) -> None:
        """Keep what changed. A store that fails (a full disk) costs the learning, never the evaluation."""
        if self.where is not None and self.changed:
            try:
                self.where.save(self.rule, self.changed, now)
            except Exception as exc:
                log(logger, logging.WARNING, "cannot keep learned baselines", rule=self.rule, error=str(exc))
        self.changed = {}


# --- freshness: cadences ----------------------------------------------------------------------------------------


def cadence_model(model: Cadence | Learning) -> dict[str, Any]:
    """A learned cadence (or learning) as the state keeps it, with its description for ``status``."""
    if isinstance(model, Learning):
        return {"learning": True, "have": model.have, "span": model.span.total_seconds(), "text": model.describe()}
    return {"expected": model.expected.total_seconds(), "spread": model.spread.total_seconds(),
            "warn_after": model.warn_after.total_seconds(), "error_after": model.error_after.total_seconds(),
            "basis": model.basis, "under": model.under, "of": model.of, "loads": model.loads,
            "last": baseline.epoch(model.last), "zone": model.zone, "text": model.describe()}


def _cadence(model: Mapping[str, Any]) -> Cadence | None:
    """The cadence kept in ``model`` (None: learning, or not a cadence)."""
    try:
        return Cadence(expected=timedelta(seconds=model["expected"]), spread=timedelta(seconds=model["spread"]),
                       warn_after=timedelta(seconds=model["warn_after"]),
                       error_after=timedelta(seconds=model["error_after"]), basis=str(model["basis"]),
                       under=int(model["under"]), of=int(model["of"]), loads=int(model["loads"]),
                       last=baseline.moment(float(model["last"])), zone=str(model["zone"]))
    except (KeyError, TypeError, ValueError):
        return None


def _times(history: str) -> list[float]:
    try:
        data = json.loads(history)
    except ValueError:
        return []
    return [float(t) for t in data if isinstance(t, int | float)] if isinstance(data, list) else []


def cadence(book: Book, item: str, last: datetime, now: datetime, learn: Learn, zone: ZoneInfo,
            fetched: Iterable[datetime] | None) -> Cadence | Learning:
    """The cadence of ``item`` for its last load ``last`` at the source's ``now``, relearned only when needed.

    ``fetched`` holds the load times just read from the source (None: not
    read this time). A model learned for the same last load is reused.
    """
    kept = book.get(item)
    if kept is not None and fetched is None:
        reused = _cadence(kept.model)
        if reused is not None and reused.last == last:
            return reused
    times = set(_times(kept.history) if kept is not None else [])
    times.update(baseline.epoch(t) for t in fetched or ())
    times.add(baseline.epoch(last))
    start = baseline.epoch(now - learn.history)
    newest = sorted(t for t in times if t >= start)[-HISTORY_CAP:]
    model = baseline.learn_cadence((baseline.moment(t) for t in newest), now, history=learn.history, zone=zone,
                                   margins=learn.margins)
    fetched_at = now if fetched is not None else (kept.fetched_at if kept is not None else None)
    history = json.dumps(newest)
    # While learning, the model changes only in how much history it has: nothing new is worth a write.
    unchanged = (kept is not None and kept.history == history and kept.fetched_at == fetched_at
                 and isinstance(model, Learning) and kept.model.get("learning") and kept.model.get("have") == model.have)
    if not unchanged:
        book.put(item, Baseline(model=cadence_model(model), history=history, fetched_at=fetched_at))
    return model


DB_NOW = pgsql.SQL("now()")  # the database's clock: a table's history ends there


def history_statement(table: tuple[str, ...], loaded_at: pgsql.Composable, group_by: pgsql.Composable | None,
                      filter_: str | None, since: pgsql.Composable, until: pgsql.Composable = DB_NOW,
                      rows: int = HISTORY_ROWS) -> pgsql.Composed:
    """Distinct load minutes of a table in [``since``, ``until``] (SQL moments), by group as text (null when
    ungrouped), newest first, at most ``rows``.

    A bare ``loaded_at`` column is compared as is, so an index on it serves the range.
    """
    where = pgsql.SQL(" and ({})").format(pgsql.SQL(filter_)) if filter_ else pgsql.SQL("")
    group = pgsql.SQL("({})::text").format(group_by) if group_by is not None else pgsql.SQL("null::text")
    return pgsql.SQL(
        "select {group}, date_trunc('minute', {t}) from {table} where {t} >= {since} "
        "and {t} <= {until}{where} group by 1, 2 order by 2 desc limit {rows}").format(
        group=group, t=loaded_at, table=pgsql.Identifier(*table), since=since, until=until, where=where,
        rows=pgsql.Literal(rows))


def before_now(history: timedelta) -> pgsql.Composed:
    """The database's now() less ``history``: where a learning check's history starts."""
    return pgsql.SQL("now() - {}::interval").format(pgsql.Literal(f"{int(history.total_seconds())} seconds"))


# --- sql_value: usual values --------------------------------------------------------------------------------------


def usual_model(model: Usual | Learning) -> dict[str, Any]:
    """A learned usual value (or learning) as the state keeps it, with its description."""
    if isinstance(model, Learning):
        return {"learning": True, "have": model.have, "span": model.span.total_seconds(), "text": model.describe()}
    return {"median": model.median, "spread": model.spread, "warn_margin": model.warn_margin,
            "error_margin": model.error_margin, "basis": model.basis, "samples": model.samples,
            "direction": model.direction, "at": baseline.epoch(model.at), "zone": model.zone, "text": model.describe()}


def _usual(model: Mapping[str, Any]) -> Usual | None:
    """The usual value kept in ``model`` (None: learning, or not a usual value)."""
    try:
        return Usual(median=float(model["median"]), spread=float(model["spread"]),
                     warn_margin=float(model["warn_margin"]), error_margin=float(model["error_margin"]),
                     basis=str(model["basis"]), samples=int(model["samples"]),
                     direction=cast(Direction, str(model["direction"])), at=baseline.moment(float(model["at"])),
                     zone=str(model["zone"]))
    except (KeyError, TypeError, ValueError):
        return None


def _points(history: str) -> list[tuple[float, float]]:
    try:
        data = json.loads(history)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [(float(p[0]), float(p[1])) for p in data
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, int | float) for x in p)]


def usual(book: Book, item: str, value: float | None, now: datetime, anomaly: Anomaly, zone: ZoneInfo,
          fetched: Iterable[tuple[datetime, float]] | None) -> Usual | Learning:
    """The usual value of ``item`` at ``now``, learned from the points before it; records ``value`` as seen now.

    ``fetched`` holds the points just read with ``history_sql`` (None: not
    read this time). The value seen now is kept at most every RECORD_EVERY.
    """
    kept = book.get(item)
    if kept is not None and fetched is None:
        # Learned less than RECORD_EVERY ago, with nothing new recorded since: the same model, no parsing, no write.
        reused = _usual(kept.model)
        if (reused is not None and reused.direction == anomaly.direction
                and timedelta(0) <= now - reused.at < RECORD_EVERY):
            return reused
    points = dict(_points(kept.history) if kept is not None else [])
    points.update((baseline.epoch(t), v) for t, v in fetched or ())
    start = baseline.epoch(now - anomaly.history)
    model = baseline.learn_value(((baseline.moment(t), v) for t, v in points.items() if t >= start), now,
                                 direction=anomaly.direction, history=anomaly.history, zone=zone,
                                 margins=anomaly.margins)
    at = baseline.epoch(now)
    if value is not None and all(abs(at - t) >= RECORD_EVERY.total_seconds() for t in points if t >= at - 86400):
        points[at] = value
    newest = sorted((t, v) for t, v in points.items() if t >= start)[-HISTORY_CAP:]
    fetched_at = now if fetched is not None else (kept.fetched_at if kept is not None else None)
    book.put(item, Baseline(model=usual_model(model), history=json.dumps([[t, v] for t, v in newest]),
                            fetched_at=fetched_at))
    return model


def history_query(text: str) -> pgsql.Composed:
    """``history_sql`` (checked read-only when the rule loaded) capped at HISTORY_ROWS rows."""
    from watchdog.sources.postgres import as_statement

    return pgsql.SQL("select * from (\n{}\n) as watchdog_history limit {}").format(
        as_statement(text), pgsql.Literal(HISTORY_ROWS))
