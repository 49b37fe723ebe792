"""``watchdog state migrate --from PATH``: copy a SQLite state into the configured (PostgreSQL) state."""

from __future__ import annotations

import os
import sys

from watchdog.config import Config
from watchdog.state import StateStore
from watchdog.state_db import StoreError
from watchdog.storage import open_store


def migrate(config: Config, source_path: str) -> int:
    """Copy the SQLite state at ``source_path`` into the config's state, which must be empty; returns the exit code
    (0 copied, 1 refused: the target holds state or is the source, 2 cannot read or write)."""
    if config.state.type == "sqlite" and os.path.abspath(source_path) == os.path.abspath(config.state_path):
        print("watchdog state migrate: the source is the configured state itself", file=sys.stderr)
        return 1
    if not os.path.isfile(source_path):
        print(f"watchdog state migrate: no SQLite state at {source_path}", file=sys.stderr)
        return 2
    try:
        source = StateStore(source_path)  # brought to the newest schema first, as the daemon would
    except (StoreError, OSError, RuntimeError) as exc:
        print(f"watchdog state migrate: cannot read {source_path}: {exc}", file=sys.stderr)
        return 2
    try:
        target = open_store(config.state)
    except (StoreError, OSError) as exc:
        source.close()
        print(f"watchdog state migrate: cannot open {config.state.where}: {exc}", file=sys.stderr)
        return 2
    try:
        copied = target.copy_from(source)
    except ValueError as exc:
        print(f"watchdog state migrate: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"watchdog state migrate: nothing copied: {exc}", file=sys.stderr)
        return 2
    finally:
        source.close()
        target.close()
    print(f"copied {source_path} into {config.state.where}:")
    for table, count in copied.items():
        print(f"  {table}: {count} row(s)")
    return 0
