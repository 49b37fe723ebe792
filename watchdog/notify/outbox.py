"""Delivery from the persistent outbox: every notification is recorded before it is sent.

A notification is marked sent only after the notifier accepted it; a crash in
between is the one moment a notification can go out twice, and it is kept as
short as one database write. Retryable failures back off (or wait for the
receiver's Retry-After); permanent ones are recorded and shown in status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from watchdog.logfmt import log
from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.state import OutboxItem, StateStore
from watchdog.times import utcnow

logger = logging.getLogger("watchdog.outbox")

MAX_GROUPS_PER_MESSAGE = 20  # firings of one rule in one evaluation share a message, this many at most
FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=10)


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    """How long to wait after ``attempts`` failed attempts."""
    if retry_after is not None:
        return timedelta(seconds=max(retry_after, 0.5))
    delay: timedelta = FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_BACKOFF)


def combine(items: list[OutboxItem]) -> dict[str, Any]:
    """One payload announcing the firing of several groups of one rule."""
    first = dict(items[0].payload)
    lines = [f"• {i.group}: {i.payload.get('body') or i.payload.get('summary', '')}" for i in items]
    severities = {str(i.payload.get("severity")) for i in items}
    severity = "critical" if "critical" in severities else first.get("severity", "warning")
    title = f"FIRING: {first['rule']} ({len(items)} groups)"
    details = {k: v for k, v in (first.get("details") or {}).items() if k in ("window", "threshold")}
    first.update({
        "group": "", "severity": severity, "title": title, "body": "\n".join(lines), "value": None, "details": details,
        "text": f"[{str(severity).upper()}] {title}: " + ", ".join(i.group for i in items), "groups": [i.group for i in items],
    })
    return first


class Outbox:
    """Sends due notifications from the store through one notifier."""

    def __init__(self, store: StateStore, notifier: Notifier, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self._notifier_error: str | None = None

    def _attempt(self, items: list[OutboxItem]) -> Delivery:
        item = items[0]
        payload = item.payload if len(items) == 1 else combine(items)
        note = Notification(id=item.id, rule=item.rule, group=item.group if len(items) == 1 else "", kind=item.kind,
                            episode=item.episode, payload=payload)
        thread = self.store.thread_ref(item.episode, self.notifier.name) if len(items) == 1 else None
        try:
            return self.notifier.send(note, thread)
        except Exception as exc:  # a notifier bug must not stop delivery of the others
            logger.exception("notifier raised", extra={"fields": {"notifier": self.notifier.name}})
            return Delivery.retry(f"{type(exc).__name__}: {exc}")

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """Send every due notification, oldest first; returns how many were sent."""
        sent = 0
        waiting: set[str] = set()  # episodes with an earlier notification not yet due: keep each thread in order
        ready: list[OutboxItem] = []
        admitted: dict[str, int] = {}  # episode -> items of it already in ready
        for item in self.store.pending(self.clock(), limit=500):
            if item.episode in waiting or self.store.earlier_unsent(item) > admitted.get(item.episode, 0):
                waiting.add(item.episode)
                continue
            admitted[item.episode] = admitted.get(item.episode, 0) + 1
            ready.append(item)
        blocked: set[str] = set()  # episodes whose delivery failed in this pass
        for items in self._messages(ready):
            if stop is not None and stop.is_set():
                break
            if any(i.episode in blocked for i in items):
                continue
            result = self._attempt(items)
            now = self.clock()
            if result.ok:
                for item in items:
                    self.store.mark_sent(item, now, self.notifier.name, result.ref)
                    log(logger, logging.INFO, "notification sent", id=item.id, rule=item.rule, group=item.group or None,
                        kind=item.kind, notifier=self.notifier.name, attempts=item.attempts + 1,
                        combined=len(items) if len(items) > 1 else None)
                sent += len(items)
                self._set_status(None, now)
                continue
            blocked.update(i.episode for i in items)
            error = result.error or "unknown error"
            for item in items:
                if result.retryable:
                    wait = backoff(item.attempts + 1, result.retry_after)
                    self.store.mark_retry(item, error, now + wait)
                    log(logger, logging.WARNING, "notification delayed", id=item.id, rule=item.rule, kind=item.kind,
                        notifier=self.notifier.name, error=error, retry_in=wait.total_seconds())
                else:
                    self.store.mark_failed(item, error)
                    log(logger, logging.ERROR, "notification failed", id=item.id, rule=item.rule, kind=item.kind,
                        notifier=self.notifier.name, error=error)
            self._set_status(error, now)
        return sent

    def _messages(self, ready: list[OutboxItem]) -> list[list[OutboxItem]]:
        """Group due items into messages: firings of one rule recorded together share one, if the notifier combines."""
        if not self.notifier.combines:
            return [[item] for item in ready]
        messages: list[list[OutboxItem]] = []
        batches: dict[tuple[str, datetime], list[OutboxItem]] = {}
        for item in ready:
            if item.kind != "firing" or item.group == "" or item.payload.get("channel") != ready[0].payload.get("channel"):
                messages.append([item])
                continue
            key = (item.rule, item.created)
            batch = batches.get(key)
            if batch is None or len(batch) >= MAX_GROUPS_PER_MESSAGE:
                batch = batches[key] = []
                messages.append(batch)
            batch.append(item)
        return messages

    def _set_status(self, error: str | None, now: datetime) -> None:
        if error != self._notifier_error:
            self._notifier_error = error
            self.store.set_notifier_status(self.notifier.name, error, now)

    def flush(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Deliver until nothing is due or ``deadline`` (monotonic) passes; True when the outbox is empty."""
        while time.monotonic() < deadline:
            self.deliver_due(stop)
            due = self.store.next_attempt_at()
            if due is None:
                return True
            wait = (due - self.clock()).total_seconds()
            if wait > deadline - time.monotonic():
                return False
            if wait > 0:
                time.sleep(min(wait, 1.0))
        return self.store.outbox_depth() == 0
