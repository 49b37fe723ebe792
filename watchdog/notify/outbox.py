"""Delivery from the persistent outbox: every notification is recorded before it is sent.

The outbox owns, for every receiver, what Alertmanager's notification
pipeline owns: grouping, order within an episode, retries with backoff,
pacing and exactly-once bookkeeping. A receiver (``notify/base.Notifier``)
only renders and sends one message and says how that went; the contract is
in ``notify/base.py``. In short:

- **Recorded first.** A notification is an outbox row written in the same
  transaction as the transition that caused it; a row is marked sent only
  once the receiver holds it.
- **Grouping**, as Alertmanager users know it: notifications bound for one
  destination (a channel, or one thread of it) are held for the receiver's
  ``group_wait`` after the first of them was recorded, then go out as one
  message; one alone goes out as itself; a ``group_wait`` of zero sends each
  alone. The wait ends early once the engine says no evaluation can record
  another notification before it would end (``quiet_until``).
- **A message's membership is fixed at its first attempt**: before the call,
  every entry of it is stamped with the message's key (``mark_attempt``).
  A retry sends exactly those entries again; notifications recorded since go
  in a message of their own. So a message the receiver holds carries all of
  its ids or none, and no id is ever taken for another.
- **A lost answer is checked, id by id.** An attempt is counted before it is
  made; before a message with an earlier attempt is sent again, the receiver
  is asked which of its ids it already holds (``Notifier.held``): those are
  marked sent as they are, only the others are sent.
- **Failures.** Retryable ones back off (or wait for the receiver's
  Retry-After); permanent ones are the message's own fault and are recorded
  and shown in status; a *refusal* (the receiver refuses watchdog's
  credentials) is no notification's fault: every notification is kept, the
  receiver is tried again every ``REFUSED_RETRY``, and ``refused`` says so
  for the daemon to alert on (console, ``/metrics``, status).
- **Wake-ups come from the store.** After every delivery, ``wake_at`` is the
  earliest moment something held becomes sendable: a retry's due time, a
  group wait's end, a receiver's pause ending; whatever the pass did, so a
  retry is never left waiting for unrelated traffic.

Bookkeeping that concerns one receiver (its thread refs, its pauses, its
status, its message keys) is kept under the receiver's ``name``.
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
from watchdog.state import StateStore
from watchdog.state_db import Deposed
from watchdog.state_outbox import OutboxItem
from watchdog.times import utcnow

logger = logging.getLogger("watchdog.outbox")

FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=10)
REFUSED_RETRY = timedelta(minutes=5)  # how often a receiver that refuses the credentials is tried again
PASS_LIMIT = 1000  # due notifications read per pass
MAX_PASSES = 50  # passes of one delivery (each sends what the previous made sendable: replies in new threads)
FOLLOW_UP_KINDS = frozenset({"update", "menus"})  # follow-ups of a message already posted: each a call of its own


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    """How long to wait after ``attempts`` failed attempts (``retry_after``: the receiver's own word, in seconds)."""
    if retry_after is not None:
        return timedelta(seconds=max(retry_after, 0.5))
    delay: timedelta = FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_BACKOFF)


@dataclass
class Message:
    """Notifications that go out together: one destination, one thread (or none), in recording order."""

    key: tuple[str, str]  # (destination, what sets it apart there: thread ts, fixed message key, entry id)
    thread: Mapping[str, Any] | None
    items: list[OutboxItem] = field(default_factory=list)

    def notification(self) -> Notification:
        """The message as the receiver gets it: the entry itself, or a digest of them (with each as a part)."""
        first = self.items[0]
        attempts = max(i.attempts for i in self.items)
        ids = tuple(i.id for i in self.items)
        parts = tuple(_single(i) for i in self.items)
        if len(self.items) == 1:
            return parts[0]
        return Notification(id=first.id, rule="", group="", kind="digest", episode=first.episode,
                            payload=digest([{**i.payload, "episode": i.episode} for i in self.items]),
                            attempts=attempts, ids=ids, parts=parts, since=min(_since(i) for i in self.items))


def _single(item: OutboxItem) -> Notification:
    return Notification(id=item.id, rule=item.rule, group=item.group, kind=item.kind, episode=item.episode,
                        payload=item.payload, attempts=item.attempts, ids=(item.id,), since=_since(item))


