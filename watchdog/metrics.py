"""Prometheus metrics at ``/metrics`` and a health check at ``/healthz`` (prometheus-client).

Values are read from the engine and the state store when scraped, so the
engine knows nothing of Prometheus. ``/healthz`` answers 200 while the
scheduler loop turns and evaluations complete when expected, 503 otherwise
(``health`` is the daemon's check, the same one that gates systemd's
watchdog ping).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily


class EngineCollector:
    def __init__(self, engine: Any, outbox_depth: Callable[[], int]):
        self.engine = engine
        self.outbox_depth = outbox_depth

    def collect(self) -> Iterator[Any]:
        stats = self.engine.stats
        yield CounterMetricFamily("watchdog_evaluations", "Rule evaluations", value=stats.evaluations)
        yield CounterMetricFamily("watchdog_evaluation_errors", "Rule evaluations that failed", value=stats.errors)
        yield CounterMetricFamily("watchdog_notifications", "Notifications recorded in the outbox", value=stats.notifications)
        yield GaugeMetricFamily("watchdog_rules", "Rules loaded and enabled", value=len(self.engine.rules))
        yield GaugeMetricFamily("watchdog_outbox_pending", "Notifications waiting to be delivered", value=self.outbox_depth())
        lags = list(stats.lags)
        yield SummaryMetricFamily("watchdog_scheduling_lag_seconds", "Actual minus planned start of evaluations (recent)",
                                  count_value=len(lags), sum_value=sum(lags))
        socket = getattr(self.engine, "socket", None)
        if socket is not None:
            yield GaugeMetricFamily("watchdog_slack_socket_connected", "Whether the Slack Socket Mode connection is up",
                                    value=int(socket.connected))
            yield CounterMetricFamily("watchdog_slack_socket_reconnects", "Socket Mode connections made", value=socket.reconnects)
        durations = list(stats.durations)
        yield SummaryMetricFamily("watchdog_evaluation_seconds", "Wall time of evaluation batches (recent)",
                                  count_value=len(durations), sum_value=sum(durations))


class MetricsServer:
    """Serves /metrics and /healthz on ``listen`` (host:port) in a daemon thread."""

    def __init__(self, listen: str, engine: Any, outbox_depth: Callable[[], int], health: Callable[[], tuple[bool, str]]):
        host, _, port = listen.rpartition(":")
        registry = CollectorRegistry()
        registry.register(EngineCollector(engine, outbox_depth))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, kind = generate_latest(registry), 200, "text/plain; version=0.0.4; charset=utf-8"
                elif self.path.split("?")[0] == "/healthz":
                    healthy, why = health()
                    body = f"{'ok' if healthy else 'stalled'}: {why}\n".encode()
                    status, kind = (200 if healthy else 503), "text/plain"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Heartbeat:
    """Fetches the dead man's switch URL, at most every ``every`` seconds, without blocking the loop."""

    def __init__(self, url: str, every: float, timeout: float = 10.0):
        self.url = url
        self.every = every
        self.timeout = timeout
        self.last = 0.0
        self.busy = threading.Lock()

    def beat(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every or self.busy.locked():
            return
        self.last = now
        threading.Thread(target=self._send, name="heartbeat", daemon=True).start()

    def _send(self) -> None:
        import logging
        import urllib.request

        from watchdog.logfmt import log

        with self.busy:
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                    response.read(1024)
            except OSError as exc:
                log(logging.getLogger("watchdog.heartbeat"), logging.WARNING, "heartbeat failed", error=str(exc))
