"""A local Slack API server: the Web API methods watchdog uses and an incoming-webhook path.

It records every request and can be told to answer the next requests with
429 and Retry-After, a 500, or ``{"ok": false, "error": ...}``, and to answer
a method late (``delays``: the call takes effect, the answer is held). Posts
keep their message metadata, which ``conversations.history`` and
``conversations.replies`` return with ``include_all_metadata``, paged and
bounded in time as Slack's (``oldest``, ``latest``, ``inclusive``, ``limit``,
``cursor``); ``post`` adds someone else's message. Tests drive it
in-process; a daemon under test reaches it over HTTP.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class SlackRequest:
    method: str  # e.g. chat.postMessage, or "webhook"
    body: dict[str, Any]
    at: float = field(default_factory=time.time)
    path: str = ""


class SlackServer:
    def __init__(self) -> None:
        self.requests: list[SlackRequest] = []
        self.failures: list[dict[str, Any]] = []  # scripted answers for the next requests
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> latest message
        self.lock = threading.Lock()
        self._last_us = 0
        self.socket_url = ""  # apps.connections.open answers this (a local Socket Mode server)
        self.usergroups: dict[str, list[str]] = {}  # usergroups.users.list: group id -> user ids
        self.delays: dict[str, float] = {}  # method -> seconds its answer is held after the call took effect
        slack = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if "?" in self.path:  # GET methods (usergroups.users.list) pass their arguments in the query
                    self.path, raw = self.path.split("?", 1)[0], raw or self.path.split("?", 1)[1]
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                    for key in ("blocks", "attachments", "metadata"):
                        if isinstance(body.get(key), str):
                            body[key] = json.loads(body[key])
                method = "webhook" if self.path.startswith("/services/") else self.path.rsplit("/", 1)[-1]
                status, headers, answer = slack.answer(method, body, self.headers.get("Authorization", ""), self.path)
                delay = slack.delays.get(method, 0.0)
                if delay:  # a slow Slack: the call took effect, its answer comes late (or to no one)
                    time.sleep(delay)
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/api/"
        self.webhook_url = f"http://127.0.0.1:{port}/services/T000/B000/XXXX"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, *answers: dict[str, Any]) -> None:
        """Script the next answers: ``{"status": 429, "retry_after": 1}``, ``{"status": 500}``, ``{"error": "invalid_auth"}``;
        with ``"method"`` an answer waits for a call of that method.
        ``{"status": 502, "body": "<html>..."}`` answers a body that is not JSON, as a proxy in front of Slack sends;
        ``{"status": 500, "taken": True}`` takes the call, then answers 500 (the answer lost on its way back)."""
        with self.lock:
            self.failures.extend(answers)

    def answer(self, method: str, body: dict[str, Any], auth: str, path: str = "") -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append(SlackRequest(method, body, path=path))
            failure = next((f for f in self.failures if f.get("method", method) == method), None)
            if failure is not None and failure.get("taken"):  # the call takes effect; its answer is lost
                self.failures.remove(failure)
                self._effect(method, body, auth)
                return failure.get("status", 500), {}, {"ok": False, "error": "internal_error"}
            if failure is not None:  # (a failure naming a method waits for a call of that method)
                self.failures.remove(failure)
                if "body" in failure:
                    return failure["status"], {}, str(failure["body"])
                if "status" in failure:
                    headers = {"Retry-After": str(failure["retry_after"])} if "retry_after" in failure else {}
                    error = "ratelimited" if failure["status"] == 429 else "internal_error"
                    return failure["status"], headers, {"ok": False, "error": error}
                return 200, {}, ("invalid_token" if method == "webhook" else {"ok": False, "error": failure["error"]})
            return self._effect(method, body, auth)

    def _effect(self, method: str, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], Any]:
        """What a call does and answers when nothing is scripted (called with the lock held)."""
        if method == "webhook":
            return 200, {}, "ok"
        if method == "chat.postMessage":
            ts = self._next_ts()
            channel = body.get("channel", "")
            self.messages[(channel, ts)] = dict(body)
            return 200, {}, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body.get("text", "")}}
        if method in ("conversations.history", "conversations.replies"):
            return 200, {}, self._conversation(method, body)
        if method == "chat.update":
            key = (body.get("channel", ""), body.get("ts", ""))
            if key not in self.messages:
                return 200, {}, {"ok": False, "error": "message_not_found"}
            self.messages[key] = {**self.messages[key], **body}  # (its metadata stays, as in Slack)
            return 200, {}, {"ok": True, "channel": key[0], "ts": key[1]}
        if method == "apps.connections.open":
            if not auth.startswith("Bearer xapp-"):
                return 200, {}, {"ok": False, "error": "not_allowed_token_type"}
            if not self.socket_url:
                return 200, {}, {"ok": False, "error": "socket_mode_not_enabled"}
            return 200, {}, {"ok": True, "url": self.socket_url}
        if method == "chat.postEphemeral":
            return 200, {}, {"ok": True, "message_ts": self._next_ts()}
        if method == "usergroups.users.list":
            users = self.usergroups.get(str(body.get("usergroup", "")))
            if users is None:
                return 200, {}, {"ok": False, "error": "no_such_subteam"}
            return 200, {}, {"ok": True, "users": users}
        if method == "auth.test":
            return 200, {}, {"ok": True, "user_id": "U0WATCHDOG", "team": "test"}
        if method == "chat.getPermalink":
            key = (str(body.get("channel", "")), str(body.get("message_ts", "")))
            if key not in self.messages:
                return 200, {}, {"ok": False, "error": "message_not_found"}
            return 200, {}, {"ok": True, "channel": key[0],
                             "permalink": f"https://test.slack.com/archives/{key[0]}/p{key[1].replace('.', '')}"}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def _conversation(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A page of conversations.history (newest first) or .replies (oldest first), as Slack answers: only
        messages between ``oldest`` and ``latest`` (each excluded unless ``inclusive``), at most ``limit`` (default
        100, at most 999) of them, and ``response_metadata.next_cursor`` while more are left ('' at the end)."""
        channel = str(body.get("channel", ""))
        parent = str(body.get("ts", ""))
        inclusive = str(body.get("inclusive")).lower() in ("true", "1")
        oldest, latest = float(body.get("oldest") or 0), float(body.get("latest") or time.time() + 1)
        history = method == "conversations.history"
        cursor = base64.b64decode(str(body["cursor"])).decode() if body.get("cursor") else None  # the last ts given
        found = [{"ts": ts, "text": m.get("text", ""), **({"thread_ts": m["thread_ts"]} if "thread_ts" in m else {}),
                  **({"metadata": m["metadata"]} if "metadata" in m and str(body.get("include_all_metadata")).lower()
                     in ("true", "1") else {})}
                 for (c, ts), m in sorted(self.messages.items(), key=lambda kv: float(kv[0][1]), reverse=history)
                 if c == channel
                 and (m.get("thread_ts") == parent or ts == parent if not history else "thread_ts" not in m)
                 and (oldest <= float(ts) <= latest if inclusive else oldest < float(ts) < latest)
                 and (cursor is None or (float(ts) < float(cursor) if history else float(ts) > float(cursor)))]
        limit = min(int(body.get("limit") or 100), 999)
        page, more = found[:limit], len(found) > limit
        next_cursor = base64.b64encode(page[-1]["ts"].encode()).decode() if more else ""
        return {"ok": True, "messages": page, "has_more": more, "response_metadata": {"next_cursor": next_cursor}}

    def post(self, channel: str, text: str = "chatter", **fields: Any) -> str:
        """A message someone else posts in ``channel`` (no watchdog metadata); returns its ts."""
        with self.lock:
            ts = self._next_ts()
            self.messages[(channel, ts)] = {"channel": channel, "text": text, **fields}
            return ts

    def _next_ts(self) -> str:
        """A message ts as Slack's: the wall clock's seconds to the microsecond, unique and increasing."""
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return f"{self._last_us // 10**6}.{self._last_us % 10**6:06d}"

    def calls(self, method: str | None = None) -> list[SlackRequest]:
        with self.lock:
            return [r for r in self.requests if method is None or r.method == method]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.failures.clear()
            self.messages.clear()
            self.usergroups.clear()
            self.delays.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
