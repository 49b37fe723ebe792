"""Replication lag of DMS tasks, from CloudWatch's ``AWS/DMS`` CDC metrics.

A task can run for hours while its CDC latency grows and the warehouse goes
stale. Per running CDC task this module reads ``CDCLatencySource`` (how far
behind the source DMS reads), ``CDCLatencyTarget`` (how far behind the target
DMS writes; it includes the source latency) and ``CDCIncomingChanges``, all
asked for in one GetMetricData request per rule, and judges them:

* the larger of the newest source and target latency against ``warn_after``
  (warning) and ``error_after`` (critical);
* a stall: a latency that grew at every datapoint across ``stall_after`` (and by
  at least half that time), which is what a stuck task looks like;
* no datapoint in the last ``LAG_REPORTED_WITHIN``: "not reported" is a finding.

Pure functions of the answers and ``now``; the CloudWatch call is the source's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watchdog.durations import format_duration
from watchdog.rule import Severity
from watchdog.ruletypes.base import Finding, Observation
from watchdog.ruletypes.dms_options import LAG_REPORTED_WITHIN, LagCheck

NAMESPACE = "AWS/DMS"
METRICS = {"s": "CDCLatencySource", "t": "CDCLatencyTarget", "c": "CDCIncomingChanges"}
PERIOD = 60  # DMS publishes task metrics every minute
PERIOD_DELTA = timedelta(seconds=PERIOD)
STALL_MIN_POINTS = 3
LAG_GROUP = "lag"
CDC_TYPES = frozenset({"cdc", "full-load-and-cdc"})
MAX_SECONDS = 10 * 365 * 86400.0  # bounded: an absurd datapoint stays printable


@dataclass(frozen=True)
class Target:
    """A task whose metrics are asked for: its identifier and CloudWatch's two dimensions."""

    task: str
    instance: str  # ReplicationInstanceIdentifier
    resource: str  # ReplicationTaskIdentifier in CloudWatch is the task's resource ID, the last part of its ARN


def group(task: str) -> str:
    return f"{task}/{LAG_GROUP}"


def resource_id(arn: str) -> str:
    """The resource ID CloudWatch uses for a task: the part of its ARN after the last ``:``."""
    return arn.rsplit(":", 1)[-1]


def queries(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """GetMetricData queries for every target: three per task, Ids ``m<index><metric letter>``."""
    out = []
    for index, target in enumerate(targets):
        dimensions = [{"Name": "ReplicationInstanceIdentifier", "Value": target.instance},
                      {"Name": "ReplicationTaskIdentifier", "Value": target.resource}]
        for letter, metric in METRICS.items():
            out.append({"Id": f"m{index}{letter}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
                "Period": PERIOD, "Stat": "Maximum"}})
    return out


def series_of(answer: Mapping[str, list[tuple[datetime, float]]], index: int) -> dict[str, list[tuple[datetime, float]]]:
    """The three series of target ``index`` in a metric_data answer, by metric letter."""
    return {letter: list(answer.get(f"m{index}{letter}", [])) for letter in METRICS}


