"""Delivery from the persistent outbox: every notification is recorded before it is sent.

A notification is marked sent as soon as the notifier accepted it, and an
attempt is counted before it is made: after a crash or a lost answer the
notifier is told (``attempts``) and, where the receiver allows it, checks
whether it already holds the message before sending again. Work a delivery
calls for afterwards (rewriting a thread's first message) becomes its own
outbox entry, recorded with the delivery. Retryable failures back off (or wait for the
receiver's Retry-After); permanent ones are recorded and shown in status.

Grouping, as Alertmanager users know it: notifications bound for one
destination (a channel, or one thread of it) are held for the notifier's
``group_wait`` after the first of them was recorded, then go out as one
message; one alone goes out as itself. The wait ends early once the engine
says no evaluation can record another notification before it would end
(``quiet_until``), so a burst leaves as soon as its evaluations are applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from watchdog.logfmt import log
from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.digest import MAX_ENTRIES, digest
from watchdog.notify.render import EXPLAINED_KINDS
from watchdog.state import OutboxItem, StateStore
from watchdog.times import utcnow

logger = logging.getLogger("watchdog.outbox")

FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=10)
PASS_LIMIT = 1000  # due notifications read per pass
FOLLOW_UP_KINDS = frozenset({"update"})  # outbox entries that change a message already posted


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    """How long to wait after ``attempts`` failed attempts."""
    if retry_after is not None:
        return timedelta(seconds=max(retry_after, 0.5))
    delay: timedelta = FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_BACKOFF)


@dataclass
class Message:
    """Notifications that go out together: one destination, one thread (or none), in recording order."""

    key: tuple[str, str]  # (destination, thread ts or "")
    thread: Mapping[str, Any] | None
    items: list[OutboxItem] = field(default_factory=list)

    def notification(self) -> Notification:
        first = self.items[0]
        attempts = max(i.attempts for i in self.items)
        ids = tuple(i.id for i in self.items)
        if len(self.items) == 1:
            return Notification(id=first.id, rule=first.rule, group=first.group, kind=first.kind, episode=first.episode,
                                payload=first.payload, attempts=attempts, ids=ids)
        return Notification(id=first.id, rule="", group="", kind="digest", episode=first.episode,
                            payload=digest([i.payload for i in self.items]), attempts=attempts, ids=ids)


class Outbox:
    """Sends due notifications from the store through one notifier.

    ``quiet_until`` (optional) answers when the next notification could be
    recorded at the earliest (None: any moment); ``wake_at`` tells the caller
    when the next pass has something to do.
    """

    def __init__(self, store: StateStore, notifier: Notifier, clock: Callable[[], datetime] = utcnow,
                 quiet_until: Callable[[], datetime | None] | None = None):
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.quiet_until = quiet_until or (lambda: None)
        self.wake_at: datetime | None = None
        self._notifier_error: str | None = None
        self._held_links = False  # the last pass held a link to a thread whose first message was not out yet

    def _attempt(self, message: Message) -> Delivery:
        try:
            return self.notifier.send(message.notification(), message.thread)
        except Exception as exc:  # a notifier bug must not stop delivery of the others
            logger.exception("notifier raised", extra={"fields": {"notifier": self.notifier.name}})
            return Delivery.retry(f"{type(exc).__name__}: {exc}")

    def messages(self, now: datetime, final: bool = False) -> list[Message]:
        """The messages to send now, openers first; sets ``wake_at`` for what must wait.

        Within an episode order holds: a notification waits while an earlier one
        of its episode is unsent, except that with threads the ones after an
        episode's first message wait for its thread (they are replies in it).
        """
        groups: dict[tuple[str, str], Message] = {}
        self._held_links = False
        held: set[str] = set()
        admitted: dict[str, int] = {}
        threads: dict[str, Mapping[str, Any] | None] = {}
        for item in self.store.pending(now, limit=PASS_LIMIT):
            if item.episode in held or self.store.earlier_unsent(item) > admitted.get(item.episode, 0):
                held.add(item.episode)
                continue
            if item.episode not in threads:
                threads[item.episode] = self.store.thread_ref(item.episode, self.notifier.name)
            thread = threads[item.episode] if self.notifier.threads else None
            if self.notifier.threads and thread is None and admitted.get(item.episode, 0) >= 1:
                held.add(item.episode)
                continue
            linked = item.payload.get("link_episode")
            if isinstance(linked, str) and linked:  # a link to another alert's thread (see ``dependencies``)
                if self.notifier.threads and self.store.unsent(linked):
                    self._held_links = True
                    held.add(item.episode)  # that thread's first message is not out yet: there is nothing to link to
                    continue
                item = replace(item, payload={**item.payload, "link": self.store.thread_ref(linked, self.notifier.name)})
            admitted[item.episode] = admitted.get(item.episode, 0) + 1
            key = (self.notifier.destination(item.payload), str(thread["ts"]) if thread and "ts" in thread else "")
            if not self.notifier.groups or item.payload.get("approval") or item.kind in FOLLOW_UP_KINDS \
                    or item.kind in EXPLAINED_KINDS:
                # (an approval keeps its own buttons; a follow-up is a call of its own; the explained alerts of an
                # evaluation are one reply already, and leave the upstream's own resolution its rewrite)
                key = (key[0], f"{key[1]}#{item.id}")
            groups.setdefault(key, Message(key, thread)).items.append(item)
        wait = self.notifier.group_wait
        quiet = self.quiet_until()
        ready: list[Message] = []
        self.wake_at = self.store.next_attempt_at(after=now)
        for message in groups.values():
            deadline = message.items[0].created + wait
            if final or deadline <= now or any(i.attempts for i in message.items) or (quiet is not None and quiet >= deadline):
                for start in range(0, len(message.items), MAX_ENTRIES):
                    ready.append(Message(message.key, message.thread, message.items[start:start + MAX_ENTRIES]))
            elif self.wake_at is None or deadline < self.wake_at:
                self.wake_at = deadline
        ready.sort(key=lambda m: (m.thread is not None, m.items[0].id))
        return ready

    def deliver_due(self, stop: threading.Event | None = None, *, until: float | None = None, final: bool = False) -> int:
        """Send every due message; returns how many notifications were sent.

        Stops starting messages once ``stop`` is set or the monotonic ``until``
        passes; ``final`` sends without waiting out the group wait (at stop).
        Follow-ups recorded by this pass are delivered in another pass at once.
        """
        sent = 0
        while True:
            done, followed = self._deliver_pass(stop, until=until, final=final)
            sent += done
            if not followed and not (done and self._held_links):  # (a link may have its thread now)
                return sent

    def _deliver_pass(self, stop: threading.Event | None, *, until: float | None, final: bool) -> tuple[int, bool]:
        sent = 0
        followed = False
        blocked: set[str] = set()  # episodes whose delivery failed in this pass
        for message in self.messages(self.clock(), final):
            if (stop is not None and stop.is_set()) or (until is not None and time.monotonic() >= until):
                self.wake_at = self.clock()
                break
            items = message.items
            if any(i.episode in blocked for i in items):
                continue
            if until is not None and self.notifier.paced_until(message.key[0]) >= until:
                continue  # its pacing would overrun the budget: it stays for the next start
            paused = self.notifier.paused_until(message.key[0], items[0].kind) - time.monotonic()
            if paused > 0:  # the receiver asked the whole client to wait (Retry-After): not even an attempt
                blocked.update(i.episode for i in items)
                resume = self.clock() + timedelta(seconds=paused)
                self.wake_at = resume if self.wake_at is None else min(self.wake_at, resume)
                continue
            self.store.mark_attempt(items)
            result = self._attempt(message)
            now = self.clock()
            if result.ok:
                for item in items:  # the follow-ups ride with the first item's record
                    self.store.mark_sent(item, now, self.notifier.name, result.ref,
                                         result.follow_ups if item is items[0] else ())
                    log(logger, logging.INFO, "notification sent", id=item.id, rule=item.rule, group=item.group or None,
                        kind=item.kind, notifier=self.notifier.name, attempts=item.attempts + 1,
                        combined=len(items) if len(items) > 1 else None)
                followed = followed or bool(result.follow_ups)
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
        if sent:  # replies may have become sendable (their thread now exists)
            self.wake_at = self.clock()
        return sent, followed

    def _set_status(self, error: str | None, now: datetime) -> None:
        if error != self._notifier_error:
            self._notifier_error = error
            self.store.set_notifier_status(self.notifier.name, error, now)

    def flush(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Deliver everything due, without the group wait, until ``deadline`` (monotonic) passes.

        What is left stays in the outbox for the next start. Returns True when
        nothing is left to send.
        """
        while time.monotonic() < deadline:
            if self.deliver_due(stop, until=deadline, final=True):
                continue
            if self.store.outbox_depth() == 0:
                return True
            due = self.store.next_attempt_at()
            wait = max((due - self.clock()).total_seconds(), 0.05) if due is not None else 0.05
            if time.monotonic() + wait >= deadline:
                return False
            time.sleep(min(wait, 1.0))
        return self.store.outbox_depth() == 0
