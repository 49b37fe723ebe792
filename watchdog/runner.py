"""Evaluations on a bounded set of worker threads, each with a deadline.

A batch that overruns its deadline is reported as timed out and its slot is
freed, so a hung source never delays the other rules; its rules are not run
again until the stuck thread returns (its late result is discarded).

At stop, batches that write nothing from their thread (searches) are
abandoned at once; the others get a grace period to finish (see ``stop``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdog.ruletypes.base import RuleError

Outcome = Mapping[str, Any]  # rule name -> Evaluation or Exception


@dataclass
class Batch:
    rules: tuple[str, ...]
    work: Callable[[], Outcome]
    planned: Any = None  # passed back untouched (the engine's bookkeeping)
    # False: the work only reads (a search), so a stop may abandon it mid-flight; nothing of it reaches the state
    # unless its result is collected. True: a stop lets it finish (an acting rule writes its journal from its
    # thread).
    writes: bool = True
    started: float = 0.0
    deadline: float = 0.0
    thread: threading.Thread | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class Finished:
    batch: Batch
    outcome: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0


class RuleTimeout(RuleError):
    pass


class Runner:
    def __init__(self, workers: int, timeout: float, wake: threading.Event):
        self.workers = workers
        self.timeout = timeout
        self.wake = wake
        self.waiting: deque[Batch] = deque()
        self.active: list[Batch] = []
        self.abandoned: list[Batch] = []
        self.lock = threading.Lock()

    def busy(self) -> set[str]:
        """Rules queued, running, or stuck in an abandoned thread."""
        self.abandoned = [b for b in self.abandoned if b.thread is not None and b.thread.is_alive()]
        names: set[str] = set()
        for batch in (*self.waiting, *self.active, *self.abandoned):
            names.update(batch.rules)
        return names

    def submit(self, batch: Batch) -> None:
        self.waiting.append(batch)
        self._start_waiting()

    def _run(self, batch: Batch) -> None:
        try:
            batch.outcome = batch.work()
        except BaseException as exc:  # reported per rule by the engine
            batch.error = exc
        with self.lock:
            batch.done = True
        self.wake.set()

    def _start_waiting(self) -> None:
        while self.waiting and len(self.active) < self.workers:
            batch = self.waiting.popleft()
            batch.started = time.monotonic()
            batch.deadline = batch.started + self.timeout
            batch.thread = threading.Thread(target=self._run, args=(batch,), name=f"eval-{batch.rules[0]}", daemon=True)
            self.active.append(batch)
            batch.thread.start()

    def collect(self) -> list[Finished]:
        """Batches that finished or overran their deadline since the last call."""
        now = time.monotonic()
        finished: list[Finished] = []
        still: list[Batch] = []
        for batch in self.active:
            with self.lock:
                done = batch.done
            if done:
                if batch.error is not None:
                    outcome = {name: batch.error for name in batch.rules}
                else:
                    outcome = dict(batch.outcome or {})
                    for name in batch.rules:
                        outcome.setdefault(name, RuntimeError("the rule type returned no result for this rule"))
                finished.append(Finished(batch, outcome, now - batch.started))
            elif now >= batch.deadline:
                error = RuleTimeout(f"evaluation timed out after {self.timeout:g}s")
                finished.append(Finished(batch, {name: error for name in batch.rules}, now - batch.started))
                self.abandoned.append(batch)
            else:
                still.append(batch)
        self.active = still
        self._start_waiting()
        return finished

    def stop(self) -> None:
        """Start nothing more: queued batches are dropped (they run after the next start)."""
        self.waiting.clear()
        self.workers = 0

    def writing(self) -> bool:
        """Whether a running batch may still write from its thread (a stop waits for those only)."""
        with self.lock:
            return any(b.writes and not b.done for b in self.active)

    def next_deadline(self) -> float | None:
        return min((b.deadline for b in self.active), default=None)

    def idle(self) -> bool:
        return not self.waiting and not self.active
