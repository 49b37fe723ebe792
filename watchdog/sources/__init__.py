"""Data sources, created on first use from the config's ``sources`` block.

Only the client libraries of configured source types are imported (boto3
alone costs about 20 MiB of memory).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from watchdog.config import PostgresSource, SearchSource, SourceConfig


class Sources:
    """Named source instances, created lazily and shared by every rule."""

    def __init__(self, configs: Mapping[str, SourceConfig]):
        self.configs = dict(configs)
        self.instances: dict[str, Any] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self.lock:
            if name not in self.instances:
                self.instances[name] = _create(self.configs[name])
            return self.instances[name]

    def close(self) -> None:
        with self.lock:
            for source in self.instances.values():
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            self.instances.clear()


def _create(config: SourceConfig) -> Any:
    if isinstance(config, PostgresSource):
        from watchdog.sources.postgres import PostgresSource as Postgres

        return Postgres(config)
    if isinstance(config, SearchSource):
        from watchdog.sources.search import SearchSource as Search

        return Search(config)
    from watchdog.sources.dms import DmsSource as Dms

    return Dms(config)
