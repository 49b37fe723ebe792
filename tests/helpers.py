"""Helpers for tests that go through real config and rule files."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

from watchdog.config import Config, load_config
from watchdog.engine import Engine
from watchdog.loader import load_rules
from watchdog.sources import Sources
from watchdog.state import StateStore


def write_project(tmp_path: Path, config: str, rules: dict[str, str]) -> Config:
    """Write watchdog.yaml and rules/*.yaml under ``tmp_path`` and load the config."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "watchdog.yaml").write_text(textwrap.dedent(config))
    for name, text in rules.items():
        (tmp_path / "rules" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return load_config(str(tmp_path / "watchdog.yaml"))


def engine_for(config: Config, clock: Any, store: StateStore | None = None, **kw: Any) -> Engine:
    result = load_rules([config.rules_dir], config)
    assert not result.problems, result.problems
    return Engine(result.rules, store or StateStore(config.state_path), Sources(config.sources), clock=clock, **kw)


def evaluate_now(engine: Engine, timeout: float = 30.0) -> list[Any]:
    """Evaluate every rule at the engine clock's time and apply the results."""
    engine.dispatch(list(engine.rules.values()), engine.clock())
    return wait_idle(engine, timeout)


def wait_idle(engine: Engine, timeout: float = 30.0) -> list[Any]:
    """Apply the results of everything dispatched, waiting for it at most ``timeout`` seconds."""
    applied: list[Any] = []
    deadline = time.monotonic() + timeout
    while not engine.runner.idle() and time.monotonic() < deadline:
        engine.wake.wait(0.05)
        engine.wake.clear()
        applied += engine.collect()
    return applied


class Clock:
    def __init__(self, now: Any):
        self.now = now

    def __call__(self) -> Any:
        return self.now
