"""Prometheus metrics at ``/metrics`` and a health check at ``/healthz`` (prometheus-client).

Values are read from the engine and the state store when scraped, so the
engine knows nothing of Prometheus. ``/healthz`` answers 200 while the
scheduler loop turns and evaluations complete when expected, 503 otherwise
(``health`` is the daemon's check, the same one that gates systemd's
watchdog ping).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from watchdog.listen import parse_listen

# One thread serves every connection: a request is read without blocking and answered
# once complete, so idle or slow clients cost a file descriptor, never a thread (the
# unit's TasksMax), and never delay a scrape. Beyond MAX_CONNECTIONS the oldest is dropped.
MAX_CONNECTIONS = 64
CONNECTION_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 8192
SEND_TIMEOUT_SECONDS = 2.0


class EngineCollector:
    def __init__(self, engine: Any, outbox_depth: Callable[[], int],
                 notifiers: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
                 leader: Callable[[], bool] = lambda: True):
        self.engine = engine
        self.outbox_depth = outbox_depth
        self.notifiers = notifiers or (lambda: {})
        self.leader = leader

    def collect(self) -> Iterator[Any]:
        stats = self.engine.stats
        yield CounterMetricFamily("watchdog_evaluations", "Rule evaluations", value=stats.evaluations)
        yield CounterMetricFamily("watchdog_evaluation_errors", "Rule evaluations that failed", value=stats.errors)
        yield CounterMetricFamily("watchdog_notifications", "Notifications recorded in the outbox", value=stats.notifications)
        yield GaugeMetricFamily("watchdog_rules", "Rules loaded and enabled", value=len(self.engine.rules))
        yield GaugeMetricFamily("watchdog_leader", "1 while this instance leads (evaluates, delivers, remediates); "
                                "0 while it stands by", value=int(self.leader()))
        yield GaugeMetricFamily("watchdog_outbox_pending", "Notifications waiting to be delivered", value=self.outbox_depth())
        up = GaugeMetricFamily("watchdog_notifier_up", "Whether the notifier's last attempt succeeded", labels=["notifier"])
        refused = GaugeMetricFamily("watchdog_notifier_credentials_refused",
                                    "Whether the receiver refuses watchdog's credentials (notifications are kept)",
                                    labels=["notifier"])
        for name, status in sorted(self.notifiers().items()):
            up.add_metric([name], 1 if status.get("ok") else 0)
            refused.add_metric([name], 1 if status.get("refused") else 0)
        yield up
        yield refused
        lags = list(stats.lags)
        yield SummaryMetricFamily("watchdog_scheduling_lag_seconds", "Actual minus planned start of evaluations (recent)",
                                  count_value=len(lags), sum_value=sum(lags))
        durations = list(stats.durations)
        yield SummaryMetricFamily("watchdog_evaluation_seconds", "Wall time of evaluation batches (recent)",
                                  count_value=len(durations), sum_value=sum(durations))


@dataclass
class _Connection:
    sock: socket.socket
    opened: float
    data: bytearray = field(default_factory=bytearray)


class MetricsServer:
    """Serves /metrics and /healthz on ``listen`` (host:port) from one daemon thread.

    Each connection has ``connection_timeout`` seconds to send its request
    line and headers (at most MAX_REQUEST_BYTES); then it gets one answer
    (HTTP/1.0, closed after it) or is closed.
    """

    def __init__(self, listen: str, engine: Any, outbox_depth: Callable[[], int], health: Callable[[], tuple[bool, str]],
                 *, connection_timeout: float = CONNECTION_TIMEOUT_SECONDS,
                 notifiers: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
                 leader: Callable[[], bool] = lambda: True):
        """Start serving; raises ValueError for an address that does not parse, OSError when it cannot be bound.

        ``notifiers`` gives each notifier's last outcome (``StateStore.notifier_status``); ``leader`` whether this
        instance leads (``watchdog_leader``; always, for one instance)."""
        address = parse_listen(listen)
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engine, outbox_depth, notifiers, leader))
        self.health = health
        self.connection_timeout = connection_timeout
        self.listener = socket.socket(address.family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((address.host, address.port))
            self.listener.listen(64)
            self.listener.setblocking(False)
        except OSError:
            self.listener.close()
            raise
        self.port = int(self.listener.getsockname()[1])
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.connections: dict[socket.socket, _Connection] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="metrics", daemon=True)
        self.thread.start()

    def answer(self, request_line: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request line such as ``GET /metrics HTTP/1.1``."""
        parts = request_line.split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        path = parts[1].split("?")[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        if path == "/healthz":
            healthy, why = self.health()
            return (200 if healthy else 503), "text/plain", f"{'ok' if healthy else 'stalled'}: {why}\n".encode()
        return 404, "text/plain", b"not found\n"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                self._turn()
            except Exception:  # never let the listener's thread end; say why and go on
                logging.getLogger("watchdog.metrics").error("metrics listener error", exc_info=True)
                time.sleep(0.5)
        for conn in list(self.connections.values()):
            self._close(conn)
        self.selector.close()
        self.listener.close()

    def _turn(self) -> None:
        for key, _ in self.selector.select(timeout=0.5):
            if key.fileobj is self.listener:
                self._accept()
            else:
                conn = self.connections.get(key.fileobj)  # type: ignore[call-overload]
                if conn is not None:  # not dropped earlier in this turn
                    self._read(conn)
        deadline = time.monotonic() - self.connection_timeout
        for conn in [c for c in self.connections.values() if c.opened < deadline]:
            self._close(conn)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:  # the client gave up already
            return
        sock.setblocking(False)
        if len(self.connections) >= MAX_CONNECTIONS:
            self._close(min(self.connections.values(), key=lambda c: c.opened))
        conn = _Connection(sock, time.monotonic())
        self.connections[sock] = conn
        self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        conn.data += chunk
        if b"\r\n\r\n" not in conn.data and b"\n\n" not in conn.data:
            if len(conn.data) > MAX_REQUEST_BYTES:
                self._close(conn)
            return
        request_line = bytes(conn.data.split(b"\n", 1)[0]).decode("latin-1").strip()
        try:
            status, kind, body = self.answer(request_line)
        except Exception as exc:  # a collector that fails: say so, keep serving
            status, kind, body = 500, "text/plain", f"error: {type(exc).__name__}\n".encode()
        head = (f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            conn.sock.settimeout(SEND_TIMEOUT_SECONDS)  # answers are small: a client that does not read is dropped
            conn.sock.sendall(head + (b"" if request_line.startswith("HEAD") else body))
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self.connections.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)


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
