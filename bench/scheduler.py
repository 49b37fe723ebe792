"""Benchmark: the scheduler and lifecycle with an instant source.

Run: .venv/bin/python -m bench.scheduler [--seconds 60] [--idle-seconds 180]

1. 1,000 rules at ``every: 1s``: scheduling lag (actual dispatch minus planned
   start, p50/p99) and daemon CPU per evaluation (state writes included).
2. 100 rules at ``every: 1m``: CPU share of one core while idle (target < 1%).

Uses the real engine, runner, lifecycle and SQLite state store; only the rule
type is a bench-only one whose source answers instantly (a third of the rules
firing, so notifications are recorded too).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from bench.common import cpu_seconds, median, percentile, save
from watchdog.engine import Engine
from watchdog.rule import NotifyTarget, Rule, Schedule
from watchdog.ruletypes.base import EvalContext, Evaluation, Finding, RuleType
from watchdog.state import StateStore


@dataclass(frozen=True)
class InstantOptions:
    source: str = "instant"


class InstantRule(RuleType):
    name: ClassVar[str] = "instant"
    source_type: ClassVar[str] = "instant"
    message_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse_options(cls, data: Mapping[str, Any], rule_dir: str, grants: Any = None) -> InstantOptions:
        return InstantOptions()

    @classmethod
    def evaluate(cls, rules: Sequence[Rule], source: Any, ctx: EvalContext) -> dict[str, Evaluation | Exception]:
        out: dict[str, Evaluation | Exception] = {}
        for rule in rules:
            firing = hash(rule.name) % 3 == 0
            out[rule.name] = Evaluation(findings=(Finding(group="", value=1, summary="x"),) if firing else ())
        return out


class NoSources:
    def get(self, name: str) -> None:
        return None


def make_rules(count: int, every: timedelta) -> list[Rule]:
    return [Rule(name=f"rule-{i}", type="instant", path="", options=InstantOptions(source=f"s{i % 10}"),
                 schedule=Schedule(every=every), notify=NotifyTarget(enabled=True), repeat_every=timedelta(hours=4))
            for i in range(count)]


def drive(engine: Engine, seconds: float) -> None:
    """The daemon's loop (daemon._loop without reload and pruning) for ``seconds``."""
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        engine.run_pending()
        engine.wake.wait(min(engine.seconds_until_next(), max(0.0, stop - time.monotonic())))
        engine.wake.clear()


def busy(count: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(f"{tmp}/state.db")
        engine = Engine(make_rules(count, timedelta(seconds=1)), store, NoSources(), rule_types={"instant": InstantRule})
        drive(engine, 2.0)  # warm up: first runs, first notifications
        engine.stats.lags.clear()
        before_eval, before_cpu = engine.stats.evaluations, cpu_seconds()
        drive(engine, seconds)
        evaluations = engine.stats.evaluations - before_eval
        cpu = cpu_seconds() - before_cpu
        lags = list(engine.stats.lags)
        store.close()
    return {"rules": count, "seconds": seconds, "evaluations": evaluations,
            "evaluations_per_second": evaluations / seconds,
            "lag_p50_ms": percentile(lags, 50) * 1000, "lag_p99_ms": percentile(lags, 99) * 1000,
            "cpu_ms_per_evaluation": cpu / max(evaluations, 1) * 1000, "cpu_share": cpu / seconds}


def idle(count: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(f"{tmp}/state.db")
        engine = Engine(make_rules(count, timedelta(minutes=1)), store, NoSources(), rule_types={"instant": InstantRule})
        drive(engine, 20.0)  # the first round (jittered over 15 s) and its state writes
        before = cpu_seconds()
        drive(engine, seconds)
        cpu = cpu_seconds() - before
        evaluations = engine.stats.evaluations
        store.close()
    return {"rules": count, "seconds": seconds, "cpu_seconds": cpu, "cpu_share_percent": cpu / seconds * 100,
            "threads": threading.active_count(), "evaluations": evaluations}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--idle-rules", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [busy(args.rules, args.seconds) for _ in range(args.repeat)]
    keys = ("lag_p50_ms", "lag_p99_ms", "cpu_ms_per_evaluation", "evaluations_per_second")
    summary = {k: {"median": median([r[k] for r in runs]), "min": min(r[k] for r in runs), "max": max(r[k] for r in runs)}
               for k in keys}
    for k in keys:
        s = summary[k]
        print(f"{args.rules} rules every 1s: {k} median {s['median']:.2f} (range {s['min']:.2f}-{s['max']:.2f})")
    quiet = idle(args.idle_rules, args.idle_seconds)
    print(f"{args.idle_rules} rules every 1m, idle {args.idle_seconds:.0f}s: CPU {quiet['cpu_share_percent']:.3f}% of one core")
    save("scheduler", {"busy": summary, "busy_runs": runs, "idle": quiet})


if __name__ == "__main__":
    main()
