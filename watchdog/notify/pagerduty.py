"""The PagerDuty receiver: Events API v2 over plain HTTPS.

An alert that fires (or changes severity, or a rule that keeps failing)
is a ``trigger``; its resolution a ``resolve``; an acknowledgement in Slack
an ``acknowledge``. All three carry one ``dedup_key`` per rule, group and
episode (and routing key), so PagerDuty keeps one incident per alert episode
and a retried trigger after a lost answer is the same event, not a second
page. 202 is delivered; 400 is permanent; 429 and 5xx are retried by the
outbox. At most ``events_per_minute`` events a minute per routing key.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.http import deliver
from watchdog.notify.receivers import PagerDutyReceiver

MAX_SUMMARY = 1024  # PagerDuty's limit on payload.summary
ACTIONS = {"firing": "trigger", "severity": "trigger", "error": "trigger", "resolved": "resolve",
           "recovered": "resolve", "acknowledged": "acknowledge"}
SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}
WINDOW_SECONDS = 60.0


def dedup_key(rule: str, group: str, episode: str, routing_key: str) -> str:
    """Stable per rule, group, episode and routing key; reveals none of them (the routing key is a secret)."""
    digest = hashlib.sha256("\0".join((rule, group, episode, routing_key)).encode()).hexdigest()
    return f"watchdog-{digest[:40]}"


def _links(payload: Mapping[str, Any]) -> list[dict[str, str]]:
    details = payload.get("details") or {}
    found = [("Runbook", payload.get("runbook_url")), ("Dashboards", details.get("dashboard_url"))]
    return [{"href": str(url), "text": text} for text, url in found
            if isinstance(url, str) and url.startswith(("https://", "http://"))]


def event(note: Notification, routing_key: str, source: str) -> dict[str, Any] | None:
    """The Events API v2 body for ``note``, or None for a kind PagerDuty is not told about.

    ``payload.summary`` is the notification's first line (at most 1,024
    characters); a rule error is severity ``error``.
    """
    action = ACTIONS.get(note.kind)
    if action is None:
        return None
    p = note.payload
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                            "dedup_key": dedup_key(note.rule, note.group, note.episode, routing_key)}
    if action != "trigger":
        return body
    # The first line with text, on one line whatever the data holds (control and separator characters included).
    line = next((text for text in note.text.splitlines() if text.strip()), f"{note.rule} [{note.group}]")
    summary = " ".join(line.split()) or note.rule or "watchdog alert"
    details = p.get("details") or {}
    custom: dict[str, Any] = {
        "value": p.get("value"), "threshold": details.get("threshold"), "since": p.get("since"),
        "description": p.get("description") or None, "labels": dict(p.get("labels") or {}), "text": note.text,
    }
    body["payload"] = {
        "summary": summary[:MAX_SUMMARY], "source": source,
        "severity": "error" if note.kind == "error" else SEVERITIES.get(str(p.get("severity")), "warning"),
        "timestamp": p.get("at"), "component": note.rule, "group": note.group or None, "class": p.get("type") or None,
        "custom_details": {k: v for k, v in custom.items() if v is not None},
    }
    body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
    body["links"] = _links(p)
    body["client"] = "watchdog"
    return body


class PagerDutyNotifier(Notifier):
    """Sends one event per notification (PagerDuty groups by dedup_key itself), paced per routing key."""

    def __init__(self, receiver: PagerDutyReceiver, source: str | None = None):
        self.receiver = receiver
        self.name = receiver.name
        self.source = source or socket.gethostname()
        self.sent: deque[float] = deque()  # monotonic moments of the events of the last minute

    def paced_until(self, destination: str) -> float:
        now = time.monotonic()
        while self.sent and self.sent[0] <= now - WINDOW_SECONDS:
            self.sent.popleft()
        if len(self.sent) < self.receiver.events_per_minute:
            return 0.0
        return self.sent[0] + WINDOW_SECONDS

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        body = event(note, self.receiver.routing_key, self.source)
        if body is None:
            return Delivery.sent()  # nothing PagerDuty is told about (routing keeps these away)
        wait = self.paced_until("") - time.monotonic()
        if wait > 0:  # the outbox asks paced_until first; this guards a direct caller
            return Delivery.retry(f"PagerDuty: {self.receiver.events_per_minute} events a minute reached", wait)
        self.sent.append(time.monotonic())
        return deliver(f"PagerDuty {body['event_action']}", self.receiver.url, json.dumps(body).encode(), {},
                       self.receiver.timeout.total_seconds())