def _since(item: OutboxItem) -> datetime:
    """The earliest moment the receiver can hold ``item``: its first attempt (entries attempted before that was
    recorded: their creation, an earlier bound)."""
    return item.first_attempt if item.first_attempt is not None else item.created


class Outbox:
    """Sends due notifications from the store through one notifier.

    ``quiet_until`` (optional) answers when the next notification could be
    recorded at the earliest (None: any moment); ``wake_at`` tells the caller
    when the next delivery has something to do (None: nothing until a new
    notification is recorded); ``refused`` is the receiver's refusal of the
    credentials while it lasts.
    """

    def __init__(self, store: StateStore, notifier: Notifier, clock: Callable[[], datetime] = utcnow,
                 quiet_until: Callable[[], datetime | None] | None = None, receiver: str = "",
                 may_act: Callable[[], bool] = lambda: True):
        self.store = store
        # Whether this instance may deliver now (several instances: only the leader, and only within its lease),
        # asked again right before each message goes out: a leader frozen in between sends nothing once it wakes.
        self.may_act = may_act
        self.notifier = notifier
        self.receiver = receiver  # whose entries this outbox sends ('' : the main notifier's)
        self.clock = clock
        self.quiet_until = quiet_until or (lambda: None)
        self.wake_at: datetime | None = None
        self.refused: str | None = None
        self.refused_until: datetime | None = None  # (outbox clock) when a refusing receiver is tried again
        self._notifier_error: tuple[str | None, bool] | None = None

    def _attempt(self, message: Message) -> Delivery:
        try:
            return self.notifier.send(message.notification(), message.thread)
        except Exception as exc:  # a notifier bug must not stop delivery of the others
            logger.exception("notifier raised", extra={"fields": {"notifier": self.notifier.name}})
            return Delivery.retry(f"{type(exc).__name__}: {exc}")

    def _held(self, message: Message) -> Mapping[int, Delivery]:
        try:
            return self.notifier.held(message.notification(), message.thread)
        except Exception:  # a lookup that fails says nothing is held: the message is sent (at least once)
            logger.exception("notifier lookup raised", extra={"fields": {"notifier": self.notifier.name}})
            return {}

    def _resume_at(self, message: Message, now: datetime) -> datetime | None:
        """When the receiver lets ``message`` go, if not now: a refusal of the credentials, or a Retry-After pause."""
        resume = self.refused_until if self.refused_until is not None and self.refused_until > now else None
        paused = self.notifier.paused_until(message.key[0], message.items[0].kind) - time.monotonic()
        if paused > 0:
            end = now + timedelta(seconds=paused)
            resume = end if resume is None else max(resume, end)
        return resume

    def _earliest(self, moment: datetime | None) -> None:
        if moment is not None and (self.wake_at is None or moment < self.wake_at):
            self.wake_at = moment

    def messages(self, now: datetime, final: bool = False) -> list[Message]:
        """The messages to send now, openers first; sets ``wake_at`` for what must wait.

        Within an episode order holds: a notification waits while an earlier one
        of its episode is unsent, except that with threads the ones after an
        episode's first message wait for its thread (they are replies in it).
        A message attempted before keeps its entries (and waits whole).
        """
        groups: dict[tuple[str, str], Message] = {}
        held: set[str] = set()
        waiting: set[tuple[str, str]] = set()  # attempted messages one of whose entries must wait: all of it waits
        admitted: dict[str, int] = {}
        threads: dict[str, Mapping[str, Any] | None] = {}
        name = self.notifier.name
        grouping = self.notifier.groups and self.notifier.group_wait > timedelta(0)
        for item in self.store.pending(now, limit=PASS_LIMIT, receiver=self.receiver):
            if item.episode not in threads:
                threads[item.episode] = self.store.thread_ref(item.episode, name)
            thread = threads[item.episode] if self.notifier.threads else None
            destination = self.notifier.destination(item.payload)
            if item.message is not None:
                key = (destination, f"message {item.message}")
            else:
                key = (destination, str(thread["ts"]) if thread and "ts" in thread else "")
                routed_wait = item.payload.get("group_wait")  # (a route's own group wait; 0s: no grouping either)
                groups_here = grouping if not isinstance(routed_wait, (int, float)) else \
                    self.notifier.groups and routed_wait > 0
                if not groups_here or item.payload.get("approval") or item.kind in FOLLOW_UP_KINDS \
                        or item.kind in EXPLAINED_KINDS:
                    # (an approval keeps its own buttons; a follow-up is a call of its own; the explained alerts of an
                    # evaluation are one reply already, and leave the upstream's own resolution its rewrite)
                    key = (key[0], f"{key[1]}#{item.id}")
            if (item.episode in held or self.store.earlier_unsent(item) > admitted.get(item.episode, 0)
                    or (self.notifier.threads and thread is None and admitted.get(item.episode, 0) >= 1
                        and item.message is None)):
                held.add(item.episode)
                waiting.add(key)
                continue
            linked = item.payload.get("link_episode")
            if isinstance(linked, str) and linked:  # a link to another alert's thread (see ``dependencies``)
                if self.notifier.threads and self.store.unsent(linked, self.receiver):
                    # That thread's first message is not out yet: there is nothing to link to. (Once it is, the
                    # delivery's next pass sends this one.)
                    held.add(item.episode)
                    waiting.add(key)
                    continue
                item = replace(item, payload={**item.payload, "link": self.store.thread_ref(linked, self.notifier.name)})
            admitted[item.episode] = admitted.get(item.episode, 0) + 1
            groups.setdefault(key, Message(key, thread)).items.append(item)
        wait = self.notifier.group_wait
        quiet = self.quiet_until()
        ready: list[Message] = []
        self.wake_at = self.store.next_attempt_at(after=now, receiver=self.receiver)
        for key, message in groups.items():
            if key[1].startswith("message ") and key in waiting:
                continue
            # a route may set its own group wait (carried in the payload by routing)
            routed = message.items[0].payload.get("group_wait")
            deadline = message.items[0].created + (timedelta(seconds=float(routed)) if routed is not None else wait)
            attempted = any(i.attempts or i.message is not None for i in message.items)
            follow_up = message.items[0].kind in FOLLOW_UP_KINDS  # (part of a message already out: nothing to wait for)
            if not (final or deadline <= now or attempted or follow_up or (quiet is not None and quiet >= deadline)):
                self._earliest(deadline)
                continue
            resume = self._resume_at(message, now)
            if resume is not None:  # the receiver asked to wait (Retry-After), or refuses us: not even an attempt
                self._earliest(resume)
                continue
            for start in range(0, len(message.items), MAX_ENTRIES):
                ready.append(Message(message.key, message.thread, message.items[start:start + MAX_ENTRIES]))
        ready.sort(key=lambda m: (m.thread is not None, m.items[0].id))
        return ready

    def deliver_due(self, stop: threading.Event | None = None, *, until: float | None = None, final: bool = False) -> int:
        """Send every due message; returns how many notifications were sent.

        Stops starting messages once ``stop`` is set or the monotonic ``until``
        passes; ``final`` sends without waiting out the group wait (at stop).
        What a pass makes sendable (replies in a thread just opened, follow-ups
        it recorded) goes in another pass at once. Afterwards ``wake_at`` is
        computed from what the store holds.
        """
        sent = 0
        for _ in range(MAX_PASSES):
            done, attempted = self._deliver_pass(stop, until=until, final=final)
            sent += done
            if not attempted or (stop is not None and stop.is_set()) or (until is not None and time.monotonic() >= until):
                break
        now = self.clock()
        if self.messages(now, final) and not (stop is not None and stop.is_set()):
            self.wake_at = now  # (sendable, but left by this delivery: a stop, the budget, or the pass limit)
        return sent

    def _deliver_pass(self, stop: threading.Event | None, *, until: float | None, final: bool) -> tuple[int, bool]:
        """One pass over the messages due now; returns (notifications sent, whether any message was attempted)."""
        sent = 0
        attempted = False
        blocked: set[str] = set()  # episodes whose delivery failed in this pass
        for message in self.messages(self.clock(), final):
            if (stop is not None and stop.is_set()) or (until is not None and time.monotonic() >= until):
                break
            if any(i.episode in blocked for i in message.items):
                continue
            if until is not None and self.notifier.paced_until(message.key[0]) >= until:
                continue  # its pacing would overrun the budget: it stays for the next start
            if self._resume_at(message, self.clock()) is not None:  # (a pause that began in this pass)
                blocked.update(i.episode for i in message.items)
                continue
            attempted = True
            if any(i.attempts for i in message.items):  # an earlier attempt's outcome is unknown: ask first
                found = self._held(message)
                sent += self._record_held(message, found)
                remaining = [i for i in message.items if i.id not in found]
                if not remaining:
                    continue
                message = Message(message.key, message.thread, remaining)
            sent += self._send(message, blocked)
        return sent, attempted

    def _record_held(self, message: Message, found: Mapping[int, Delivery]) -> int:
        """Mark sent the entries of ``message`` that the receiver already holds; returns how many."""
        now = self.clock()
        count = 0
        for item in message.items:
            delivery = found.get(item.id)
            if delivery is None:
                continue
            self.store.mark_sent(item, now, self.notifier.name, delivery.ref, delivery.follow_ups)
            log(logger, logging.INFO, "notification already held by the receiver; not sent again", id=item.id,
                rule=item.rule, group=item.group or None, kind=item.kind, notifier=self.notifier.name)
            count += 1
        return count

    def _send(self, message: Message, blocked: set[str]) -> int:
        """Attempt ``message`` once and record the outcome; returns how many notifications were sent."""
        items = message.items
        # (the wall clock, not the outbox's: the receiver's messages carry wall-clock times)
        self.store.mark_attempt(items, f"{self.notifier.name}:{items[0].id}", utcnow())  # (a deposed leader's raises Deposed)
        if not self.may_act():  # the lease ran out (a freeze) since: the new leader asks the receiver and sends
            raise Deposed(f"{self.notifier.name}: this instance no longer leads; not sent")
        result = self._attempt(message)
        now = self.clock()
        if result.ok:
            for item in items:  # the follow-ups ride with the first item's record
                self.store.mark_sent(item, now, self.notifier.name, result.ref,
                                     result.follow_ups if item is items[0] else ())
                log(logger, logging.INFO, "notification sent", id=item.id, rule=item.rule, group=item.group or None,
                    kind=item.kind, notifier=self.notifier.name, attempts=item.attempts + 1,
                    combined=len(items) if len(items) > 1 else None)
            if self.refused is not None:
                log(logger, logging.WARNING, "receiver accepts the credentials again", notifier=self.notifier.name)
            self.refused = self.refused_until = None
            self._set_status(None, now)
            return len(items)
        blocked.update(i.episode for i in items)
        error = result.error or "unknown error"
        if result.refused:  # not these notifications' fault: they all stay, the receiver waits
            if self.refused is None:
                log(logger, logging.ERROR, "receiver refuses the credentials; notifications kept", notifier=self.notifier.name,
                    error=error, pending=self.store.outbox_depth(self.receiver), retry_in=REFUSED_RETRY.total_seconds())
            for item in items:  # (still due: after a restart with credentials fixed they go at once)
                self.store.mark_retry(item, error, now)
            self.refused = error
            self.refused_until = now + REFUSED_RETRY
            self._set_status(error, now, refused=True)
            return 0
        attempts = max(i.attempts for i in items) + 1
        wait = backoff(attempts, result.retry_after)
        for item in items:
            if result.retryable:
                self.store.mark_retry(item, error, now + wait)
                log(logger, logging.WARNING, "notification delayed", id=item.id, rule=item.rule, kind=item.kind,
                    notifier=self.notifier.name, error=error, retry_in=wait.total_seconds())
            else:
                self.store.mark_failed(item, error)
                log(logger, logging.ERROR, "notification failed", id=item.id, rule=item.rule, kind=item.kind,
                    notifier=self.notifier.name, error=error)
        self._set_status(error, now)
        return 0

    def _set_status(self, error: str | None, now: datetime, *, refused: bool = False) -> None:
        if (error, refused) != self._notifier_error:
            self._notifier_error = (error, refused)
            self.store.set_notifier_status(self.notifier.name, error, now, refused=refused)

    def flush(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Deliver everything due, without the group wait, until ``deadline`` (monotonic) passes.

        What is left stays in the outbox for the next start. Returns True when
        nothing is left to send.
        """
        while time.monotonic() < deadline:
            self.deliver_due(stop, until=deadline, final=True)
            if self.store.outbox_depth(self.receiver) == 0:
                return True
            if self.wake_at is None:
                return False
            wait = max((self.wake_at - self.clock()).total_seconds(), 0.05)
            if time.monotonic() + wait >= deadline:
                return False
            time.sleep(min(wait, 1.0))
        return self.store.outbox_depth(self.receiver) == 0
