"""A local Slack Socket Mode server: a WebSocket endpoint standing in for Slack's.

The local Slack API server answers ``apps.connections.open`` with this
server's URL, so slack-sdk's own Socket Mode client connects here. Tests send
envelopes as Slack would (``click`` builds a ``block_actions`` one) and read
the client's acknowledgements; ``drop`` closes every connection, as Slack
does when it refreshes a connection, and ``drop_silently`` cuts every
connection without a word (no close frame, no FIN: a NAT timeout, a lost
route): the client reaches the server through a small TCP relay that then
swallows every byte both ways while keeping both sockets open.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


class SocketModeServer:
    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.acks: list[str] = []  # envelope ids the client acknowledged
        self.connects = 0
        self.lock = threading.Lock()
        self.refuse = False  # when set, new connections are closed at once (Slack unreachable)
        self._ids = itertools.count(1)
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.relay = Relay(self.port)
        self.url = f"ws://127.0.0.1:{self.relay.port}/link"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def drop_silently(self) -> None:
        """Cut every current connection without closing it: from now on nothing passes, both ways."""
        self.relay.blackhole()
        with self.lock:
            self.connections.clear()  # (the server's side is as good as gone; new connections pass again)

    def _handle(self, conn: ServerConnection) -> None:
        if self.refuse:
            conn.close()
            return
        with self.lock:
            # The newest connection is the one clicks go to: an older one may belong to a watchdog that is stopping.
            self.connections.append(conn)
            self.connects += 1
        conn.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0WATCHDOG"},
                              "debug_info": {"host": "local", "approximate_connection_time": 3600}}))
        try:
            for raw in conn:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("envelope_id"):
                    with self.lock:
                        self.acks.append(str(message["envelope_id"]))
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                if conn in self.connections:
                    self.connections.remove(conn)

    def connected(self) -> bool:
        with self.lock:
            return bool(self.connections)

    def wait_connected(self, timeout: float = 15.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.connections and self.connects >= count:
                    return
            time.sleep(0.05)
        raise AssertionError(f"no Socket Mode client connected within {timeout}s (connects: {self.connects})")

    def send(self, envelope: dict[str, Any]) -> str:
        """Send one envelope to the newest connection; returns its envelope id."""
        envelope = dict(envelope)
        envelope.setdefault("envelope_id", f"env-{next(self._ids)}")
        with self.lock:
            if not self.connections:
                raise AssertionError("no Socket Mode client is connected")
            conn = self.connections[-1]
        conn.send(json.dumps(envelope))
        return str(envelope["envelope_id"])

    def click(self, *, user: str, action_id: str, value: str, channel: str = "C0ALERTS", message_ts: str = "1.000001",
              action_ts: str | None = None, envelope_id: str | None = None, retry_attempt: int = 0,
              selected: str | None = None, thread_ts: str | None = None) -> str:
        """Deliver a button click as Slack does (``interactive`` envelope, ``block_actions`` payload); with
        ``selected``, the choice of an option in an overflow menu (``action_id`` is the menu's); ``thread_ts`` for a
        message that is a reply in a thread."""
        action_ts = action_ts or f"{time.time():.6f}"
        action: dict[str, Any] = {"type": "button", "action_id": action_id, "block_id": "actions", "value": value,
                                  "action_ts": action_ts}
        if selected is not None:
            action = {"type": "overflow", "action_id": action_id, "block_id": "menu", "action_ts": action_ts,
                      "selected_option": {"text": {"type": "plain_text", "text": "chosen"}, "value": selected}}
        container = {"type": "message", "channel_id": channel, "message_ts": message_ts,
                     **({"thread_ts": thread_ts} if thread_ts else {})}
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": "T000"},
            "team": {"id": "T000"},
            "container": container,
            "channel": {"id": channel},
            "message": {"ts": message_ts, **({"thread_ts": thread_ts} if thread_ts else {})},
            "trigger_id": f"trigger-{action_ts}",
            "actions": [action],
        }
        envelope: dict[str, Any] = {"type": "interactive", "payload": payload, "accepts_response_payload": False,
                                    "retry_attempt": retry_attempt, "retry_reason": "timeout" if retry_attempt else ""}
        if envelope_id:
            envelope["envelope_id"] = envelope_id
        return self.send(envelope)

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if envelope_id in self.acks:
                    return
            time.sleep(0.02)
        raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout}s")

    def drop(self) -> None:
        """Close every connection (the client should reconnect)."""
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            conn.close()

    def reset(self) -> None:
        self.drop()
        with self.lock:
            self.acks.clear()
            self.connects = 0
            self.refuse = False

    def close(self) -> None:
        self.relay.close()
        self.drop()
        self.server.shutdown()


class Relay:
    """A TCP relay on a free loopback port to ``target``; ``blackhole`` makes its current links swallow everything."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            link: dict[str, Any] = {"dead": False, "sockets": (client, upstream)}
            with self.lock:
                self.links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    @staticmethod
    def _pump(link: dict[str, Any], source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not link["dead"]:
                    sink.sendall(data)
        except OSError:
            pass
        if not link["dead"]:  # (a dead link says nothing, not even that it ended)
            for sock in link["sockets"]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def blackhole(self) -> None:
        with self.lock:
            for link in self.links:
                link["dead"] = True
            self.links = []

    def close(self) -> None:
        self.listener.close()
