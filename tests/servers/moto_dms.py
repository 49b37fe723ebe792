"""A moto server for the AWS DMS and CloudWatch APIs, with test-only hooks.

Stock moto cannot mark a replication task failed, has no StopReason or
LastFailureMessage, and never shows ``starting``. The hook (``POST
/_watchdog/dms/task``) sets any of these, and every API call is recorded
(``GET /_watchdog/requests``) so tests can assert which calls were made.
``POST /_watchdog/delay`` (``{"action": "StartReplicationTask", "seconds": 3}``)
holds every later call of that action for that long after recording it, then
carries it out (a slow AWS; a client killed meanwhile still gets its call made).

Stock moto implements neither ``DescribeTableStatistics`` nor
``ReloadTables``. This server answers both over the real DMS JSON protocol
(so boto3 parses them like AWS's answers): table statistics are kept per task
and set with ``set_tables`` or ``POST /_watchdog/dms/tables``; a reload marks
the tables reloaded (``Table completed``, validation counters cleared) unless
``hold_reload`` keeps them ``Table is being reloaded`` until the hook moves them
on. CloudWatch is moto's own: tests publish ``AWS/DMS`` metrics with
``put_metric_data`` to the same URL.

Run standalone (the demo does): ``python -m tests.servers.moto_dms --port 0``
prints the URL on its first line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.dms.models import FakeReplicationTask, dms_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ACCOUNT = "123456789012"
_extra: dict[str, dict[str, Any]] = {}  # task ARN -> StopReason, LastFailureMessage, TablesErrored, hold_starting, hold_reload
_tables: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # task ARN -> (schema, table) -> TableStatistics
reloads: list[dict[str, Any]] = []  # every ReloadTables call: task ARN, tables, option
TABLE_COUNTERS = ("Inserts", "Deletes", "Updates", "Ddls", "AppliedInserts", "AppliedDeletes", "AppliedUpdates",
                  "AppliedDdls", "FullLoadRows", "FullLoadCondtnlChkFailedRows", "FullLoadErrorRows",
                  "ValidationPendingRecords", "ValidationFailedRecords", "ValidationSuspendedRecords")
_original_to_dict = FakeReplicationTask.to_dict
_original_start = FakeReplicationTask.start


def _to_dict(self: FakeReplicationTask) -> dict[str, Any]:
    out = _original_to_dict(self)
    extra = _extra.get(self.arn, {})
    for key in ("StopReason", "LastFailureMessage", "RecoveryCheckpoint"):
        if extra.get(key):
            out[key] = extra[key]
    out["ReplicationTaskStats"].update(extra.get("Stats", {}))  # e.g. FullLoadProgressPercent of a first run
    if "TablesErrored" in extra:
        out["ReplicationTaskStats"]["TablesErrored"] = extra["TablesErrored"]
    elif _tables.get(self.arn):
        out["ReplicationTaskStats"]["TablesErrored"] = sum(
            t["TableState"] == "Table error" for t in _tables[self.arn].values())
    return out


def _start(self: FakeReplicationTask) -> FakeReplicationTask:
    extra = _extra.setdefault(self.arn, {})
    extra.pop("StopReason", None)
    extra.pop("LastFailureMessage", None)
    if extra.get("hold_starting"):  # stay in "starting" until the hook moves it on
        self.status = "starting"
        self.start_date = datetime.now(UTC)
        return self
    return _original_start(self)


FakeReplicationTask.to_dict = _to_dict  # type: ignore[method-assign]
FakeReplicationTask.start = _start  # type: ignore[method-assign]


def _tasks(region: str) -> dict[str, FakeReplicationTask]:
    return dms_backends[ACCOUNT][region].replication_tasks


def _task(identifier: str, region: str) -> FakeReplicationTask:
    for task in _tasks(region).values():
        if identifier in (task.id, task.arn):
            return task
    raise KeyError(identifier)


def set_task(identifier: str, region: str = "us-east-1", **changes: Any) -> None:
    """Set a task's Status (``status``), StopReason, LastFailureMessage, RecoveryCheckpoint, TablesErrored,
    Stats (merged into ReplicationTaskStats), hold_starting or hold_reload."""
    task = _task(identifier, region)
    if "status" in changes:
        task.status = changes.pop("status")
    _extra.setdefault(task.arn, {}).update(changes)


def set_tables(identifier: str, tables: list[Mapping[str, Any]], region: str = "us-east-1") -> None:
    """Add or update tables of a task: each a TableStatistics mapping with at least SchemaName and TableName.

    Counters not given stay as they were (0 for a new table); TableState defaults to ``Table completed``.
    """
    task = _task(identifier, region)
    known = _tables.setdefault(task.arn, {})
    for table in tables:
        key = (str(table["SchemaName"]), str(table["TableName"]))
        row = known.setdefault(key, {"SchemaName": key[0], "TableName": key[1], "TableState": "Table completed",
                                     "ValidationState": "Not enabled", "FullLoadReloaded": False,
                                     **{c: 0 for c in TABLE_COUNTERS}})
        row.update(table)


def _fault(code: str, message: str) -> Response:
    return Response(json.dumps({"__type": code, "message": message}), status=400,
                    headers={"x-amzn-ErrorType": code}, content_type="application/x-amz-json-1.1")


def _ok(body: Mapping[str, Any]) -> Response:
    return Response(json.dumps(body), content_type="application/x-amz-json-1.1")


def describe_table_statistics(body: Mapping[str, Any], region: str) -> Response:
    """DescribeTableStatistics: Filters (schema-name, table-name, table-state), MaxRecords (20-500), Marker."""
    try:
        task = _task(str(body.get("ReplicationTaskArn", "")), region)
    except KeyError:
        return _fault("ResourceNotFoundFault", "Replication task not found")
    size = int(body.get("MaxRecords", 100))
    if not 20 <= size <= 500:
        return _fault("InvalidParameterValueException", "MaxRecords must be between 20 and 500")
    fields = {"schema-name": "SchemaName", "table-name": "TableName", "table-state": "TableState"}
    rows = [r for _, r in sorted(_tables.get(task.arn, {}).items())]
    for flt in body.get("Filters", []):
        if flt["Name"] not in fields:
            return _fault("InvalidParameterValueException", f"unknown filter {flt['Name']}")
        rows = [r for r in rows if r[fields[flt["Name"]]] in flt["Values"]]
    start = int(body.get("Marker") or 0)
    page = rows[start:start + size]
    answer: dict[str, Any] = {"ReplicationTaskArn": task.arn, "TableStatistics": page}
    if start + size < len(rows):
        answer["Marker"] = str(start + size)
    return _ok(answer)


def reload_tables(body: Mapping[str, Any], region: str) -> Response:
    """ReloadTables: only on a running task (InvalidResourceStateFault otherwise), like AWS."""
    try:
        task = _task(str(body.get("ReplicationTaskArn", "")), region)
    except KeyError:
        return _fault("ResourceNotFoundFault", "Replication task not found")
    if task.status != "running":
        return _fault("InvalidResourceStateFault", f"Replication task is {task.status}, not running")
    wanted = [(str(t["SchemaName"]), str(t["TableName"])) for t in body.get("TablesToReload", [])]
    option = str(body.get("ReloadOption", "data-reload"))
    reloads.append({"task": task.arn, "tables": wanted, "option": option})
    hold = bool(_extra.get(task.arn, {}).get("hold_reload"))
    for key in wanted:
        row = _tables.get(task.arn, {}).get(key)
        if row is None:
            continue
        if hold:
            row["TableState"] = "Table is being reloaded"
            continue
        row.update(TableState="Table completed", FullLoadReloaded=True, ValidationFailedRecords=0,
                   ValidationSuspendedRecords=0)
        if row.get("ValidationState") not in (None, "Not enabled"):
            row["ValidationState"] = "Validated"
    return _ok({"ReplicationTaskArn": task.arn})


HANDLED = {"DescribeTableStatistics": describe_table_statistics, "ReloadTables": reload_tables}


class MotoDms:
    """The moto server on 127.0.0.1 in a thread of this process."""

    def __init__(self, port: int = 0):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.requests: list[str] = []
        self.delays: dict[str, float] = {}  # action -> seconds each call is held
        self.lock = threading.Lock()
        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            request = Request(environ)
            if request.path.startswith("/_watchdog/"):
                return self._hook(request)(environ, start_response)
            target = request.headers.get("X-Amz-Target", "")
            operation = target.split(".")[-1] if target else ""
            if request.path.startswith("/service/"):  # smithy RPC v2 (CloudWatch): /service/<name>/operation/<op>
                operation = request.path.rsplit("/", 1)[-1]
            if operation:
                with self.lock:
                    self.requests.append(operation)
                    delay = self.delays.get(operation, 0.0)
                if delay:
                    time.sleep(delay)
            if target and operation in HANDLED:
                region = _region(request.headers.get("Authorization", ""))
                return HANDLED[operation](request.get_json(force=True), region)(environ, start_response)
            return moto_app(environ, start_response)

        self.server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _hook(self, request: Request) -> Response:
        if request.path == "/_watchdog/requests":
            with self.lock:
                return Response(json.dumps(self.requests), content_type="application/json")
        if request.path == "/_watchdog/delay" and request.method == "POST":
            body = request.get_json(force=True)
            with self.lock:
                self.delays[str(body["action"])] = float(body.get("seconds", 0))
            return Response("{}", content_type="application/json")
        if request.path == "/_watchdog/dms/task" and request.method == "POST":
            body = request.get_json(force=True)
            try:
                set_task(body.pop("task"), body.pop("region", "us-east-1"), **body)
            except KeyError as exc:
                return Response(json.dumps({"error": f"no task {exc}"}), status=404)
            return Response("{}", content_type="application/json")
        if request.path == "/_watchdog/dms/tables" and request.method == "POST":
            body = request.get_json(force=True)
            try:
                set_tables(body["task"], body["tables"], body.get("region", "us-east-1"))
            except KeyError as exc:
                return Response(json.dumps({"error": f"no task {exc}"}), status=404)
            return Response("{}", content_type="application/json")
        return Response("not found", status=404)

    def calls(self, name: str | None = None) -> list[str]:
        with self.lock:
            return [r for r in self.requests if name is None or r == name]

    def reset(self) -> None:
        """Forget recorded calls, tasks, tables, reloads, endpoints and CloudWatch metrics."""
        with self.lock:
            self.requests.clear()
            self.delays.clear()
        _extra.clear()
        _tables.clear()
        reloads.clear()
        dms_backends[ACCOUNT].reset()
        cloudwatch_backends[ACCOUNT].reset()

    def close(self) -> None:
        self.server.shutdown()


def _region(authorization: str) -> str:
    """The region from a SigV4 Authorization header (Credential=KEY/DATE/REGION/SERVICE/aws4_request)."""
    scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return scope[2] if len(scope) >= 5 else "us-east-1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = MotoDms(args.port)
    print(server.url, flush=True)
    try:
        sys.stdin.read()  # exits when the parent closes our stdin
    finally:
        server.close()


if __name__ == "__main__":
    main()
