"""Benchmark: 500 search rules on one source, evaluated together.

Run: .venv/bin/python -m bench.search_rules [--rules 500] [--cycles 10] [--mix classic|ratio-spike]
osmem-server behind a counting proxy, an hour of synthetic logs, a mix of
threshold (grouped and not), flatline and metric rules (``ratio-spike``: a
third of them replaced by error ratios and spikes against the previous
half hour, grouped and not); every cycle evaluates
all of them as the daemon does when they are due together. Reports search
requests per cycle, cycle wall time and CPU of this process per cycle (medians).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opensearchpy import OpenSearch, helpers

from bench.common import cpu_seconds, median, save
from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy, start_search
from watchdog.config import load_config

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MAPPINGS = {"properties": {"@timestamp": {"type": "date"}, "team": {"type": "keyword"}, "level": {"type": "keyword"},
                           "service": {"type": "keyword"}, "duration_ms": {"type": "long"}}}


def load(url: str, events: int) -> None:
    rng = random.Random(3)
    client = OpenSearch(hosts=[url], timeout=120)
    client.indices.create(index="app-logs-2026.11.28", body={"mappings": MAPPINGS})
    docs = ({"_index": "app-logs-2026.11.28", "_source": {
        "@timestamp": (NOW - timedelta(seconds=rng.uniform(0, 3600))).isoformat().replace("+00:00", "Z"),
        "team": f"team-{rng.randint(1, 10)}", "service": f"svc-{rng.randint(1, 20)}",
        "level": "error" if rng.random() < 0.1 else "info", "duration_ms": int(rng.lognormvariate(5, 0.5))}}
        for _ in range(events))
    helpers.bulk(client, docs, refresh=True, chunk_size=5000)
    client.close()


def rule(i: int, mix: str = "classic") -> str:
    head = f"name: r{i}\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\nschedule: {{every: 10s}}\n"
    kind = i % 6 if mix == "ratio-spike" else i % 4
    if kind == 4:
        group = "group_by: service\n" if i % 12 == 4 else ""
        return head + f"type: ratio\nquery: 'team:team-{i % 10 + 1}'\nnumerator: 'level:error'\nwindow: 5m\n" \
                      f"{group}min_denominator: 20\nthreshold: {{above: {{warning: 0.2, critical: 0.5}}}}\n"
    if kind == 5:
        group = "group_by: team\n" if i % 12 == 5 else ""
        return head + f"type: spike\nquery: 'level:error AND service:svc-{i % 20 + 1}'\nwindow: 10m\noffset: 30m\n" \
                      f"{group}min_count: 10\nthreshold: {{ratio_above: 3}}\n"
    if kind == 0:
        return head + f"type: threshold\nquery: 'level:error AND service:svc-{i % 20 + 1}'\nwindow: 5m\nthreshold: {{above: 30}}\n"
    if kind == 1:
        return head + "type: threshold\nquery: 'level:error'\nwindow: 5m\nthreshold: {above: 40}\ngroup_by: team\n"
    if kind == 2:
        return head + f"type: threshold\nquery: 'service:svc-{i % 20 + 1}'\nwindow: 5m\nthreshold: {{below: 1}}\n"
    return head + f"type: metric\nfilter: [{{term: {{service: svc-{i % 20 + 1}}}}}]\nwindow: 10m\n" \
                  "metric: {avg: duration_ms}\nthreshold: {above: 400}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--mix", choices=("classic", "ratio-spike"), default="classic")
    args = parser.parse_args()
    server = start_search()
    proxy = CountingProxy(server.url)
    try:
        load(server.url, args.events)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "rules").mkdir()
            (root / "watchdog.yaml").write_text(f"rules_dir: rules\nstate_path: state.db\n"
                                                f"sources:\n  logs: {{type: search, hosts: ['{proxy.url}'], timeout: 50s}}\n")
            for i in range(args.rules):
                (root / "rules" / f"r{i}.yaml").write_text(rule(i, args.mix))
            clock = Clock(NOW)
            engine = engine_for(load_config(str(root / "watchdog.yaml")), clock)
            evaluate_now(engine)  # first cycle: connection, first alerts and their samples
            walls, cpus, requests = [], [], []
            for cycle in range(args.cycles):
                clock.now = NOW + timedelta(seconds=10 * (cycle + 1))
                proxy.reset()
                wall, cpu = time.perf_counter(), cpu_seconds()
                applied = evaluate_now(engine, timeout=120)
                walls.append(time.perf_counter() - wall)
                cpus.append(cpu_seconds() - cpu)
                requests.append(proxy.counts["POST /_msearch"])
                assert len(applied) == args.rules and not any(a.error for a in applied), [a.error for a in applied if a.error][:3]
            firing = sum(len(g) for g in engine.store.groups().values())
            engine.store.close()
    finally:
        proxy.close()
        server.close()
    out = {"mix": args.mix, "rules": args.rules, "cycles": args.cycles, "events": args.events, "firing_groups": firing,
           "requests_per_cycle": median(requests), "cycle_seconds": {"median": median(walls), "min": min(walls), "max": max(walls)},
           "cpu_seconds_per_cycle": {"median": median(cpus), "min": min(cpus), "max": max(cpus)}}
    print(f"{args.rules} search rules ({args.mix}) on one source: {median(requests):.0f} _msearch request(s) per cycle, "
          f"cycle {median(walls):.3f}s median ({min(walls):.3f}-{max(walls):.3f}), "
          f"CPU {median(cpus) * 1000:.0f} ms per cycle median ({min(cpus) * 1000:.0f}-{max(cpus) * 1000:.0f}); {firing} groups firing")
    save("search_rules" if args.mix == "classic" else "search_rules_ratio_spike", out)


if __name__ == "__main__":
    main()
