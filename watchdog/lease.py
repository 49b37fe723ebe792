"""The leader lease: which of several instances sharing one PostgreSQL state evaluates, delivers and remediates.

One row (``ha_lease``: holder, epoch, expires_at) says who leads. Expiry is
on the database's clock, so hosts' clocks never have to agree. The holder
renews it every third of the lease; another instance takes it over once it
has expired, incrementing the epoch: the fencing token. Every write of the
leader's checks the epoch in its own transaction (``Fence.check``), so a
deposed leader (frozen, cut off, slow) changes nothing once another took
over. A leader that cannot renew stops by its own monotonic clock a margin
before the lease could have expired, so at no moment do two instances act.

No advisory locks: a session-level lock is lost silently with its connection
and breaks behind PgBouncer's transaction pooling; a row and a number do not.

``LeaseKeeper`` is the thin I/O driver (a thread with its own connection, so
a long evaluation never delays a renewal); ``Fence`` is what the store and
the delivery thread consult.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from watchdog.logfmt import log
from watchdog.state_db import Database, Deposed, StoreError

if TYPE_CHECKING:
    from watchdog.state import StateStore
    from watchdog.state_lease import LeaseView

logger = logging.getLogger("watchdog.lease")

# The leader stops acting this fraction of the lease before it could expire (its clock may run slow; the
# database's timestamp of a renewal is later than the moment it was sent, never earlier).
SAFETY_FRACTION = 0.2
FLAP_TAKEOVERS = 3  # this many changes of leader within FLAP_WINDOW_LEASES leases is flapping
FLAP_WINDOW_LEASES = 20


class Fence:
    """This instance's claim to lead: the epoch it holds and, on the monotonic clock, until when it may act.

    Shared by threads: the lease keeper sets it, the store's writes and the
    delivery thread read it.
    """

    def __init__(self, instance: str, monotonic: Callable[[], float] = time.monotonic):
        self.instance = instance
        self.monotonic = monotonic
        self.epoch = 0  # 0: not the leader
        self.until = 0.0  # monotonic deadline to stop acting

    def leading(self) -> bool:
        """Whether this instance may act now (holds an epoch and its lease has not run out)."""
        return self.epoch > 0 and self.monotonic() < self.until

    def check(self, db: Database) -> None:
        """Inside a write transaction: raise Deposed unless this instance still holds the lease at its epoch.

        The update locks the lease row until the transaction ends, so a takeover
        waits for this write to commit (and this write fails once one committed).
        """
        epoch = self.epoch
        if epoch <= 0 or self.monotonic() >= self.until:
            raise Deposed(f"{self.instance} is not the leader (its lease ran out or was taken over)")
        held = db.execute("update ha_lease set epoch = epoch where name = 'leader' and holder = ? and epoch = ?",
                          (self.instance, epoch)).rowcount
        if held != 1:
            self.epoch = 0
            raise Deposed(f"{self.instance} was deposed: another instance took the lease over (epoch {epoch} ended)")


@dataclass(frozen=True)
class Change:
    """What one lease attempt changed for this instance."""

    leading: bool
    became_leader: bool
    lost: bool
    leader: str | None
    epoch: int


class LeaseKeeper(threading.Thread):
    """Renews or takes the lease every third of it; tells ``on_change`` when this instance starts or stops leading."""

    def __init__(self, store: StateStore, fence: Fence, lease_seconds: float,
                 on_change: Callable[[Change], None] = lambda change: None):
        super().__init__(name="watchdog-lease", daemon=True)
        self.store = store
        self.fence = fence
        self.lease = lease_seconds
        self.on_change = on_change
        self.stop = threading.Event()
        self.view: LeaseView | None = None
        self.error: str | None = None
        self.takeovers: deque[float] = deque(maxlen=FLAP_TAKEOVERS)  # monotonic moments the epoch moved
        self.last_epoch = 0
        self.no_leader_since: float | None = None

    def attempt(self) -> Change:
        """Renew (as holder) or take over (once expired) the lease, once; raises StoreError when unreachable."""
        sent = self.fence.monotonic()
        view = self.store.claim_lease(self.fence.instance, self.fence.epoch, self.lease)
        self.view = view
        was = self.fence.leading()
        if view.holder == self.fence.instance:
            self.fence.epoch = view.epoch
            self.fence.until = sent + self.lease * (1 - SAFETY_FRACTION)
        else:
            self.fence.epoch = 0
        if self.last_epoch and view.epoch != self.last_epoch:
            self.takeovers.append(sent)
        self.last_epoch = view.epoch
        now = self.fence.leading()
        return Change(leading=now, became_leader=now and not was, lost=was and not now, leader=view.holder,
                      epoch=view.epoch)

    def flapping(self) -> bool:
        """Whether the leader changed FLAP_TAKEOVERS times within FLAP_WINDOW_LEASES leases."""
        return (len(self.takeovers) == FLAP_TAKEOVERS
                and self.fence.monotonic() - self.takeovers[0] < FLAP_WINDOW_LEASES * self.lease)

    def without_leader(self) -> float:
        """Seconds this instance has seen no leader it could reach (0: it sees one, or leads)."""
        return 0.0 if self.no_leader_since is None else self.fence.monotonic() - self.no_leader_since

    def run(self) -> None:
        while not self.stop.is_set():
            was = self.fence.leading()
            try:
                change = self.attempt()
                if self.error is not None:
                    log(logger, logging.INFO, "lease reachable again", instance=self.fence.instance)
                self.error = None
                self.no_leader_since = None
            except StoreError as exc:
                if self.error is None:
                    log(logger, logging.ERROR, "cannot renew or take the lease", instance=self.fence.instance,
                        error=str(exc))
                self.error = str(exc)
                if self.no_leader_since is None:
                    self.no_leader_since = self.fence.monotonic()
                change = Change(leading=self.fence.leading(), became_leader=False, lost=was and not self.fence.leading(),
                                leader=None, epoch=self.fence.epoch)
            if change.became_leader or change.lost:
                log(logger, logging.WARNING if change.lost else logging.INFO,
                    "became leader" if change.became_leader else "no longer leader", instance=self.fence.instance,
                    epoch=change.epoch, leader=change.leader)
            self.on_change(change)
            # Renew every third of the lease; while leading without an answer, look again sooner.
            wait = self.lease / 3
            if self.fence.leading() and self.error is not None:
                wait = min(wait, max(0.2, self.fence.until - self.fence.monotonic()) / 2)
            self.stop.wait(wait)
        self.release()

    def release(self) -> None:
        """On a clean stop, hand the lease over at once (a standby takes it at its next attempt)."""
        if self.fence.epoch <= 0:
            return
        try:
            self.store.release_lease(self.fence.instance, self.fence.epoch)
        except StoreError as exc:
            log(logger, logging.WARNING, "lease not released; it expires on its own", error=str(exc))
        self.fence.epoch = 0


__all__ = ["Change", "Deposed", "Fence", "LeaseKeeper"]
