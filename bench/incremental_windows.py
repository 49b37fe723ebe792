"""Benchmark: metric and spike rules with 1h windows every minute, incremental windows against full-window searches.

Run: .venv/bin/python -m bench.incremental_windows [--rules 100] [--cycles 8] [--events 40000]
osmem-server behind a counting proxy, two hours of synthetic logs; the same rules (avg and max of a field, grouped
and not, and avg spikes against the hour before) twice, in two engines evaluated in turn each cycle (one minute of
clock apart): one with incremental windows, one searching every window whole. Reports cycle wall time and this
process's CPU per cycle (medians, side by side) and bytes of search bodies sent and of answers received.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch, helpers

from bench.common import median, save
from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy, start_search
from watchdog.config import load_config
from watchdog.ruletypes import increments

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MAPPINGS = {"properties": {"@timestamp": {"type": "date"}, "team": {"type": "keyword"}, "service": {"type": "keyword"},
                           "duration_ms": {"type": "long"}}}


def load(url: str, events: int) -> None:
    rng = random.Random(5)
    client = OpenSearch(hosts=[url], timeout=120)
    client.indices.create(index="app-logs", body={"mappings": MAPPINGS})
    docs = ({"_index": "app-logs", "_source": {
        "@timestamp": (NOW - timedelta(seconds=rng.uniform(-900, 7200))).isoformat().replace("+00:00", "Z"),
        "team": f"team-{rng.randint(1, 10)}", "service": f"svc-{rng.randint(1, 20)}",
        "duration_ms": int(rng.lognormvariate(5, 0.5))}} for _ in range(events))
    helpers.bulk(client, docs, refresh=True, chunk_size=5000)
    client.close()


def rule(name: str, i: int) -> str:
    head = f"name: {name}\nsource: logs\nindex: app-logs\nschedule: {{every: 1m}}\nwindow: 1h\nsample: 0\n" \
           f"filter: [{{term: {{service: svc-{i % 20 + 1}}}}}]\n"
    group = "group_by: team\n" if i % 2 else ""
    if i % 3 == 2:
        return head + f"type: spike\noffset: 1h\nmetric: {{avg: duration_ms}}\nthreshold: {{ratio_above: 3}}\n{group}"
    agg, above = ("avg", 168) if i % 3 == 0 else ("max", 1200)  # near the data's mean and tail: some fire, some not
    return head + f"type: metric\nmetric: {{{agg}: duration_ms}}\nthreshold: {{above: {above}}}\n{group}"


def engine(root: Path, url: str, prefix: str, rules: int, clock: Clock) -> Any:
    root.mkdir()
    (root / "rules").mkdir()
    (root / "watchdog.yaml").write_text(f"rules_dir: rules\nstate_path: state.db\n"
                                        f"sources:\n  logs: {{type: search, hosts: ['{url}'], timeout: 50s}}\n")
    for i in range(rules):
        (root / "rules" / f"{prefix}{i}.yaml").write_text(rule(f"{prefix}{i}", i))
    return engine_for(load_config(str(root / "watchdog.yaml")), clock)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--events", type=int, default=40000)
    args = parser.parse_args()
    planned = increments.plans
    # The "full" engine's rules (named f...) search their whole windows, as without incremental windows.
    increments.plans = lambda rule, ctx, settle: None if rule.name.startswith("f") else planned(rule, ctx, settle)  # type: ignore[assignment]
    server = start_search()
    proxy = CountingProxy(server.url)
    figures: dict[str, dict[str, list[float]]] = {mode: {"wall": [], "cpu": [], "bytes": [], "answer_bytes": []}
                                                  for mode in ("incremental", "full")}
    try:
        load(server.url, args.events)
        with tempfile.TemporaryDirectory() as tmp:
            clock = Clock(NOW)
            engines = {"incremental": engine(Path(tmp) / "i", proxy.url, "i", args.rules, clock),
                       "full": engine(Path(tmp) / "f", proxy.url, "f", args.rules, clock)}
            for one in engines.values():
                evaluate_now(one)  # the first cycle: connections, and the incremental engine's one full search
            for cycle in range(args.cycles):
                clock.now = NOW + timedelta(minutes=cycle + 1)
                for mode, one in (engines.items() if cycle % 2 else reversed(engines.items())):
                    proxy.reset()
                    through = proxy.bytes
                    wall, cpu = time.perf_counter(), time.process_time()
                    applied = evaluate_now(one, timeout=120)
                    figures[mode]["wall"].append(time.perf_counter() - wall)
                    figures[mode]["cpu"].append(time.process_time() - cpu)
                    figures[mode]["bytes"].append(sum(len(body) for body in proxy.bodies))
                    figures[mode]["answer_bytes"].append(proxy.bytes - through - figures[mode]["bytes"][-1])
                    assert len(applied) == args.rules and not any(a.error for a in applied)
            firing = sum(len(g) for g in engines["full"].store.groups().values())
            alerts = {mode: {(n[1:], g, round(a.value or 0, 6)) for n, groups in one.store.groups().items()
                             for g, a in groups.items()} for mode, one in engines.items()}
            same = alerts["incremental"] == alerts["full"]  # the same groups firing with the same values
            if not same:
                print("differ:", sorted(alerts["incremental"] ^ alerts["full"])[:6])
            for one in engines.values():
                one.store.close()
    finally:
        proxy.close()
        server.close()
    out: dict[str, Any] = {"rules": args.rules, "cycles": args.cycles, "events": args.events, "same_alerts": same,
                      "firing_groups": firing}
    for mode, numbers in figures.items():
        out[mode] = {name: median(values) for name, values in numbers.items()}
        print(f"{mode:>11}: cycle {median(numbers['wall']):.3f}s median, CPU {median(numbers['cpu']) * 1000:.0f} ms, "
              f"{median(numbers['bytes']):.0f} bytes of searches, {median(numbers['answer_bytes']):.0f} of answers")
    ratio = out["full"]["wall"] / out["incremental"]["wall"]
    print(f"{args.rules} metric and spike rules, 1h windows every minute: full/incremental cycle time {ratio:.2f}x; "
          f"same alerts: {same} ({firing} groups firing)")
    save("incremental_windows", out)


if __name__ == "__main__":
    main()
