"""Local stand-ins for the paging receivers: a PagerDuty Events API v2 endpoint, a webhook receiver, an SMTP server.

Each records what it got and can be told to answer the next requests with
a status of choice (``script``: 400, 429 with Retry-After, 500...), or to be
down (``down``: every request answered 503) until told otherwise. Started on
free ports on 127.0.0.1 by fixtures in conftest.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    status: int  # what the stand-in answered
    at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class RecordingServer:
    """An HTTP server that records every POST and answers 2xx unless scripted otherwise."""

    ok_status = 200

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[tuple[int, dict[str, str]]] = []  # answers for the next requests, in order
        self.down = False
        self.delay = 0.0  # seconds each answer is held (a slow receiver)
        self.hold: threading.Event | None = None  # while set to an unset event, answers wait for it (at most 30 s)
        self.echo = False  # error answers quote the request (as some proxies do): what watchdog logs must redact it
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, answer = owner.answer(self.path, dict(self.headers.items()), raw)
                if owner.delay:
                    time.sleep(owner.delay)
                hold = owner.hold
                if hold is not None:
                    hold.wait(30)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def validate(self, raw: bytes) -> str | None:
        """Why a body is refused with 400 (None: accepted)."""
        return None

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            if self.down:
                status, extra = 503, {}
            elif self.script:
                status, extra = self.script.pop(0)
            else:
                problem = self.validate(raw)
                status, extra = (400, {}) if problem else (self.ok_status, {})
            self.received.append(Received(path, headers, raw, status))
        body: dict[str, Any] = {"status": "success" if status < 300 else "error"}
        if status >= 300:
            body["message"] = self.validate(raw) or f"scripted {status}"
            if self.echo:
                body["request"] = raw.decode("utf-8", "replace")
        return status, extra, body

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.script.clear()
            self.down = False
            self.echo = False
            self.delay = 0.0
            if self.hold is not None:
                self.hold.set()
            self.hold = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PagerDutyServer(RecordingServer):
    """The Events API v2 endpoint (``/v2/enqueue``): 202 for a valid event, 400 naming what is wrong."""

    ok_status = 202

    def validate(self, raw: bytes) -> str | None:
        try:
            event = json.loads(raw)
        except ValueError:
            return "Event object is invalid: not JSON"
        if not isinstance(event, dict) or not event.get("routing_key"):
            return "Event object is invalid: routing_key missing"
        if event.get("event_action") not in PD_ACTIONS:
            return "Event object is invalid: 'event_action' is invalid"
        if event["event_action"] != "trigger":
            return None if event.get("dedup_key") else "Event object is invalid: dedup_key missing"
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return "Event object is invalid: payload missing"
        if not payload.get("summary") or len(payload["summary"]) > 1024:
            return "Event object is invalid: 'payload.summary' is missing or longer than 1024"
        if not payload.get("source"):
            return "Event object is invalid: 'payload.source' is missing"
        if payload.get("severity") not in PD_SEVERITIES:
            return "Event object is invalid: 'payload.severity' is invalid"
        if len(str(event.get("dedup_key", ""))) > 255:
            return "Event object is invalid: 'dedup_key' is too long"
        return None

    def events(self) -> list[dict[str, Any]]:
        """The events PagerDuty accepted, in order."""
        return [r.json for r in self.accepted()]


class WebhookServer(RecordingServer):
    """A webhook receiver: any JSON body is accepted (200)."""


def self_signed(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by openssl in ``directory``."""
    import os
    import subprocess

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpServer:
    """A local SMTP server (aiosmtpd) keeping every message; optional AUTH (PLAIN/LOGIN over plain text)."""

    def __init__(self, username: str | None = None, password: str | None = None, *,
                 cert: tuple[str, str] | None = None, implicit_tls: bool = False) -> None:
        """``cert`` (certificate, key): STARTTLS is offered and required, or with ``implicit_tls`` TLS from the
        first byte (SMTPS)."""
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Any] = []  # email.message.EmailMessage
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: list[int] = []  # SMTP codes to answer the next DATA with
        owner = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if owner.refuse:
                    code = owner.refuse.pop(0)
                    return f"{code} scripted refusal"
                import email
                import email.policy

                owner.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                owner.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = (username is not None and auth_data.login.decode() == username
                  and auth_data.password.decode() == password)
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {}
        if username is not None:
            kwargs = {"authenticator": authenticator, "auth_require_tls": False}
        if cert is not None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            kwargs.update({"ssl_context": context} if implicit_tls else {"tls_context": context, "require_starttls": True})
        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
