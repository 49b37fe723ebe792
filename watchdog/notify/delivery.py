"""Delivery to the receivers besides the main notifier: one thread and one outbox per receiver.

Each receiver (PagerDuty, a webhook, a mailbox) is a destination of the
outbox with its own entries, attempts, retries, pacing and sent marks
(``Outbox(receiver=NAME)``), sent from a thread of its own with its own
database connection: a receiver that is down, slow or refusing delays only
itself, never Slack or another receiver. A receiver that refuses
watchdog's credentials (401 or 403, a refused SMTP login) keeps every
notification and is one of watchdog's own problems while it lasts; one that
refused notifications for good (a 400 from PagerDuty, another 4xx from a
webhook, a refused recipient) is one until the failures are acknowledged
(``watchdog status --ack-failed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from watchdog.logfmt import log
from watchdog.notify.base import Notifier
from watchdog.notify.outbox import REFUSED_RETRY, Outbox
from watchdog.state import StateStore
from watchdog.state_db import Deposed, StoreError
from watchdog.storage import open_store
from watchdog.times import utcnow

if TYPE_CHECKING:
    from watchdog.config import StateConfig
    from watchdog.lease import Fence

logger = logging.getLogger("watchdog.delivery")

RETRY_STORAGE = timedelta(seconds=10)


class ReceiverThread(threading.Thread):
    """Sends one receiver's outbox entries until stopped, then what is due until ``deadline`` (monotonic)."""

    def __init__(self, key: str, notifier: Notifier, state: str | StateConfig,
                 quiet_until: Callable[[], datetime | None] | None = None, fence: Fence | None = None):
        super().__init__(name=f"delivery-{key}", daemon=True)
        self.key = key
        self.notifier = notifier
        self.state = state  # a SQLite path, or the configured (maybe shared) state
        self.fence = fence  # several instances: only the leader delivers
        self.quiet_until = quiet_until
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.deadline = 0.0
        self.problem: str | None = None  # notifications this receiver refused for good, while unacknowledged

    def _check(self, store: StateStore, refused: str | None) -> None:
        if refused is not None:  # the receiver refuses the credentials: everything is kept, tried again now and then
            self.problem = (f"{refused}. No notification can reach {self.key}: every one is kept in the outbox and goes "
                            f"out once {self.key} accepts the credentials again (tried every "
                            f"{REFUSED_RETRY.total_seconds() / 60:.0f} minutes); fix them in the config and restart watchdog")
            return
        failed = store.failed_notifications(self.key)
        self.problem = None if not failed else (
            f"receiver {self.key} refused {len(failed)} notification{'s' if len(failed) > 1 else ''} for good, the "
            f"latest: {failed[0].get('last_error')} (`watchdog status` lists them; `--ack-failed` acknowledges them)")

    def leading(self) -> bool:
        return self.fence is None or self.fence.leading()

    def _open(self) -> Outbox | None:
        try:
            store = (StateStore(self.state, fence=self.fence) if isinstance(self.state, str)
                     else open_store(self.state, self.fence))
        except (StoreError, OSError) as exc:
            log(logger, logging.ERROR, "outbox cannot be opened; retrying", receiver=self.key, error=str(exc))
            return None
        return Outbox(store, self.notifier, quiet_until=self.quiet_until, receiver=self.key, may_act=self.leading)

    def run(self) -> None:
        outbox: Outbox | None = None
        try:
            while not self.stop.is_set():
                self.wake.clear()
                if not self.leading():  # a standby: the leader delivers
                    self.wake.wait(1.0)
                    continue
                outbox = outbox or self._open()
                if outbox is None:
                    self.wake.wait(RETRY_STORAGE.total_seconds())
                    continue
                try:
                    outbox.deliver_due(self.stop)
                    due = outbox.wake_at
                    self._check(outbox.store, outbox.refused)
                except Deposed:  # the new leader resumes where this one stopped
                    continue
                except StoreError as exc:  # a full disk: retried (the engine alerts about the database)
                    log(logger, logging.ERROR, "outbox cannot be read or written; retrying", receiver=self.key,
                        error=str(exc))
                    due = utcnow() + RETRY_STORAGE
                wait = 3600.0 if due is None else max(0.01, (due - utcnow()).total_seconds())
                self.wake.wait(wait)
            try:
                if outbox is not None and self.leading() and not outbox.flush(self.deadline):
                    log(logger, logging.WARNING, "notifications kept in the outbox for the next start", receiver=self.key,
                        pending=outbox.store.outbox_depth(self.key))
            except StoreError as exc:
                log(logger, logging.ERROR, "outbox cannot be read or written; notifications kept for the next start",
                    receiver=self.key, error=str(exc))
        finally:
            if outbox is not None:
                outbox.store.close()


class Receivers:
    """The receiver threads of a daemon (none without ``receivers:``)."""

    def __init__(self, notifiers: Mapping[str, Notifier], state: str | StateConfig,
                 quiet_until: Callable[[], datetime | None] | None = None, fence: Fence | None = None):
        self.threads = [ReceiverThread(key, notifier, state, quiet_until, fence) for key, notifier in notifiers.items()]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wake(self) -> None:
        for thread in self.threads:
            thread.wake.set()

    def problems(self) -> dict[str, str | None]:
        """Each receiver's own problem (None: none), keyed ``receiver NAME``."""
        return {f"receiver {t.key}": t.problem for t in self.threads}

    def stop(self, deadline: float) -> None:
        """Stop every thread: each sends what is due until ``deadline`` (monotonic), the rest waits for the next start."""
        for thread in self.threads:
            thread.deadline = deadline
            thread.stop.set()
            thread.wake.set()

    def join(self, until: float) -> None:
        for thread in self.threads:
            if thread.is_alive():
                thread.join(max(0.0, until - time.monotonic()))

