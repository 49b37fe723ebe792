"""Idle cost: the real daemon process with many rules at ``every: 1m`` and nothing firing.

Run: .venv/bin/python -m bench.idle [--counts 100,500,2000] [--kinds freshness,learned,search] [--seconds 120]
                                    [--before /path/to/other/checkout] [--receivers]

For each kind and count, starts ``watchdog run`` with that many rules (freshness
checks on a local PostgreSQL answering ``now()``; ``learned``: freshness table
checks with ``learn:`` that are still learning; threshold rules on
osmem-server that stay below their threshold), waits ``--warmup`` seconds (start,
loading, the first jittered round), then measures the daemon's CPU over
``--seconds`` and its RSS at the end. With ``--before``, the same workload
runs right before with the daemon of that checkout (a ``git worktree`` of an
older commit), so the two are measured side by side under the same load; the
machine's load average is reported with each run. With ``--receivers``, each
workload runs twice, side by side: as is, and with a PagerDuty, a webhook and
an email receiver and two routes (nothing fires, so nothing is sent: the idle
cost of routing and of the receivers' delivery threads).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import save
from bench.soak import cpu_seconds, rss_kib

ROOT = Path(__file__).resolve().parent.parent


RECEIVERS = """\
receivers:
  pager: {type: pagerduty, routing_key: bench-routing-key-0001, url: "http://127.0.0.1:9/v2/enqueue"}
  hook: {type: webhook, url: "http://127.0.0.1:9/hook", secret: bench-webhook-secret}
  mail: {type: email, smtp: {host: 127.0.0.1, port: 9, starttls: false}, from: w@example.com, to: [d@example.com]}
routes:
  - {match: {severity: critical}, receivers: [pager, console], continue: true}
  - {match: {labels.team: data}, receivers: [hook, mail, console], active_time_intervals: [work]}
time_intervals:
  work: {weekdays: ["monday:friday"], times: ["09:00-18:00"], location: Europe/Berlin}
"""


def write(root: Path, kind: str, count: int, pg_dsn: str, search_url: str, receivers: bool = False) -> Path:
    """A config and ``count`` rules of ``kind`` under ``root``; returns the config's path."""
    rules = root / "rules"
    rules.mkdir(parents=True)
    (root / "watchdog.yaml").write_text(
        f"rules_dir: rules\nstate_path: state.db\nworkers: 4\nsources:\n"
        f"  warehouse: {{type: postgres, dsn: \"{pg_dsn}\"}}\n"
        f"  logs: {{type: search, hosts: ['{search_url}'], timeout: 50s}}\n" + (RECEIVERS if receivers else ""))
    for i in range(count):
        if kind == "freshness":
            body = ("type: freshness\nsource: warehouse\nchecks:\n  - {name: c, sql: \"select now()\"}\n"
                    "warn_after: 1h\n")
        elif kind == "learned":  # learning (the table holds two loads): a cadence check as a new user starts one
            body = ("type: freshness\nsource: warehouse\nchecks:\n  - {name: c, table: idle_loads, loaded_at: loaded_at, "
                    "learn: {history: 28d}}\n")
        else:
            body = (f"type: threshold\nsource: logs\nindex: 'app-logs-*'\nquery: 'level:error AND service:svc-{i % 20}'\n"
                    "window: 5m\nthreshold: {above: 1000}\n")
        (rules / f"r{i:04d}.yaml").write_text(f"name: idle-{i}\nschedule: {{every: 1m}}\n{body}")
    return root / "watchdog.yaml"


def load_logs(url: str) -> None:
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[url], timeout=120)
    now = datetime.now(UTC)
    day = now.strftime("%Y.%m.%d")
    docs = ({"_index": f"app-logs-{day}", "_source": {
        "@timestamp": (now - timedelta(seconds=i % 3600)).isoformat().replace("+00:00", "Z"),
        "service": f"svc-{i % 20}", "level": "error" if i % 10 == 0 else "info"}} for i in range(5000))
    helpers.bulk(client, docs, refresh=True, chunk_size=5000)
    client.close()


def measure(checkout: Path, config: Path, warmup: float, seconds: float) -> dict[str, Any]:
    """Run the daemon of ``checkout`` on ``config``; its CPU share over ``seconds`` after ``warmup``, and RSS."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(config)], cwd=checkout, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon of {checkout} exited with {proc.returncode}")
        load_before = os.getloadavg()[0]
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        rss = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    return {"cpu_percent": cpu / wall * 100, "rss_mib": rss / 1024, "load": [load_before, os.getloadavg()[0]]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="100,500,2000")
    parser.add_argument("--kinds", default="freshness,search")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=75)
    parser.add_argument("--before", type=Path, help="another checkout, measured right before this one")
    parser.add_argument("--receivers", action="store_true",
                        help="each workload also with three receivers and routes, side by side")
    args = parser.parse_args()
    from tests.servers.postgres import LocalPostgres
    from tests.servers.search import start_search

    pg = LocalPostgres.create()
    if "learned" in args.kinds:
        import psycopg2

        with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("create table idle_loads (loaded_at timestamptz)")
            cur.execute("insert into idle_loads values (now() - interval '2 hours'), (now() - interval '1 hour')")
        conn.close()
    server = start_search()
    results: list[dict[str, Any]] = []
    try:
        load_logs(server.url)
        with tempfile.TemporaryDirectory() as tmp:
            for kind in args.kinds.split(","):
                for count in (int(c) for c in args.counts.split(",")):
                    variants = ([("before", args.before, False)] if args.before else []) + [("after", ROOT, False)]
                    if args.receivers:
                        variants.append(("routed", ROOT, True))
                    for label, checkout, routed in variants:
                        config = write(Path(tmp) / f"{kind}-{count}-{label}", kind, count, pg.dsn, server.url, routed)
                        row = {"kind": kind, "rules": count, "variant": label,
                               **measure(checkout, config, args.warmup, args.seconds)}
                        results.append(row)
                        print(f"{kind:9} {count:5} rules {label:6}: CPU {row['cpu_percent']:.2f}% of a core "
                              f"({row['cpu_percent'] / count * 1000:.2f}% per 1,000 rules), "
                              f"RSS {row['rss_mib']:.1f} MiB, load {row['load'][0]:.1f}-{row['load'][1]:.1f}",
                              flush=True)
    finally:
        server.close()
        pg.destroy()
    save("idle", {"seconds": args.seconds, "warmup": args.warmup, "results": results})


if __name__ == "__main__":
    main()
