"""Storage faults: opening the state database safely, and noticing lost history.

A state file SQLite cannot read (garbage in its pages, not a database at all)
is moved aside with a clear message and replaced by an empty one, never a
traceback. A state file that is empty, or older than what the previous run
recorded (its WAL lost), while the previous run left alerts firing, is "lost
history": a small marker file beside it (``STATE.firing``, written by the
daemon as it runs) tells the two apart from a first start, so watchdog says
why every firing alert is about to be posted again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from watchdog.logfmt import log
from watchdog.state import STATE_FILE_MODE, StateStore
from watchdog.state_db import PostgresDatabase, StoreError

if TYPE_CHECKING:
    from watchdog.config import StateConfig
    from watchdog.lease import Fence
from watchdog.times import from_text, to_text

logger = logging.getLogger("watchdog.storage")

# SQLite primary result codes (the low byte of the extended code).
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
MARKER_SUFFIX = ".firing"


def is_corrupt(exc: BaseException) -> bool:
    """Whether a SQLite error says the file itself is damaged (as opposed to the disk being full or failing)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def storage_fault(exc: BaseException) -> bool:
    """Whether an error comes from the storage itself (full, failing), which may go away without a person."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT)


def describe(exc: BaseException) -> str:
    """A storage error in plain words, with SQLite's own name for it."""
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    return f"{exc} ({name})"


@dataclass
class Opened:
    """The state store, and what watchdog must tell about how it was found (one sentence each)."""

    store: StateStore
    notes: list[str] = field(default_factory=list)


def move_aside(path: str, now: datetime) -> str:
    """Rename the database (and its -wal and -shm files) to ``PATH.corrupt-STAMP``; returns the new name."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    aside = f"{path}.corrupt-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    return aside


def open_state(path: str, now: datetime) -> Opened:
    """Open the state database at ``path``, checking it (``pragma quick_check``) and the lost-history marker.

    An unreadable database is moved aside and an empty one created; the notes
    say so. Raises StoreError / OSError only for faults of the storage
    itself (full disk, I/O error, no permission), which moving a file cannot fix.
    """
    notes: list[str] = []
    checked: StateStore | None = None
    try:
        checked = StateStore(path)
        problem = checked.quick_check()
    except StoreError as exc:
        if not is_corrupt(exc):
            raise
        problem = describe(exc)
    if problem is None and checked is not None:
        store = checked
    else:
        if checked is not None:
            checked.close()
        aside = move_aside(path, now)
        note = (f"the state database {path} could not be read ({problem}); it was moved aside to {aside} and an "
                "empty one started: alerts that are still firing will be posted again as new")
        log(logger, logging.ERROR, "state database unreadable; moved aside", path=path, aside=aside, problem=problem)
        notes.append(note)
        store = StateStore(path)
    lost = lost_history(path, store)
    if lost is not None and not notes:
        log(logger, logging.ERROR, "state database looks like lost history", path=path, detail=lost)
        notes.append(lost)
    return Opened(store, notes)


def open_store(state: StateConfig, fence: Fence | None = None, *, timeout: float = 10.0) -> StateStore:
    """A store (one connection) on the configured state: SQLite at ``state.path`` or PostgreSQL's ``state.schema``.

    ``fence`` guards the leader's writes (see ``StateStore``); ``timeout``
    bounds a PostgreSQL statement, so a database that stops answering fails
    fast. Raises StoreError / OSError when the state cannot be opened.
    """
    if state.type == "postgres":
        return StateStore(db=PostgresDatabase(state.dsn, state.schema, timeout=timeout), fence=fence)
    return StateStore(state.path, fence=fence)


def open_configured(state: StateConfig, now: datetime, fence: Fence | None = None, *, timeout: float = 10.0) -> Opened:
    """``open_state`` for a SQLite state (checked, the lost-history marker read); a PostgreSQL state as it is
    (the server checks its own pages)."""
    if state.type == "sqlite":
        opened = open_state(state.path, now)
        opened.store.fence = fence
        return opened
    return Opened(open_store(state, fence, timeout=timeout))


def marker_path(path: str) -> str:
    return path + MARKER_SUFFIX


def write_marker(path: str, store: StateStore, now: datetime) -> None:
    """Record beside the database how many alerts are firing and the newest run it holds (atomically)."""
    firing = store.firing_count()
    newest = store.newest_run()
    body = json.dumps({"firing": firing, "newest_run": to_text(newest), "written": to_text(now)})
    target = marker_path(path)
    temporary = target + ".tmp"
    # Beside the state, readable by its owner only, like the state itself (a leftover .tmp of another mode too).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, STATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, STATE_FILE_MODE)
        fh.write(body)
    os.replace(temporary, target)


def read_marker(path: str) -> dict[str, Any] | None:
    try:
        with open(marker_path(path), encoding="utf-8") as fh:
            data = json.loads(fh.read(4096))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lost_history(path: str, store: StateStore) -> str | None:
    """A sentence when the database holds less than the previous run recorded while alerts were firing, else None."""
    marker = read_marker(path)
    if not marker or not isinstance(marker.get("firing"), int) or marker["firing"] <= 0:
        return None
    recorded = from_text(str(marker.get("newest_run") or ""))
    newest = store.newest_run()
    if recorded is None or (newest is not None and newest >= recorded):
        return None
    held = "is empty" if newest is None else f"ends at {to_text(newest)}"
    return (f"the state database {path} {held}, but the previous run had recorded runs up to {to_text(recorded)} with "
            f"{marker['firing']} alert(s) firing: its history was lost (file truncated or replaced, or its WAL "
            "lost); alerts that are still firing will be posted again as new")
