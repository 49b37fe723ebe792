"""The ``dms`` source: AWS DMS replication tasks through boto3.

Credentials come from boto3's chain (environment, profile, instance role).
botocore's standard retry mode handles throttling; what still fails is
reported in plain words. ``client`` can be injected (tests use botocore's
Stubber for errors no server can produce).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watchdog.config import DmsSource as DmsConfig
from watchdog.ruletypes.base import RuleError

ARN_PREFIX = "arn:"


class DmsError(RuleError):
    """An AWS DMS call failed; the message says what to do about it."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def explain(exc: Exception, action: str) -> DmsError:
    """A DmsError in plain words for a botocore exception raised by ``action``."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")).strip()
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return DmsError(f"AWS denied dms:{action} ({code}): give watchdog's role that permission "
                            f"(see the IAM policy in the README). AWS said: {message}", code)
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"):
            return DmsError(f"AWS throttled dms:{action} even after retries ({code}); it will be tried again next run", code)
        if code == "InvalidResourceStateFault":
            return DmsError(f"dms:{action} refused: the task is in a state that does not allow it ({message})", code)
        if code == "ResourceNotFoundFault":
            return DmsError(f"dms:{action}: no such replication task ({message})", code)
        return DmsError(f"dms:{action} failed: {code}: {message}", code)
    if isinstance(exc, NoCredentialsError):
        return DmsError("no AWS credentials found: set a profile, environment variables or an instance role", "NoCredentials")
    if isinstance(exc, BotoCoreError):
        return DmsError(f"dms:{action} failed: {exc}", type(exc).__name__)
    return DmsError(f"dms:{action} failed: {type(exc).__name__}: {exc}", type(exc).__name__)


class DmsSource:
    def __init__(self, config: DmsConfig, client: Any = None):
        self.config = config
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.Session(profile_name=self.config.profile, region_name=self.config.region)
            self._client = session.client("dms", endpoint_url=self.config.endpoint_url, config=Config(
                retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30))
        return self._client

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
        """StartReplicationTask; raises DmsError in plain words."""
        try:
            answer = self.client.start_replication_task(ReplicationTaskArn=arn, StartReplicationTaskType=start_type)
        except Exception as exc:
            raise explain(exc, "StartReplicationTask") from None
        task: dict[str, Any] = answer.get("ReplicationTask", {})
        return task


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundFault"
