"""Soak benchmark: the real daemon process, flat over time.

Run: .venv/bin/python -m bench.soak [--rules 160] [--minutes 15] [--idle-rules 100] [--idle-minutes 5]

Phase 1 (accelerated): ``--rules`` freshness rules at ``every: 1s`` against a
local PostgreSQL, whose answers flip between stale and fresh every minute so
alerts keep firing and resolving through the outbox. 160 rules for 15 minutes
is 144,000 evaluations: what 100 rules at ``every: 1m`` do in 24 hours. RSS,
CPU and the state database size are sampled every 30 s.
Phase 2 (idle): ``--idle-rules`` at ``every: 1m``: CPU per hour.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save
from tests.servers.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
FLIP_SQL = ("select now() - case when extract(epoch from now())::int % 120 < 60 "
            "then interval '3 hours' else interval '1 minute' end")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write(root: Path, dsn: str, rules: int, every: str) -> Path:
    (root / "rules").mkdir(parents=True, exist_ok=True)
    for old in (root / "rules").glob("*.yaml"):
        old.unlink()
    (root / "watchdog.yaml").write_text(f'rules_dir: rules\nstate_path: state.db\nworkers: 4\n'
                                        f'sources:\n  warehouse: {{type: postgres, dsn: "{dsn}"}}\n')
    for i in range(rules):
        (root / "rules" / f"r{i:03d}.yaml").write_text(
            f"name: soak-{i}\ntype: freshness\nsource: warehouse\nschedule: {{every: {every}}}\n"
            f"checks:\n  - {{name: c, sql: \"{FLIP_SQL}\"}}\nwarn_after: 1h\nrepeat_every: 10m\n")
    return root / "watchdog.yaml"


def run_daemon(config: Path, minutes: float, sample_every: float = 30.0) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    try:
        time.sleep(20)  # start-up and the first (jittered) round
        start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
        samples.append({"t": 0.0, "rss_kib": rss_kib(proc.pid), "db_bytes": _db_size(config)})
        while time.monotonic() - start < minutes * 60:
            time.sleep(sample_every)
            samples.append({"t": round(time.monotonic() - start), "rss_kib": rss_kib(proc.pid), "db_bytes": _db_size(config)})
        cpu = cpu_seconds(proc.pid) - start_cpu
        wall = time.monotonic() - start
    finally:
        proc.terminate()
        proc.wait(60)
    return {"samples": samples, "cpu_seconds": cpu, "wall_seconds": wall}


def _db_size(config: Path) -> int:
    return sum(p.stat().st_size for p in config.parent.glob("state.db*") if p.exists())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=160)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--idle-rules", type=int, default=100)
    parser.add_argument("--idle-minutes", type=float, default=5)
    args = parser.parse_args()
    pg = LocalPostgres.create()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            soak = run_daemon(write(Path(tmp) / "soak", pg.dsn, args.rules, "1s"), args.minutes)
            idle = run_daemon(write(Path(tmp) / "idle", pg.dsn, args.idle_rules, "1m"), args.idle_minutes, 60)
    finally:
        pg.destroy()
    first, last = soak["samples"][0], soak["samples"][-1]
    half = soak["samples"][len(soak["samples"]) // 2]
    evaluations = args.rules * soak["wall_seconds"]
    out = {
        "soak": {"rules": args.rules, "minutes": args.minutes, "evaluations": int(evaluations),
                 "rss_start_mib": first["rss_kib"] / 1024, "rss_half_mib": half["rss_kib"] / 1024, "rss_end_mib": last["rss_kib"] / 1024,
                 "db_start_kib": first["db_bytes"] / 1024, "db_end_kib": last["db_bytes"] / 1024,
                 "cpu_ms_per_evaluation": soak["cpu_seconds"] / evaluations * 1000, "samples": soak["samples"]},
        "idle": {"rules": args.idle_rules, "minutes": args.idle_minutes, "rss_mib": idle["samples"][-1]["rss_kib"] / 1024,
                 "cpu_seconds_per_hour": idle["cpu_seconds"] / idle["wall_seconds"] * 3600,
                 "cpu_share_percent": idle["cpu_seconds"] / idle["wall_seconds"] * 100},
    }
    s, i = out["soak"], out["idle"]
    print(f"soak: {args.rules} rules every 1s for {args.minutes:g} min ({s['evaluations']} evaluations): "
          f"RSS {s['rss_start_mib']:.1f} -> {s['rss_half_mib']:.1f} -> {s['rss_end_mib']:.1f} MiB, "
          f"state db {s['db_start_kib']:.0f} -> {s['db_end_kib']:.0f} KiB, {s['cpu_ms_per_evaluation']:.2f} ms CPU per evaluation")
    print(f"idle: {args.idle_rules} rules every 1m: RSS {i['rss_mib']:.1f} MiB, CPU {i['cpu_seconds_per_hour']:.1f} s per hour "
          f"({i['cpu_share_percent']:.2f}% of one core)")
    save("soak", out)


if __name__ == "__main__":
    main()
