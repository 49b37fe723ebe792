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


class OutboxThread(threading.Thread):
    """Sends one outbox's entries (``receiver``'s) on its own connection until ``stop``, then what is due until
    ``deadline`` (monotonic); a standby (``fence``: another instance leads) sends nothing.

    The daemon's main ``Delivery`` and each ``ReceiverThread`` are one; they say how the store opens
    (``_open_store``) and what follows a pass (``_passed``). A storage error is logged once until a pass succeeds.
    """

    notifier: Notifier
    receiver = ""  # whose entries the outbox sends ('': the main notifier's)

    def __init__(self, name: str, stop: threading.Event, fence: Fence | None = None,
                 quiet_until: Callable[[], datetime | None] | None = None):
        super().__init__(name=name, daemon=True)
        self.stop = stop
        self.fence = fence  # several instances: only the leader delivers
        self.quiet_until = quiet_until  # the engine's (see Outbox)
        self.wake = threading.Event()
        self.deadline = 0.0  # monotonic: set with ``stop``, when the last flush must end
        self.failing = ""  # the last storage error, logged once
        self.fields: dict[str, str] = {}  # what this thread's log lines name (its receiver)

    def leading(self) -> bool:
        return self.fence is None or self.fence.leading()

    def _open_store(self) -> StateStore:
        """This thread's own connection to the state; raises StoreError or OSError."""
        raise NotImplementedError

    def _passed(self, outbox: Outbox) -> None:
        """After a pass that read and wrote the outbox: follow this thread's own problems."""

    def _between(self) -> None:
        """Before every pass and once after the last: what needs no state."""

    def _standby_seconds(self) -> float:
        return 1.0

    def _retry_seconds(self) -> float:
        return RETRY_STORAGE.total_seconds()

    def _failed(self, message: str, exc: Exception) -> None:
        if self.failing != str(exc):
            self.failing = str(exc)
            log(logger, logging.ERROR, message, **self.fields, error=self.failing)

    def _open(self) -> Outbox | None:
        """The outbox on this thread's own connection; None (logged once) while the state cannot be opened."""
        try:
            store = self._open_store()
        except (StoreError, OSError) as exc:
            self._failed("outbox cannot be opened; retrying", exc)
            return None
        return Outbox(store, self.notifier, quiet_until=self.quiet_until, receiver=self.receiver, may_act=self.leading)

    def run(self) -> None:
        outbox: Outbox | None = None
        self.failing = ""
        try:
            while not self.stop.is_set():
                self.wake.clear()
                self._between()
                if not self.leading():  # a standby: the leader delivers; woken when this instance leads
                    self.wake.wait(self._standby_seconds())
                    continue
                outbox = outbox or self._open()
                if outbox is None:
                    self.wake.wait(self._retry_seconds())
                    continue
                try:
                    outbox.deliver_due(self.stop)
                    due = outbox.wake_at
                    self.failing = ""
                    self._passed(outbox)
                except Deposed:  # deposed mid-pass: the new leader resumes the outbox where it is
                    continue
                except StoreError as exc:  # a full disk: retry, never end the thread (the engine alerts)
                    self._failed("outbox cannot be read or written; retrying", exc)
                    due = utcnow() + timedelta(seconds=self._retry_seconds())
                wait = 3600.0 if due is None else max(0.01, (due - utcnow()).total_seconds())
                self.wake.wait(wait)
            self._between()
            try:
                if outbox is not None and self.leading() and not outbox.flush(self.deadline):
                    # (the main thread counts every receiver's: all that the next start sends)
                    log(logger, logging.WARNING, "notifications kept in the outbox for the next start", **self.fields,
                        pending=outbox.store.outbox_depth(self.receiver or None))
            except StoreError as exc:
                log(logger, logging.ERROR, "outbox cannot be read or written; notifications kept for the next start",
                    **self.fields, error=str(exc))
        finally:
            if outbox is not None:
                outbox.store.close()


class ReceiverThread(OutboxThread):
    """Sends one receiver's outbox entries until stopped, then what is due until ``deadline`` (monotonic)."""

    def __init__(self, key: str, notifier: Notifier, state: str | StateConfig,
                 quiet_until: Callable[[], datetime | None] | None = None, fence: Fence | None = None):
        super().__init__(f"delivery-{key}", threading.Event(), fence, quiet_until)
        self.key = self.receiver = key
        self.notifier = notifier
        self.state = state  # a SQLite path, or the configured (maybe shared) state
        self.fields = {"receiver": key}
        self.problem: str | None = None  # notifications this receiver refused for good, while unacknowledged

    def _passed(self, outbox: Outbox) -> None:
        refused = outbox.refused
        if refused is not None:  # the receiver refuses the credentials: everything is kept, tried again now and then
            self.problem = (f"{refused}. No notification can reach {self.key}: every one is kept in the outbox and goes "
                            f"out once {self.key} accepts the credentials again (tried every "
                            f"{REFUSED_RETRY.total_seconds() / 60:.0f} minutes); fix them in the config and restart watchdog")
            return
        failed = outbox.store.failed_notifications(self.key)
        self.problem = None if not failed else (
            f"receiver {self.key} refused {len(failed)} notification{'s' if len(failed) > 1 else ''} for good, the "
            f"latest: {failed[0].get('last_error')} (`watchdog status` lists them; `--ack-failed` acknowledges them)")

    def _open_store(self) -> StateStore:
        return StateStore(self.state, fence=self.fence) if isinstance(self.state, str) else open_store(self.state, self.fence)


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

