"""The state store's part for several instances on one state: the leader lease and the instances seen (see ``lease``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from watchdog.state_base import StoreBase
from watchdog.state_db import Database, Row


@dataclass(frozen=True)
class LeaseView:
    """The lease as one attempt left it: who holds it, at which epoch, and for how long yet (database clock)."""

    holder: str
    epoch: int
    remaining: float  # seconds; negative: expired


@dataclass(frozen=True)
class Instance:
    """An instance that shares this state, as it last reported itself."""

    instance: str
    leading: bool
    started: datetime
    last_seen: datetime
    seen_ago: float  # seconds before the database's clock now


class LeaseRecords(StoreBase):
    """The ``ha_lease`` and ``ha_instances`` tables."""

    def claim_lease(self, instance: str, epoch: int, lease_seconds: float) -> LeaseView:
        """Renew the lease (``instance`` holds it at ``epoch``), or take it over when it has expired (or was held by
        an earlier process of the same name, when ``epoch`` is 0), incrementing the epoch; note the instance seen.
        Returns the lease as it stands afterwards."""
        clock = self.db.clock_sql
        lease = f"holder, epoch, expires_at - {clock}"
        with self.lock:  # one connection: no other thread's statement runs between these
            # A renewal (the holder, every third of the lease) is two statements, each its own transaction: the
            # update is conditional on holder and epoch, so it extends only a lease still held at this epoch.
            rows = self.db.execute(
                f"update ha_lease set expires_at = {clock} + ? where name = 'leader' and holder = ? and epoch = ? "
                f"returning {lease}", (lease_seconds, instance, epoch)).fetchall() if epoch > 0 else []
            if rows:
                view = _lease(rows[0])
                self._seen(self.db, instance, leading=True)
                return view
            with self.transaction() as db:
                rows = db.execute(
                    f"""update ha_lease set holder = ?, epoch = epoch + 1, expires_at = {clock} + ?
                        where name = 'leader' and (expires_at < {clock} or (holder = ? and ? = 0)) returning {lease}""",
                    (instance, lease_seconds, instance, epoch)).fetchall()
                if not rows:
                    db.execute(f"insert into ha_lease (name, holder, epoch, expires_at) values ('leader', ?, 1, {clock} + ?) "
                               "on conflict do nothing", (instance, lease_seconds))
                    rows = db.execute(f"select {lease} from ha_lease where name = 'leader'").fetchall()
                view = _lease(rows[0])
                self._seen(db, instance, leading=view.holder == instance)
                return view

    def _seen(self, db: Database, instance: str, *, leading: bool) -> None:
        """Note ``instance`` seen now (and whether it leads), for ``instances``."""
        clock = self.db.clock_sql
        db.execute(f"""insert into ha_instances (instance, started, last_seen, is_leader) values (?, {clock}, {clock}, ?)
                       on conflict (instance) do update set last_seen = excluded.last_seen, is_leader = excluded.is_leader""",
                   (instance, int(leading)))

    def release_lease(self, instance: str, epoch: int) -> None:
        """End ``instance``'s lease now (a clean stop): the next attempt of another instance takes it over."""
        with self.transaction() as db:
            db.execute(f"update ha_lease set expires_at = {self.db.clock_sql} - 1 where name = 'leader' and holder = ? "
                       "and epoch = ?", (instance, epoch))
            db.execute("update ha_instances set is_leader = 0 where instance = ?", (instance,))

    def lease(self) -> LeaseView | None:
        """The lease as it stands (None: no instance ever took it)."""
        rows = self._query(f"select holder, epoch, expires_at - {self.db.clock_sql} from ha_lease where name = 'leader'")
        return _lease(rows[0]) if rows else None

    def instances(self) -> list[Instance]:
        """The instances that reported themselves, most recently seen first."""
        clock = self.db.clock_sql
        rows = self._query(f"select instance, is_leader, started, last_seen, {clock} - last_seen from ha_instances "
                           "order by last_seen desc")
        return [Instance(instance=str(r[0]), leading=bool(r[1]), started=_moment(r[2]), last_seen=_moment(r[3]),
                         seen_ago=float(r[4])) for r in rows]


def _lease(row: Row) -> LeaseView:
    """The lease of a (holder, epoch, seconds remaining) row."""
    return LeaseView(holder=str(row[0]), epoch=int(row[1]), remaining=float(row[2]))


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC)
