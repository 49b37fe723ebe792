"""The cost of a PostgreSQL state against SQLite: 500 rules, whole cycles, side by side in one run.

Run: .venv/bin/python -m bench.state_backends [--rules 500] [--cycles 5]

Each cycle evaluates every rule once (``Engine.run_all_once``: 500 freshness
checks, ``select now()`` on a local PostgreSQL, so the source costs the same
for every backend) and records each result in the state. Backends: SQLite
(the default), PostgreSQL, and PostgreSQL as the leader of two instances (a
lease held, every write fenced). Measured per cycle: this process's CPU, wall
time, and the statements sent to the state (round trips to the server for
PostgreSQL; SQLite runs them in-process). The PostgreSQL server's own CPU is
not in the figure (on the 1-vCPU VM it would be on another host: RDS/Aurora).
The backends alternate cycle by cycle, so the machine's noise falls on all.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, median, save
from tests.servers.postgres import LocalPostgres
from watchdog.config import load_config
from watchdog.engine import Engine
from watchdog.lease import Fence
from watchdog.loader import load_rules
from watchdog.sources import Sources
from watchdog.state import StateStore
from watchdog.state_db import PostgresDatabase


def project(root: Path, rules: int, dsn: str) -> Any:
    (root / "rules").mkdir(parents=True)
    (root / "watchdog.yaml").write_text(f"rules_dir: rules\nstate_path: state.db\nworkers: 4\nsources:\n"
                                        f"  warehouse: {{type: postgres, dsn: \"{dsn}\"}}\n")
    for i in range(rules):
        (root / "rules" / f"r{i:04d}.yaml").write_text(
            f"name: r{i}\nschedule: {{every: 1m}}\ntype: freshness\nsource: warehouse\n"
            "checks:\n  - {name: c, sql: \"select now()\"}\nwarn_after: 1h\n")
    return load_config(str(root / "watchdog.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    pg = LocalPostgres.create()
    try:
        pg.psql("create database bench")
        dsn = pg.dsn_for("bench")
        with tempfile.TemporaryDirectory() as tmp:
            config = project(Path(tmp), args.rules, dsn)
            rules = load_rules([config.rules_dir], config).rules
            sources = Sources(config.sources)
            fence = Fence("bench-1")
            stores = {
                "sqlite": StateStore(str(Path(tmp) / "state.db")),
                "postgres": StateStore(db=PostgresDatabase(dsn, f"s_{uuid.uuid4().hex[:8]}")),
                "postgres-leader": StateStore(db=PostgresDatabase(dsn, f"s_{uuid.uuid4().hex[:8]}"), fence=fence),
            }
            lease = stores["postgres-leader"].claim_lease(fence.instance, 0, 3600.0)
            fence.epoch, fence.until = lease.epoch, time.monotonic() + 3000
            engines = {name: Engine(rules, store, sources, workers=4, timeout=timedelta(seconds=60))
                       for name, store in stores.items()}
            figures: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": [], "trips": []} for n in stores}
            for cycle in range(args.cycles + 1):  # the first cycle creates every row: left out
                for name, engine in engines.items():
                    db: Any = stores[name].db
                    trips, cpu, wall = db.round_trips, cpu_seconds(), time.perf_counter()
                    applied = engine.run_all_once(120)
                    assert len(applied) == args.rules, (name, len(applied))
                    if cycle:
                        figures[name]["cpu"].append((cpu_seconds() - cpu) * 1000)
                        figures[name]["wall"].append((time.perf_counter() - wall) * 1000)
                        figures[name]["trips"].append(db.round_trips - trips)
            for store in stores.values():
                store.close()
            sources.close()
    finally:
        pg.destroy()
    result: dict[str, Any] = {"rules": args.rules, "cycles": args.cycles}
    base = median(figures["sqlite"]["cpu"])
    for name, f in figures.items():
        result[name] = {"cpu_ms_per_cycle": round(median(f["cpu"]), 1), "wall_ms_per_cycle": round(median(f["wall"]), 1),
                        "statements_per_cycle": median(f["trips"]),
                        "statements_per_rule": round(median(f["trips"]) / args.rules, 2),
                        "cpu_ratio_to_sqlite": round(median(f["cpu"]) / base, 2)}
        print(f"{name:16} CPU {result[name]['cpu_ms_per_cycle']:8.1f} ms/cycle (x{result[name]['cpu_ratio_to_sqlite']}), "
              f"wall {result[name]['wall_ms_per_cycle']:8.1f} ms, {result[name]['statements_per_cycle']:.0f} statements "
              f"({result[name]['statements_per_rule']} per rule)")
    print(save("state_backends", result))


if __name__ == "__main__":
    main()
