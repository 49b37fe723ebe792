"""The webhook receiver: a versioned JSON payload, signed, over plain HTTPS.

The payload is modelled on Alertmanager's webhook (``status``, ``alerts``
with ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``fingerprint``,
a ``groupKey``), so tools that read Alertmanager's read most of it; a
digest is one payload with several alerts. Version ``1``:

    {"version": "1", "receiver": "ops-hook", "status": "firing" | "resolved",
     "groupKey": "...", "sentAt": "2026-11-28T02:15:00Z", "truncatedAlerts": 0,
     "commonLabels": {...},
     "alerts": [{"status": "firing" | "resolved", "kind": "firing" | "repeat" | "severity" | "resolved" | "error"
                           | "recovered" | "action" | "acknowledged",
                 "labels": {"alertname": rule, "rule": rule, "group": group, "severity": ..., "type": ..., ...},
                 "annotations": {"summary": ..., "description": ..., "runbook_url": ...},
                 "value": ..., "startsAt": ..., "endsAt": ..., "fingerprint": ..., "episode": ..., "id": ...}]}

With a ``secret``, ``X-Watchdog-Signature: sha256=<hex HMAC-SHA256 of the
raw body>`` signs each attempt; ``X-Watchdog-Timestamp`` (Unix seconds) is
the body's ``sentAt``, which the signature covers, so a receiver refuses a
replay by refusing an old ``sentAt``. 2xx is delivered, 5xx, 429 and
timeouts are retried, any other 4xx is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.http import deliver
from watchdog.notify.receivers import WebhookReceiver
from watchdog.times import to_text, utcnow

VERSION = "1"
MAX_ALERTS = 100
ENDED = frozenset({"resolved", "recovered"})
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"
SIGNATURE_HEADER = "X-Watchdog-Signature"
TIMESTAMP_HEADER = "X-Watchdog-Timestamp"


def fingerprint(rule: str, group: str) -> str:
    """Stable per alert (rule and group), as Alertmanager's is per label set."""
    return hashlib.sha256(f"{rule}\0{group}".encode()).hexdigest()[:16]


def alert(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One alert of the payload from a stored notification payload (with its ``kind``, ``episode`` and ``id``)."""
    kind = str(entry.get("kind") or "")
    rule, group = str(entry.get("rule") or ""), str(entry.get("group") or "")
    labels = {str(k): str(v) for k, v in (entry.get("labels") or {}).items()}
    labels.update({"alertname": rule, "rule": rule, "group": group, "severity": str(entry.get("severity") or ""),
                   "type": str(entry.get("type") or "")})
    annotations = {"summary": str(entry.get("text") or ""), "description": str(entry.get("description") or ""),
                   "runbook_url": str(entry.get("runbook_url") or "")}
    ended = kind in ENDED
    return {
        "status": "resolved" if ended else "firing", "kind": kind,
        "labels": labels, "annotations": {k: v for k, v in annotations.items() if v},
        "value": entry.get("value"), "startsAt": entry.get("since") or entry.get("at"),
        "endsAt": entry.get("at") if ended else ZERO_TIME,
        "fingerprint": fingerprint(rule, group), "episode": str(entry.get("episode") or ""), "id": entry.get("id"),
        "dryRun": bool(entry.get("dry_run")),
    }


def payload(receiver: str, entries: Sequence[Mapping[str, Any]], sent_at: datetime) -> dict[str, Any]:
    """The version 1 payload for ``entries`` (one notification, or the several of a digest)."""
    alerts = [alert(e) for e in entries[:MAX_ALERTS]]
    common = dict(alerts[0]["labels"]) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    keys = sorted({f"{a['labels']['rule']}/{a['labels']['group']}" for a in alerts})
    return {
        "version": VERSION, "receiver": receiver,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "groupKey": keys[0] if len(keys) == 1 else hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16],
        "sentAt": to_text(sent_at), "truncatedAlerts": max(len(entries) - MAX_ALERTS, 0),
        "commonLabels": common, "alerts": alerts,
    }


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def entries_of(note: Notification) -> list[Mapping[str, Any]]:
    """The stored payloads a notification carries: its own, or each of a digest's."""
    return [{**n.payload, "kind": n.kind, "episode": n.episode, "id": n.id} for n in note.parts or (note,)]


class WebhookNotifier(Notifier):
    """POSTs the payload; groups notifications within the receiver's ``group_wait`` into one."""

    threads = False

    def __init__(self, receiver: WebhookReceiver, clock: Callable[[], datetime] = utcnow):
        self.receiver = receiver
        self.name = receiver.name
        self.groups = receiver.group_wait.total_seconds() > 0
        self.group_wait = receiver.group_wait
        self.clock = clock

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        now = self.clock().replace(microsecond=0)  # sentAt and the timestamp header: the same second
        body = json.dumps(payload(self.name, entries_of(note), now), default=str).encode()
        headers = dict(self.receiver.headers)
        headers[TIMESTAMP_HEADER] = str(int(now.timestamp()))
        if self.receiver.secret:
            headers[SIGNATURE_HEADER] = sign(self.receiver.secret, body)
        return deliver(f"webhook {self.name}", self.receiver.url, body, headers, self.receiver.timeout.total_seconds())
