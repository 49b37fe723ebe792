"""The ``dms`` source: AWS DMS replication tasks (and their CloudWatch metrics) through boto3.

Credentials come from boto3's chain (environment, profile, instance role).
Each call has the source's connect and read timeout and botocore's standard
retry mode with two attempts at most (throttling, a lost connection); what
still fails is reported in plain words, and an AWS that does not answer as
the source being unavailable. ``client`` and ``cloudwatch`` can be injected
(tests use botocore's Stubber for errors no server can produce).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from watchdog.config import DmsSource as DmsConfig
from watchdog.ruletypes.base import RuleError, SourceUnavailable

ARN_PREFIX = "arn:"
TABLE_PAGE = 500  # DescribeTableStatistics' largest MaxRecords: one request per task up to 500 tables
METRIC_QUERIES_PER_CALL = 500  # GetMetricData's limit on MetricDataQueries


class DmsError(RuleError):
    """An AWS DMS call failed; the message says what to do about it."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class DmsUnavailable(DmsError, SourceUnavailable):
    """AWS did not answer in time, or could not be reached."""


# Each call is tried twice at most: two timeouts stay well inside the rule timeout.
MAX_ATTEMPTS = 2


def explain(exc: Exception, action: str, service: str = "dms") -> DmsError:
    """A DmsError in plain words for a botocore exception raised by ``service:action``."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeout

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")).strip()
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return DmsError(f"AWS denied {service}:{action} ({code}): give watchdog's role that permission "
                            f"(see the IAM policy in the README). AWS said: {message}", code)
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"):
            return DmsError(f"AWS throttled {service}:{action} even after retries ({code}); it will be tried again next run", code)
        if code == "InvalidResourceStateFault":
            return DmsError(f"{service}:{action} refused: the task is in a state that does not allow it ({message})", code)
        if code == "ResourceNotFoundFault":
            return DmsError(f"{service}:{action}: no such replication task ({message})", code)
        return DmsError(f"{service}:{action} failed: {code}: {message}", code)
    if isinstance(exc, (ReadTimeoutError, BotoConnectTimeout, EndpointConnectionError, ConnectionClosedError)):
        return DmsUnavailable(f"{service}:{action}: AWS did not answer ({exc})", type(exc).__name__)
    if isinstance(exc, NoCredentialsError):
        return DmsError("no AWS credentials found: set a profile, environment variables or an instance role", "NoCredentials")
    if isinstance(exc, BotoCoreError):
        return DmsError(f"{service}:{action} failed: {exc}", type(exc).__name__)
    return DmsError(f"{service}:{action} failed: {type(exc).__name__}: {exc}", type(exc).__name__)


class DmsSource:
    def __init__(self, config: DmsConfig, client: Any = None, cloudwatch: Any = None):
        self.config = config
        self._client = client
        self._cloudwatch = cloudwatch
        self._start_client = client
        self._session: Any = None
        self._lock = threading.Lock()
        self._instances: dict[str, str] = {}  # replication instance ARN -> identifier (they never change)

    def _make(self, service: str, endpoint_url: str | None, attempts: int = MAX_ATTEMPTS) -> Any:
        import boto3
        from botocore.config import Config

        seconds = self.config.timeout.total_seconds()
        with self._lock:
            if self._session is None:
                self._session = boto3.Session(profile_name=self.config.profile, region_name=self.config.region)
            return self._session.client(service, endpoint_url=endpoint_url, config=Config(
                retries={"mode": "standard", "total_max_attempts": attempts}, connect_timeout=seconds,
                read_timeout=seconds))

    @property
    def client(self) -> Any:
        """The client for reads: retried (at most MAX_ATTEMPTS in all)."""
        if self._client is None:
            self._client = self._make("dms", self.config.endpoint_url)
        return self._client

    @property
    def start_client(self) -> Any:
        """The client for StartReplicationTask: never retried blindly, since an unanswered call may have
        restarted the task; the remediation journal reconciles it with AWS instead."""
        if self._start_client is None:
            self._start_client = self._make("dms", self.config.endpoint_url, attempts=1)
        return self._start_client

    @property
    def cloudwatch(self) -> Any:
        if self._cloudwatch is None:
            self._cloudwatch = self._make("cloudwatch", self.config.cloudwatch_endpoint_url)
        return self._cloudwatch

    def describe_tasks(self, identifiers: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every replication task, or those named by identifier or ARN; follows Marker pagination."""
        filter_sets: list[list[dict[str, Any]]] = [[]]
        if identifiers is not None:
            arns = [i for i in identifiers if i.startswith(ARN_PREFIX)]
            ids = [i for i in identifiers if not i.startswith(ARN_PREFIX)]
            filter_sets = [f for f in ([{"Name": "replication-task-arn", "Values": arns}] if arns else [],
                                       [{"Name": "replication-task-id", "Values": ids}] if ids else []) if f]
        tasks: dict[str, dict[str, Any]] = {}
        for filters in filter_sets:
            marker = None
            while True:
                kwargs: dict[str, Any] = {"WithoutSettings": True, "MaxRecords": 100}
                if filters:
                    kwargs["Filters"] = filters
                if marker:
                    kwargs["Marker"] = marker
                try:
                    page = self.client.describe_replication_tasks(**kwargs)
                except Exception as exc:
                    if _not_found(exc):  # DMS answers ResourceNotFoundFault when a filter matches nothing
                        break
                    raise explain(exc, "DescribeReplicationTasks") from None
                for task in page.get("ReplicationTasks", []):
                    tasks[task["ReplicationTaskArn"]] = task
                marker = page.get("Marker")
                if not marker:
                    break
        return list(tasks.values())

    def start_task(self, arn: str, start_type: str) -> dict[str, Any]:
        """StartReplicationTask, tried once; raises DmsError in plain words (DmsUnavailable: the outcome is unknown)."""
        try:
            answer = self.start_client.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType=start_type)
        except Exception as exc:
            raise explain(exc, "StartReplicationTask") from None
        task: dict[str, Any] = answer.get("ReplicationTask", {})
        return task

    def table_statistics(self, arn: str) -> list[dict[str, Any]]:
        """Every table of one task (DescribeTableStatistics, 500 a page); raises DmsError in plain words."""
        rows: list[dict[str, Any]] = []
        marker = None
        while True:
            kwargs: dict[str, Any] = {"ReplicationTaskArn": arn, "MaxRecords": TABLE_PAGE}
            if marker:
                kwargs["Marker"] = marker
            try:
                page = self.client.describe_table_statistics(**kwargs)
            except Exception as exc:
                raise explain(exc, "DescribeTableStatistics") from None
            rows += [r for r in page.get("TableStatistics", []) if isinstance(r, dict)]
            marker = page.get("Marker")
            if not marker:
                return rows

    def reload_tables(self, arn: str, tables: Sequence[tuple[str, str]]) -> None:
        """ReloadTables (data-reload) for ``(schema, table)`` pairs of a running task, tried once like a start (an
        unanswered call may have reached AWS; the journal reconciles it); raises DmsError (DmsUnavailable: unknown)."""
        try:
            self.start_client.reload_tables(ReplicationTaskArn=arn, ReloadOption="data-reload",
                                      TablesToReload=[{"SchemaName": s, "TableName": t} for s, t in tables])
        except Exception as exc:
            raise explain(exc, "ReloadTables") from None

    def instance_identifiers(self, arns: Sequence[str]) -> dict[str, str]:
        """Replication instance identifiers by ARN (CloudWatch's dimension); asks DMS only for ARNs not seen before."""
        unknown = sorted({a for a in arns if a and a not in self._instances})
        if unknown:
            marker = None
            while True:
                kwargs: dict[str, Any] = {"Filters": [{"Name": "replication-instance-arn", "Values": unknown}],
                                          "MaxRecords": 100}
                if marker:
                    kwargs["Marker"] = marker
                try:
                    page = self.client.describe_replication_instances(**kwargs)
                except Exception as exc:
                    if _not_found(exc):
                        break
                    raise explain(exc, "DescribeReplicationInstances") from None
                for instance in page.get("ReplicationInstances", []):
                    self._instances[str(instance.get("ReplicationInstanceArn"))] = str(
                        instance.get("ReplicationInstanceIdentifier"))
                marker = page.get("Marker")
                if not marker:
                    break
        return {a: self._instances[a] for a in arns if a in self._instances}

    def metric_data(self, queries: Sequence[Mapping[str, Any]], start: datetime,
                    end: datetime) -> dict[str, list[tuple[datetime, float]]]:
        """GetMetricData for ``queries`` (one request per 500 of them): ``(timestamp, value)`` oldest first, by query Id."""
        out: dict[str, list[tuple[datetime, float]]] = {}
        for first in range(0, len(queries), METRIC_QUERIES_PER_CALL):
            kwargs: dict[str, Any] = {"MetricDataQueries": list(queries[first:first + METRIC_QUERIES_PER_CALL]),
                                      "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending"}
            while True:
                try:
                    answer = self.cloudwatch.get_metric_data(**kwargs)
                except Exception as exc:
                    raise explain(exc, "GetMetricData", "cloudwatch") from None
                for result in answer.get("MetricDataResults", []):
                    points = out.setdefault(str(result.get("Id")), [])
                    points += [(t, float(v)) for t, v in zip(result.get("Timestamps", []), result.get("Values", []),
                                                              strict=False) if isinstance(t, datetime)]
                token = answer.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token  # more datapoints than one answer holds: the same query continued
        for points in out.values():
            points.sort()
        return out


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundFault"
