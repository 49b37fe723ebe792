"""What every part of the state store stands on: its database, its lock and fence, reads and transactions.

``state.StateStore`` is one class made of parts, one concept each: the lease
(``state_lease``), the outbox (``state_outbox``), silences, Slack actions,
approvals and the remediation journal (``state_actions``), and, in ``state``
itself, rules, groups, evaluations, baselines, audit and retention. Each part
is a ``StoreBase``, so each reads and writes the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from watchdog.state_db import Database, Row

if TYPE_CHECKING:
    from watchdog.lease import Fence

# Names bound per ``in (...)`` list: well under SQLite's and PostgreSQL's limits on parameters.
_IN_CHUNK = 500


def json_text(value: Any) -> str:
    """``value`` as the store keeps JSON (keys sorted; what JSON cannot hold, as text)."""
    return json.dumps(value, default=str, sort_keys=True)


class StoreBase:
    """The state store's database (``db``), the lock its threads share, and the leader's ``fence`` (see
    ``state.StateStore``, which sets them)."""

    db: Database
    lock: threading.RLock
    fence: Fence | None
    path: str

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Rows of one read; serialized with writes, since worker threads share this connection."""
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def _rows(self, table: str, rule: str | Collection[str] | None) -> list[Row]:
        """The rows of ``table`` (``rules`` or ``groups``) of one rule, of the named rules, or of all (None).

        A dispatch reads only its batch's rules, so its cost does not grow with the rule set.
        """
        if rule is None:
            return self._query(f"select * from {table}")
        names = [rule] if isinstance(rule, str) else sorted(set(rule))
        rows: list[Row] = []
        for start in range(0, len(names), _IN_CHUNK):
            chunk = names[start:start + _IN_CHUNK]
            rows.extend(self._query(f"select * from {table} where rule in ({', '.join('?' * len(chunk))})", chunk))
        return rows

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A transaction (SQLite: ``begin immediate``); for writes anyone may make (silences, Slack actions)."""
        with self.db.transaction() as db:
            yield db

    @contextmanager
    def leader_transaction(self) -> Iterator[Database]:
        """A transaction that first checks the fence (see the class); raises Deposed when it no longer holds."""
        with self.db.transaction() as db:
            if self.fence is not None:
                self.fence.check(db)
            yield db