def usable(points: Sequence[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    """Datapoints with a finite value, negatives read as 0, capped (an answer is data, never trusted to be sane)."""
    return [(t, min(max(v, 0.0), MAX_SECONDS)) for t, v in points if math.isfinite(v)]


def seconds(value: float) -> timedelta:
    return timedelta(seconds=max(0.0, min(value, MAX_SECONDS)))


def stalled(points: Sequence[tuple[datetime, float]], now: datetime, window: timedelta) -> tuple[float, float] | None:
    """``(first, last)`` latency when it grew at every datapoint of the last ``window`` and by at least half of it."""
    recent = [(t, v) for t, v in points if t >= now - window]
    if len(recent) < STALL_MIN_POINTS or recent[0][0] > now - window + window / 4:
        return None  # too few points, or they do not cover the window: no verdict
    values = [v for _, v in recent]
    if any(b < a for a, b in itertools.pairwise(values)):
        return None
    if values[-1] - values[0] < window.total_seconds() / 2:
        return None
    return values[0], values[-1]


def assess(target: Target, series: Mapping[str, Sequence[tuple[datetime, float]]], now: datetime,
           check: LagCheck) -> Finding | None:
    """The lag finding of one running CDC task, or None when its latency is within bounds."""
    series = {k: usable(points) for k, points in series.items()}
    fresh = {k: [(t, v) for t, v in series.get(k, ()) if t >= now - LAG_REPORTED_WITHIN] for k in ("s", "t")}
    name = group(target.task)
    if not fresh["s"] and not fresh["t"]:
        return Finding(group=name, value="unknown", severity=Severity.WARNING,
                       summary=f"no CDC latency reported for task {target.task} in the last "
                               f"{format_duration(LAG_REPORTED_WITHIN)} (CloudWatch AWS/DMS has no datapoint)",
                       details={"task": target.task, "latency": "unknown", "source_latency": "unknown",
                                "target_latency": "unknown", "condition": "not_reported"})
    source = fresh["s"][-1][1] if fresh["s"] else 0.0
    target_latency = fresh["t"][-1][1] if fresh["t"] else 0.0
    latency = max(source, target_latency)
    incoming = [v for t, v in series.get("c", ()) if t >= now - (check.stall_after or LAG_REPORTED_WITHIN)]
    d: dict[str, Any] = {"task": target.task, "latency": format_duration(seconds(latency)),
                         "source_latency": format_duration(seconds(source)),
                         "target_latency": format_duration(seconds(target_latency)),
                         "incoming_changes": int(incoming[-1]) if incoming else 0}
    both = f"source {d['source_latency']}, target {d['target_latency']}"
    if check.stall_after is not None:
        for letter, label in (("s", "source"), ("t", "target")):
            grew = stalled(series.get(letter, ()), now, check.stall_after)
            if grew is not None:
                no_changes = " and no incoming changes" if incoming and not any(incoming) else ""
                return Finding(group=name, value=round(latency, 1), severity=Severity.CRITICAL,
                               summary=f"task {target.task} looks stalled: CDC {label} latency grew from "
                                       f"{format_duration(seconds(grew[0]))} to {format_duration(seconds(grew[1]))} over "
                                       f"{format_duration(check.stall_after)}{no_changes} ({both})",
                               details={**d, "condition": "stalled"})
    breached = [(level, limit) for level, limit in ((Severity.CRITICAL, check.error_after), (Severity.WARNING, check.warn_after))
                if limit is not None and latency >= limit.total_seconds()]
    if not breached:
        return None
    level, limit = breached[0]
    return Finding(group=name, value=round(latency, 1), severity=level,
                   summary=f"CDC latency of task {target.task} is {d['latency']} ({both}), "
                           f"at or above {format_duration(limit)}",
                   details={**d, "condition": "latency"})


def present(target: Target, series: Mapping[str, Sequence[tuple[datetime, float]]], now: datetime) -> Observation | None:
    """The latency now of a task within bounds, as its resolution states it (None: no recent datapoint)."""
    fresh = {k: [(t, v) for t, v in usable(series.get(k, ())) if t >= now - LAG_REPORTED_WITHIN] for k in ("s", "t")}
    if not fresh["s"] and not fresh["t"]:
        return None
    source = fresh["s"][-1][1] if fresh["s"] else 0.0
    target_latency = fresh["t"][-1][1] if fresh["t"] else 0.0
    latency = max(source, target_latency)
    d = {"task": target.task, "latency": format_duration(seconds(latency)),
         "source_latency": format_duration(seconds(source)), "target_latency": format_duration(seconds(target_latency))}
    return Observation(group=group(target.task), value=round(latency, 1), details=d,
                       summary=f"CDC latency of task {target.task} is {d['latency']} now "
                               f"(source {d['source_latency']}, target {d['target_latency']})")


def unknown(task: str, why: str) -> Finding:
    """The lag of an active lag group that cannot be measured now: a finding, never a silent resolution."""
    return Finding(group=group(task), value="unknown", severity=Severity.WARNING, summary=f"CDC latency of task {task}: {why}",
                   details={"task": task, "latency": "unknown", "source_latency": "unknown", "target_latency": "unknown",
                            "condition": "unknown"})
