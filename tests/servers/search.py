"""osmem-server (an in-memory server speaking the Elasticsearch/OpenSearch REST API), with a request counter.

A small counting proxy sits in front of it so tests and benchmarks can assert
how many requests watchdog made (e.g. one ``_msearch`` per tick).
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from osmem_server import OsmemServer


class CountingProxy:
    """Forwards HTTP requests to ``upstream`` and counts them by method and path."""

    def __init__(self, upstream: str):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.counts: Counter[str] = Counter()
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.down = False  # when True, answers 503 as if the cluster were unavailable
        self.first_search_at: float | None = None  # time.time() of the first search-like request
        self.delay = 0.0  # seconds each _msearch is held before it is forwarded (a slow cluster)
        self.in_flight = 0
        self.peak_in_flight = 0  # the most _msearch requests held or forwarded at once
        self.bodies: list[bytes] = []  # the _msearch bodies since the last reset
        self.bytes = 0  # request and response bytes through the proxy (benchmarks: bytes per cycle)
        # Called with (time.time(), method, path, body) as each request arrives, before it is held or forwarded
        # (benchmarks: when each search went out and which rules it covers).
        self.on_request: Callable[[float, str, str, bytes], None] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.on_request is not None:
                    proxy.on_request(time.time(), self.command, self.path, body or b"")
                with proxy.lock:
                    proxy.counts[f"{self.command} {self.path.split('?')[0]}"] += 1
                    proxy.paths.append(f"{self.command} {self.path}")
                    if proxy.first_search_at is None and any(k in self.path for k in ("_search", "_msearch", "_count")):
                        proxy.first_search_at = time.time()
                if proxy.down:
                    self.close_connection = True
                    self.send_error(503)
                    return
                msearch = "_msearch" in self.path
                if msearch:
                    with proxy.lock:
                        if len(proxy.bodies) < 1000:  # tests read a few; a benchmark's thousands are not kept
                            proxy.bodies.append(body or b"")
                        proxy.in_flight += 1
                        proxy.peak_in_flight = max(proxy.peak_in_flight, proxy.in_flight)
                    time.sleep(proxy.delay)
                try:
                    conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    with proxy.lock:
                        proxy.bytes += len(body or b"") + len(data)
                finally:
                    if msearch:
                        with proxy.lock:
                            proxy.in_flight -= 1
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up (a tool being stopped) is not an error worth a traceback

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.paths.clear()
            self.bodies.clear()

    def total(self, prefix: str = "") -> int:
        with self.lock:
            return sum(n for key, n in self.counts.items() if key.startswith(prefix) or prefix in key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_search() -> OsmemServer:
    """Start osmem-server with no seed data, English analysis only.

    Its standard error (where it says "exiting: stdin closed" when stopped, a
    line no user can act on) goes to a log file in the temp directory, named
    in the error if it fails to start. osmem-server inherits the standard
    error it is started with, so file descriptor 2 points at the log while
    the process starts.
    """
    log = tempfile.NamedTemporaryFile(prefix="osmem-server-", suffix=".log", delete=False)
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(log.fileno(), 2)
        try:
            return OsmemServer.start(japanese=False)
        finally:
            os.dup2(saved, 2)
    except Exception as exc:
        raise RuntimeError(f"osmem-server did not start ({exc}); its log: {log.name}") from exc
    finally:
        os.close(saved)
        log.close()


def compat_node_class() -> type:
    """An elasticsearch-py node class for servers that answer as OpenSearch (test-only).

    elasticsearch-py 8/9 send ``application/vnd.elasticsearch+json;
    compatible-with=N``, which OpenSearch-compatible servers refuse; this node
    rewrites the media types to plain JSON so the elasticsearch client path can
    be exercised against osmem-server.
    """
    from elastic_transport import HttpHeaders, Urllib3HttpNode

    class CompatNode(Urllib3HttpNode):  # type: ignore[misc]
        def perform_request(self, method, target, body=None, headers=None, **kwargs):  # type: ignore[no-untyped-def]
            fixed = HttpHeaders(headers or {})
            for key in ("content-type", "accept"):
                value = fixed.get(key)
                if value and "vnd.elasticsearch+" in value:
                    fixed[key] = "application/x-ndjson" if "x-ndjson" in value else "application/json"
            response = super().perform_request(method, target, body=body, headers=fixed, **kwargs)
            response.meta.headers["X-Elastic-Product"] = "Elasticsearch"
            return response

    return CompatNode
