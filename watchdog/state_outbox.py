"""The state store's part for delivery: the notification outbox, Slack threads and each receiver's last outcome.

``notify.outbox`` sends from it; the engine, Slack actions and remediation
steps write their notifications in their own transactions (``state``,
``state_actions``), so a notification is recorded with what caused it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watchdog.state_base import StoreBase, json_text
from watchdog.times import from_text, to_text, utcnow


@dataclass(frozen=True)
class OutboxItem:
    id: int
    created: datetime
    rule: str
    group: str
    kind: str
    episode: str
    payload: Mapping[str, Any]
    attempts: int
    message: str | None = None  # the message of its first attempt: a retry sends that message again, as it was
    receiver: str = ""  # '' is the main notifier (Slack, else the console)
    first_attempt: datetime | None = None  # (wall clock) when it was first attempted; None: never


class OutboxRecords(StoreBase):
    """The ``outbox``, ``threads`` and ``notifier_status`` tables."""

    def unsent(self, episode: str, receiver: str = "") -> int:
        """How many notifications of ``episode`` are still waiting to be sent to ``receiver``."""
        return self._waiting(receiver=receiver, episode=episode)

    def pending(self, now: datetime, limit: int = 100, receiver: str = "") -> list[OutboxItem]:
        """Unsent notifications for ``receiver`` due for an attempt, oldest first."""
        rows = self._query(
            # Moments are compared as moments: as text, "02:15:00Z" sorts after "02:15:00.500Z" (see times.to_text).
            """select * from outbox where sent_at is null and failed = 0 and receiver = ?
               and julianday(next_attempt) <= julianday(?) order by id limit ?""",
            (receiver, to_text(now), limit))
        return [OutboxItem(id=r["id"], created=from_text(r["created"]), rule=r["rule"], group=r["grp"], kind=r["kind"],  # type: ignore[arg-type]
                           episode=r["episode"], payload=json.loads(r["payload"]), attempts=r["attempts"],
                           message=r["message"], receiver=r["receiver"], first_attempt=from_text(r["first_attempt"]))
                for r in rows]

    def earlier_unsent(self, item: OutboxItem) -> int:
        """How many older notifications of the same episode for the same receiver are still waiting (order)."""
        return self._waiting(receiver=item.receiver, episode=item.episode, before=item.id)

    def next_attempt_at(self, after: datetime | None = None, receiver: str | None = None) -> datetime | None:
        """The earliest moment an unsent notification is due (only those due after ``after``, and only
        ``receiver``'s, if given)."""
        where, args = "sent_at is null and failed = 0", []
        if after is not None:
            where, args = where + " and julianday(next_attempt) > julianday(?)", [to_text(after)]
        if receiver is not None:
            where, args = where + " and receiver = ?", args + [receiver]
        rows = self._query(f"select next_attempt from outbox where {where} order by julianday(next_attempt) limit 1", args)
        return from_text(rows[0][0]) if rows else None

    def outbox_depth(self, receiver: str | None = None) -> int:
        """Notifications waiting to be sent (to ``receiver`` only, if given)."""
        return self._waiting(receiver=receiver)

    def _waiting(self, *, receiver: str | None = None, episode: str | None = None, before: int | None = None) -> int:
        """How many notifications wait to be sent: to ``receiver``, of ``episode``, older than id ``before``
        (each only when given)."""
        where = "sent_at is null and failed = 0"
        args: list[str | int] = []
        for clause, value in (("receiver = ?", receiver), ("episode = ?", episode), ("id < ?", before)):
            if value is not None:
                where, args = f"{where} and {clause}", [*args, value]
        return int(self._query(f"select count(*) from outbox where {where}", args)[0][0])

    def given(self, episode: str) -> dict[str, datetime]:
        """Each receiver given a notification of ``episode`` (recorded, sent or not), and when it last was."""
        rows = self._query("select receiver, max(created) from outbox where episode = ? group by receiver", (episode,))
        return {str(row[0]): when for row in rows if (when := from_text(row[1])) is not None}

    def receivers_of(self, episode: str) -> set[str]:
        """The receivers given any notification of ``episode``."""
        return set(self.given(episode))

    def mark_attempt(self, items: Sequence[OutboxItem], message: str, at: datetime | None = None) -> None:
        """Count an attempt before it is made, and fix the entries' message and first attempt's moment ``at``
        (default: the wall clock now) at their first attempt.

        After a crash or a lost answer, ``attempts > 0`` tells the outbox that
        the receiver may already hold the message (so it asks before sending
        again, among what the receiver got since ``first_attempt``), and
        ``message`` keeps the retry to the same entries.
        """
        moment = to_text(at if at is not None else utcnow())
        with self.leader_transaction() as db:
            for item in items:
                db.execute("""update outbox set attempts = attempts + 1, message = coalesce(message, ?),
                              first_attempt = coalesce(first_attempt, ?) where id = ?""",
                           (message, moment, item.id))

    def mark_sent(self, item: OutboxItem, now: datetime, notifier: str, ref: Mapping[str, Any] | None,
                  follow_ups: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> None:
        """Record ``item`` as delivered, its thread's ref, and any follow-up (kind, payload) as new outbox entries,
        in one transaction."""
        with self.leader_transaction() as db:
            db.execute("update outbox set sent_at = ?, last_error = null where id = ?", (to_text(now), item.id))
            if ref is not None:
                db.execute("insert into threads (episode, notifier, ref, created) values (?, ?, ?, ?) on conflict do nothing",
                           (item.episode, notifier, json_text(ref), to_text(now)))
            for kind, payload in follow_ups:
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                              values (?, ?, ?, ?, ?, ?, ?, ?)""",
                           (to_text(now), item.rule, item.group, kind, item.episode, json_text(payload), to_text(now),
                            item.receiver))

    def mark_retry(self, item: OutboxItem, error: str, next_attempt: datetime) -> None:
        with self.leader_transaction() as db:
            db.execute("update outbox set last_error = ?, next_attempt = ? where id = ?",
                       (error, to_text(next_attempt), item.id))

    def shift_retries(self, step: timedelta, now: datetime) -> None:
        """Move unsent notifications' next attempts by a wall-clock ``step`` (never before ``now``)."""
        with self.leader_transaction() as db:
            for row in db.execute("select id, next_attempt from outbox where sent_at is null and failed = 0").fetchall():
                planned = from_text(row["next_attempt"])
                if planned is not None:
                    db.execute("update outbox set next_attempt = ? where id = ?",
                               (to_text(max(now, planned + step)), row["id"]))

    def mark_failed(self, item: OutboxItem, error: str) -> None:
        with self.leader_transaction() as db:
            db.execute("update outbox set last_error = ?, failed = 1 where id = ?", (error, item.id))

    def acknowledge_failed(self) -> int:
        """Hide the failed notifications listed so far from status (they stay until pruned); returns how many."""
        with self.transaction() as db:
            return db.execute("update outbox set failed = 2 where failed = 1").rowcount

    def failed_notifications(self, receiver: str | None = None) -> list[dict[str, Any]]:
        """Notifications that failed for good and were not acknowledged (kept until pruned), newest first: the 100
        newest, of ``receiver`` alone when given."""
        only = "and receiver = ? " if receiver is not None else ""
        rows = self._query(f"""select id, created, rule, grp, kind, attempts, last_error, receiver from outbox
                               where failed = 1 {only}order by id desc limit 100""",
                           (receiver,) if receiver is not None else ())
        return [dict(r) for r in rows]

    def thread_ref(self, episode: str, notifier: str) -> dict[str, Any] | None:
        rows = self._query("select ref from threads where episode = ? and notifier = ?", (episode, notifier))
        return json.loads(rows[0][0]) if rows else None

    def thread_refs_of(self, rule: str, group: str, notifier: str) -> list[dict[str, Any]]:
        """The threads ``notifier`` holds for any episode of ``rule``'s ``group`` still in the outbox (newest first)."""
        rows = self._query("select t.ref from threads t where t.notifier = ? and t.episode in "
                           "(select o.episode from outbox o where o.rule = ? and o.grp = ?) order by t.created desc",
                           (notifier, rule, group))
        return [json.loads(row[0]) for row in rows]

    def set_notifier_status(self, name: str, error: str | None, now: datetime, *, refused: bool = False) -> None:
        """Record a receiver's last outcome: ok (``error`` None), failing, or refusing watchdog's credentials."""
        with self.transaction() as db:
            db.execute("""insert into notifier_status (name, ok, error, at, refused) values (?, ?, ?, ?, ?)
                          on conflict (name) do update set ok = excluded.ok, error = excluded.error, at = excluded.at,
                              refused = excluded.refused""",
                       (name, int(error is None), error, to_text(now), int(refused)))

    def notifier_status(self) -> dict[str, dict[str, Any]]:
        """Each receiver's last outcome: ok, error, at, refused (its credentials refused)."""
        return {r["name"]: {"ok": bool(r["ok"]), "error": r["error"], "at": r["at"], "refused": bool(r["refused"])}
                for r in self._query("select * from notifier_status")}
