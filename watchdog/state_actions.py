"""The state store's part for what people and remediations decide: silences, acknowledgements, Slack actions,
approvals and the remediation journal, each written with its audit row and notification in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from watchdog.rule import Severity
from watchdog.state_base import StoreBase, json_text
from watchdog.state_db import Database, Row
from watchdog.times import from_text, to_text


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str
    group: str | None
    until: datetime
    reason: str
    created: datetime

    episode: str | None = None  # "until resolved": covers only this firing episode
    created_by: str = ""  # a Slack user id when silenced from Slack

    def covers(self, rule: str, group: str, now: datetime, episode: str | None = None) -> bool:
        if self.episode is not None and episode != self.episode:
            return False
        return self.rule == rule and self.group in (None, group) and self.until > now


@dataclass(frozen=True)
class Ack:
    """An acknowledged firing episode: no repeats until it resolves or its severity rises above ``severity``."""

    episode: str
    rule: str
    group: str
    by: str  # Slack user id
    at: datetime
    severity: Severity


class ActionRecords(StoreBase):
    """The ``silences``, ``acks``, ``slack_actions``, ``approvals`` and ``remediations`` tables."""

    # --- silences ----------------------------------------------------------------

    def add_silence(self, rule: str, group: str | None, until: datetime, reason: str, now: datetime) -> int:
        with self.transaction() as db:
            return _insert_silence(db, rule, group, until, reason, now)

    def remove_silence(self, silence_id: int) -> bool:
        with self.transaction() as db:
            return db.execute("delete from silences where id = ?", (silence_id,)).rowcount > 0

    def silences(self, now: datetime) -> list[Silence]:
        rows = self._query("select * from silences where julianday(until) > julianday(?) order by id", (to_text(now),))
        return [_silence(r) for r in rows]

    def silence(self, silence_id: int) -> Silence | None:
        rows = self._query("select * from silences where id = ?", (silence_id,))
        return _silence(rows[0]) if rows else None

    # --- Slack actions -------------------------------------------------------------

    def acks(self, rule: str) -> dict[str, Ack]:
        """The acknowledgements of ``rule``'s episodes, by group."""
        rows = self._query("select * from acks where rule = ?", (rule,))
        return {r["grp"]: Ack(episode=r["episode"], rule=r["rule"], group=r["grp"], by=r["by_user"],
                              at=from_text(r["at"]), severity=Severity(r["severity"])) for r in rows}  # type: ignore[arg-type]

    def action_outcome(self, key: str) -> str | None:
        """What an already handled click did (None: not handled yet)."""
        rows = self._query("select outcome from slack_actions where key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def act(self, key: str, now: datetime, *, rule: str, group: str, action: str, detail: Mapping[str, Any],
            effect: Callable[[Database], str], episode: str = "",
            notification: tuple[str, Mapping[str, Any]] | None = None,
            forward: Sequence[tuple[str, str, Mapping[str, Any]]] = ()) -> str | None:
        """Apply one Slack action exactly once: its effect, its audit row and its notification, atomically.

        ``effect`` runs inside the transaction and returns the outcome text;
        ``notification`` is (kind, payload) for the outbox; ``forward`` are
        (receiver, kind, payload) rows for other receivers (an acknowledgement
        passed on to PagerDuty). Returns the outcome, or None when ``key`` was
        handled before (a redelivery).
        """
        at = to_text(now)
        with self.transaction() as db:
            if db.execute("select 1 from slack_actions where key = ?", (key,)).fetchone():
                return None
            outcome = effect(db)
            db.execute("insert into slack_actions (key, at, outcome) values (?, ?, ?)", (key, at, outcome))
            db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                       (at, rule, group, action, json_text({**detail, "outcome": outcome})))
            if notification is not None:
                kind, payload = notification
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt)
                              values (?, ?, ?, ?, ?, ?, ?)""", (at, rule, group, kind, episode, json_text(payload), at))
            for receiver, kind, payload in forward:
                db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                              values (?, ?, ?, ?, ?, ?, ?, ?)""",
                           (at, rule, group, kind, episode, json_text(payload), at, receiver))
            return outcome

    # --- approvals (dms_remediate approve: true) ------------------------------------------

    def approval(self, episode: str) -> dict[str, Any] | None:
        """The approval request of a remediation episode: decision (None while waiting), by, decided."""
        rows = self._query("select * from approvals where episode = ?", (episode,))
        if not rows:
            return None
        r = rows[0]
        return {"rule": r["rule"], "task": r["task"], "requested": from_text(r["requested"]), "decision": r["decision"],
                "by": r["by_user"], "decided": from_text(r["decided"])}

    def approval_payload(self, episode: str) -> dict[str, Any] | None:
        """The notification payload that asked for the approval (to redraw its message)."""
        rows = self._query("select payload from approvals where episode = ?", (episode,))
        return json.loads(rows[0][0]) if rows else None

    def decide_remediation(self, key: str, episode: str, *, approve: bool, user: str,
                           now: datetime) -> tuple[str | None, str | None] | None:
        """Record the first decision on a waiting remediation, with its audit row, atomically.

        Returns None for a click handled before (a redelivery); else
        (decision, None) when this click decided, (None, earlier decision)
        when someone decided first, or (None, None) when nothing waits.
        """
        at = to_text(now)
        decision = "approved" if approve else "declined"
        with self.transaction() as db:
            if db.execute("select 1 from slack_actions where key = ?", (key,)).fetchone():
                return None
            row = db.execute("select * from approvals where episode = ?", (episode,)).fetchone()
            if row is None:
                result: tuple[str | None, str | None] = (None, None)
            elif row["decision"] is not None:
                result = (None, f"{row['decision']} by <@{row['by_user']}> at {row['decided']}")
            else:
                db.execute("update approvals set decision = ?, by_user = ?, decided = ? where episode = ?",
                           (decision, user, at, episode))
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (at, row["rule"], row["task"], f"remediation {decision}", json_text({"user": user, "episode": episode})))
                result = (decision, None)
            db.execute("insert into slack_actions (key, at, outcome) values (?, ?, ?)",
                       (key, at, result[0] or "no effect"))
            return result

    # --- remediation journal -------------------------------------------------------------

    def remediations(self, rule: str) -> dict[str, dict[str, Any]]:
        rows = self._query("select task, record from remediations where rule = ?", (rule,))
        return {r["task"]: json.loads(r["record"]) for r in rows}

    def record_step(self, rule: str, task: str, record: Mapping[str, Any], now: datetime,
                    notification: tuple[str, str, Mapping[str, Any]] | None, audit: tuple[str, Mapping[str, Any]] | None,
                    *, approval: bool = False, receivers: Sequence[tuple[str, Mapping[str, Any]]] | None = None) -> None:
        """Save a remediation record with the notification and audit row of its step, atomically.

        ``notification`` is (kind, episode, payload); ``audit`` is (action, detail);
        ``approval`` opens an approval request for the record's episode;
        ``receivers`` are (receiver, payload) rows of the notification (default:
        the main notifier's only).
        """
        at = to_text(now)
        with self.leader_transaction() as db:
            db.execute("insert into remediations (rule, task, record, updated) values (?, ?, ?, ?) on conflict (rule, task) "
                       "do update set record = excluded.record, updated = excluded.updated",
                       (rule, task, json_text(record), at))
            if notification is not None:
                kind, episode, payload = notification
                for receiver, routed in receivers if receivers is not None else [("", payload)]:
                    db.execute("""insert into outbox (created, rule, grp, kind, episode, payload, next_attempt, receiver)
                                  values (?, ?, ?, ?, ?, ?, ?, ?)""",
                               (at, rule, task, kind, episode, json_text(routed), at, receiver))
            if audit is not None:
                db.execute("insert into audit (at, rule, grp, action, detail) values (?, ?, ?, ?, ?)",
                           (at, rule, task, audit[0], json_text(audit[1])))
            if approval and record.get("episode"):
                payload = notification[2] if notification is not None else {}
                db.execute("insert into approvals (episode, rule, task, requested, payload) values (?, ?, ?, ?, ?) "
                           "on conflict do nothing",
                           (record["episode"], rule, task, at, json_text(payload)))


