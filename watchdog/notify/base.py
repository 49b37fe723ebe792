"""The notifier interface. A notifier knows how to deliver; it knows nothing of rules or sources.

The contract between the outbox (``notify/outbox.py``, which owns retries,
pacing, grouping and exactly-once bookkeeping for every receiver) and a
receiver (Slack, console, and any other beside them):

- ``send(note, thread)`` delivers one message: a single notification, or a
  digest of several (``note.ids`` lists every outbox entry it carries,
  ``note.parts`` each of them as a notification of its own). It answers with
  a ``Delivery``: ``sent`` (with the ref of a thread's first message, and any
  follow-up work), ``retry`` (a passing fault; ``retry_after`` when the
  receiver said how long), ``failed`` (the message's own fault: no retry can
  fix it; recorded and shown in status) or ``refused`` (the receiver refuses
  watchdog's credentials: not the message's fault, so the notifications are
  kept, the receiver is paused and watchdog alerts about itself).
- ``held(note, thread)`` is asked before a message is sent again after an
  attempt whose outcome is unknown (a timeout, a crash after the call): it
  answers, for each id of ``note.ids`` the receiver already holds, the
  delivery that placed it there. The outbox marks those sent and sends only
  the others. A receiver that cannot look answers ``{}`` (at least once).
- A message's membership is fixed at its first attempt: a retry carries the
  same ids, never more, so finding one id tells nothing about another.
- ``send`` must not retry on its own and must not raise for a receiver's
  fault (an exception counts as a retryable failure).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Notification:
    """A rendered notification as stored in the outbox."""

    id: int
    rule: str
    group: str
    kind: str  # firing | repeat | severity | resolved | error | recovered | action | digest
    episode: str  # notifications of one episode share a Slack thread
    payload: Mapping[str, Any]  # text, title, severity, fields, samples, links, channel...
    # Attempts made before this one: after a crash or a lost answer the receiver may already hold it.
    attempts: int = 0
    ids: tuple[int, ...] = ()  # every outbox entry this message carries (a digest carries several)
    parts: tuple[Notification, ...] = ()  # a digest's notifications, one each (empty for a single one)
    # (wall clock) No earlier than its first attempt: the receiver cannot hold it from before (``held`` looks since).
    since: datetime | None = None

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt."""

    ok: bool
    ref: Mapping[str, Any] | None = None  # where the first message of a thread went (channel, ts)
    # Further work the delivery calls for (kind, payload), recorded as outbox entries with the delivery itself:
    # e.g. rewriting the first message of a thread once its resolution is posted.
    follow_ups: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    retryable: bool = False
    error: str | None = None
    retry_after: float | None = None  # seconds, when the receiver said so
    # The receiver refuses watchdog's credentials (a revoked token): no message can go until someone fixes them.
    refused: bool = False

    @classmethod
    def sent(cls, ref: Mapping[str, Any] | None = None,
             follow_ups: tuple[tuple[str, Mapping[str, Any]], ...] = ()) -> Delivery:
        return cls(ok=True, ref=ref, follow_ups=follow_ups)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Delivery:
        return cls(ok=False, retryable=True, error=error, retry_after=retry_after)

    @classmethod
    def failed(cls, error: str) -> Delivery:
        return cls(ok=False, retryable=False, error=error)

    @classmethod
    def refusal(cls, error: str) -> Delivery:
        """The receiver refuses the credentials, not the message: keep it, pause the receiver, alert."""
        return cls(ok=False, retryable=True, error=error, refused=True)


class Notifier(ABC):
    """Delivers one message at a time; the outbox decides what goes into each message and when."""

    name: str
    # Whether notifications bound for one destination within ``group_wait`` go out as one digest message.
    groups: bool = False
    # Whether an episode's later notifications are replies in the thread its first message opened.
    threads: bool = False
    group_wait: timedelta = timedelta(0)

    def destination(self, payload: Mapping[str, Any]) -> str:
        """Where a notification goes (a channel, the webhook): what is grouped together."""
        return ""

    def paused_until(self, destination: str, kind: str) -> float:
        """The monotonic moment the receiver allows calls for ``kind`` to ``destination`` again (Retry-After)."""
        return 0.0

    def paced_until(self, destination: str) -> float:
        """The monotonic moment the next message to ``destination`` may start (pacing within the receiver's limits)."""
        return 0.0

    def held(self, note: Notification, thread: Mapping[str, Any] | None) -> Mapping[int, Delivery]:
        """The ids of ``note.ids`` the receiver already holds, each with the delivery that placed it ({}: none, or
        the receiver cannot tell). Asked before sending again a message whose earlier attempt has no known outcome."""
        return {}

    @abstractmethod
    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        """Deliver one notification or digest; ``thread`` is the ref of its episode's first message, if any."""
