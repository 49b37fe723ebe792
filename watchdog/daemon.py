"""``watchdog run``: the loop around the engine, the delivery thread, signals, reload.

The loop sleeps until the next rule is due (no polling while idle), wakes on
finished evaluations, and reloads rules on SIGHUP or when rule files change.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta
from types import FrameType

from watchdog import logfmt
from watchdog.config import Config
from watchdog.engine import Engine
from watchdog.loader import LoadResult, load_rules, rule_files
from watchdog.logfmt import log
from watchdog.notify import build_notifier
from watchdog.notify.outbox import Outbox
from watchdog.rule import Rule
from watchdog.sources import Sources
from watchdog.state import StateStore
from watchdog.times import utcnow

logger = logging.getLogger("watchdog.daemon")

RELOAD_CHECK_SECONDS = 10.0
STOP_GRACE_SECONDS = 20.0
FLUSH_SECONDS = 30.0
PRUNE_EVERY = timedelta(hours=1)


def _log_problems(result: LoadResult) -> None:
    for problem in result.problems:
        log(logger, logging.ERROR, "invalid rule file", file=problem.file, line=problem.line, path=problem.path or None,
            problem=problem.message)


class RuleFiles:
    """Loads rules, keeping the previous version of any file that became invalid."""

    def __init__(self, config: Config):
        self.config = config
        self.stamp: tuple[tuple[str, float], ...] = ()
        self.rules: list[Rule] = []

    def _fingerprint(self) -> tuple[tuple[str, float], ...]:
        files = rule_files([self.config.rules_dir])
        out = []
        for path in files:
            try:
                out.append((path, os.stat(path).st_mtime))
            except OSError:
                continue
        return tuple(out)

    def changed(self) -> bool:
        return self._fingerprint() != self.stamp

    def load(self) -> list[Rule]:
        self.stamp = self._fingerprint()
        result = load_rules([self.config.rules_dir], self.config)
        _log_problems(result)
        failed = {os.path.abspath(p) for p in result.failed}
        kept = [r for r in self.rules if r.path in failed and all(n.name != r.name for n in result.rules)]
        for rule in kept:
            log(logger, logging.WARNING, "keeping previous version of invalid rule", rule=rule.name, file=rule.path)
        self.rules = result.rules + kept
        return self.rules


class Delivery(threading.Thread):
    """Sends from the outbox in its own thread (and its own database connection)."""

    def __init__(self, config: Config, stop: threading.Event):
        super().__init__(name="delivery", daemon=True)
        self.config = config
        self.stop = stop
        self.wake = threading.Event()

    def run(self) -> None:
        store = StateStore(self.config.state_path)
        outbox = Outbox(store, build_notifier(self.config))
        try:
            while not self.stop.is_set():
                self.wake.clear()
                outbox.deliver_due(self.stop)
                due = store.next_attempt_at()
                wait = 3600.0 if due is None else max(0.05, (due - utcnow()).total_seconds())
                self.wake.wait(wait)
            outbox.flush(time.monotonic() + FLUSH_SECONDS)
        finally:
            store.close()


def run(config: Config, *, once: bool = False) -> int:
    """Run the daemon (or one round with ``once``); returns the exit code."""
    logfmt.setup(config.log_level)
    if not os.path.isdir(config.rules_dir):
        log(logger, logging.ERROR, "rules directory not found", rules_dir=config.rules_dir)
        return 2
    try:
        store = StateStore(config.state_path)
    except Exception as exc:
        log(logger, logging.ERROR, "cannot open the state database", path=config.state_path, error=str(exc))
        return 2
    files = RuleFiles(config)
    rules = files.load()
    sources = Sources(config.sources)
    stop = threading.Event()
    delivery = Delivery(config, threading.Event())  # halted after the last evaluations are recorded
    engine = Engine(rules, store, sources, workers=config.workers, timeout=config.rule_timeout,
                    on_notify=delivery.wake.set)
    log(logger, logging.INFO, "started", rules=len(engine.rules), state=config.state_path, once=once or None)
    try:
        if once:
            engine.run_all_once(config.rule_timeout.total_seconds() + 5)
            outbox = Outbox(store, build_notifier(config))
            if not outbox.flush(time.monotonic() + FLUSH_SECONDS):
                log(logger, logging.WARNING, "notifications left in the outbox", pending=store.outbox_depth())
            return 0
        return _loop(config, engine, files, store, delivery, stop)
    finally:
        sources.close()
        store.close()


def _loop(config: Config, engine: Engine, files: RuleFiles, store: StateStore,
          delivery: Delivery, stop: threading.Event) -> int:
    reload_requested = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        engine.wake.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()
        engine.wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    delivery.start()
    last_check = time.monotonic()
    last_prune = utcnow() - PRUNE_EVERY
    while not stop.is_set():
        engine.run_pending()
        if reload_requested.is_set() or time.monotonic() - last_check >= RELOAD_CHECK_SECONDS:
            last_check = time.monotonic()
            if reload_requested.is_set() or files.changed():
                reload_requested.clear()
                removed = engine.set_rules(files.load())
                log(logger, logging.INFO, "rules reloaded", rules=len(engine.rules), removed=len(removed))
                delivery.wake.set()
        if utcnow() - last_prune >= PRUNE_EVERY:
            last_prune = utcnow()
            store.prune(last_prune)
        wait = min(engine.seconds_until_next(), RELOAD_CHECK_SECONDS)
        engine.wake.wait(wait)
        engine.wake.clear()
    log(logger, logging.INFO, "stopping", running=len(engine.runner.active))
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while not engine.runner.idle() and time.monotonic() < deadline:
        engine.wake.wait(0.2)
        engine.wake.clear()
        engine.collect()
    engine.collect()
    delivery.stop.set()
    delivery.wake.set()
    delivery.join(FLUSH_SECONDS + 5)
    log(logger, logging.INFO, "stopped", pending=store.outbox_depth())
    return 0
