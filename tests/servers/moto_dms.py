"""A moto server for the AWS DMS API, with a test-only hook.

Stock moto cannot mark a replication task failed, has no StopReason or
LastFailureMessage, and never shows ``starting``. The hook (``POST
/_watchdog/dms/task``) sets any of these, and every API call is recorded
(``GET /_watchdog/requests``) so tests can assert which calls were made.
``POST /_watchdog/delay`` (``{"action": "StartReplicationTask", "seconds": 3}``)
holds every later call of that action for that long after recording it, then
carries it out (a slow AWS; a client killed meanwhile still gets its call made).

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
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any

from moto.dms.models import FakeReplicationTask, dms_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ACCOUNT = "123456789012"
_extra: dict[str, dict[str, Any]] = {}  # task ARN -> StopReason, LastFailureMessage, TablesErrored, hold_starting
_original_to_dict = FakeReplicationTask.to_dict
_original_start = FakeReplicationTask.start


def _to_dict(self: FakeReplicationTask) -> dict[str, Any]:
    out = _original_to_dict(self)
    extra = _extra.get(self.arn, {})
    for key in ("StopReason", "LastFailureMessage"):
        if extra.get(key):
            out[key] = extra[key]
    if "TablesErrored" in extra:
        out["ReplicationTaskStats"]["TablesErrored"] = extra["TablesErrored"]
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


def set_task(identifier: str, region: str = "us-east-1", **changes: Any) -> None:
    """Set a task's Status (``status``), StopReason, LastFailureMessage, TablesErrored or hold_starting."""
    for task in _tasks(region).values():
        if identifier in (task.id, task.arn):
            if "status" in changes:
                task.status = changes.pop("status")
            _extra.setdefault(task.arn, {}).update(changes)
            return
    raise KeyError(identifier)


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
            if target:
                action = target.split(".")[-1]
                with self.lock:
                    self.requests.append(action)
                    delay = self.delays.get(action, 0.0)
                if delay:
                    time.sleep(delay)
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
        return Response("not found", status=404)

    def calls(self, name: str | None = None) -> list[str]:
        with self.lock:
            return [r for r in self.requests if name is None or r == name]

    def reset(self) -> None:
        """Forget recorded calls, tasks and endpoints."""
        with self.lock:
            self.requests.clear()
            self.delays.clear()
        _extra.clear()
        dms_backends[ACCOUNT].reset()

    def close(self) -> None:
        self.server.shutdown()


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