def _silence(row: Row) -> Silence:
    return Silence(id=row["id"], rule=row["rule"], group=row["grp"], until=from_text(row["until"]),  # type: ignore[arg-type]
                   reason=row["reason"], created=from_text(row["created"]), episode=row["episode"],  # type: ignore[arg-type]
                   created_by=row["created_by"])


def _insert_silence(db: Database, rule: str, group: str | None, until: datetime, reason: str, now: datetime,
                    episode: str | None = None, created_by: str = "") -> int:
    cur = db.execute("insert into silences (rule, grp, until, reason, created, episode, created_by) "
                     "values (?, ?, ?, ?, ?, ?, ?) returning id",
                     (rule, group, to_text(until), reason, to_text(now), episode, created_by))
    return int(cur.fetchone()[0])


def insert_ack(db: Database, ack: Ack) -> None:
    """Record an acknowledgement inside a transaction of ``StateStore.act``."""
    db.execute("insert into acks (episode, rule, grp, by_user, at, severity) values (?, ?, ?, ?, ?, ?) "
               "on conflict (episode) do update set rule = excluded.rule, grp = excluded.grp, by_user = excluded.by_user, "
               "at = excluded.at, severity = excluded.severity",
               (ack.episode, ack.rule, ack.group, ack.by, to_text(ack.at), ack.severity.value))


def insert_silence(db: Database, rule: str, group: str | None, until: datetime, reason: str, now: datetime,
                   episode: str | None, created_by: str) -> int:
    """Create a silence inside a transaction of ``StateStore.act``; returns its id."""
    return _insert_silence(db, rule, group, until, reason, now, episode, created_by)


def delete_silence(db: Database, silence_id: int) -> bool:
    """Remove a silence inside a transaction of ``StateStore.act``."""
    return db.execute("delete from silences where id = ?", (silence_id,)).rowcount > 0
