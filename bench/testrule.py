"""Benchmark: ``test-rule`` over 24 h at 1-minute ticks, aggregated replay against tick-by-tick.

Run: .venv/bin/python -m bench.testrule [--events 50000] [--repeat 3] [--days 1] [--modes aggregated,per-tick]
Starts osmem-server behind a counting proxy, loads a day of synthetic logs,
and replays one grouped threshold rule both ways in the same run: search
requests made and wall time (medians), and checks both give the same transitions.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opensearchpy import OpenSearch, helpers

from bench.common import median, save
from tests.servers.search import CountingProxy, start_search
from watchdog.config import load_config
from watchdog.loader import load_rules
from watchdog.sources import Sources
from watchdog.sources.search import SearchRequest
from watchdog.testrule import replay

MAPPINGS = {"properties": {"@timestamp": {"type": "date"}, "team": {"type": "keyword"}, "level": {"type": "keyword"}}}
END = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


def load(url: str, events: int) -> None:
    rng = random.Random(1)
    client = OpenSearch(hosts=[url], timeout=120)
    for day in ("2026.11.26", "2026.11.27"):
        client.indices.create(index=f"app-logs-{day}", body={"mappings": MAPPINGS})
    docs = []
    for _ in range(events):
        at = END - timedelta(seconds=rng.uniform(0, 86400 + 600))
        docs.append({"_index": f"app-logs-{at:%Y.%m.%d}", "_source": {
            "@timestamp": at.isoformat().replace("+00:00", "Z"), "team": f"team-{rng.randint(1, 8)}",
            "level": "error" if rng.random() < 0.1 else "info"}})
    for hour in (3, 11, 19):  # three bursts
        for i in range(400):
            at = END - timedelta(hours=24 - hour) + timedelta(seconds=i)
            docs.append({"_index": f"app-logs-{at:%Y.%m.%d}", "_source": {
                "@timestamp": at.isoformat().replace("+00:00", "Z"), "team": "team-1", "level": "error"}})
    helpers.bulk(client, docs, refresh=True, chunk_size=5000)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", type=int, default=1, help="replay this many days up to the data's end (data: the last day)")
    parser.add_argument("--modes", default="aggregated,per-tick", help="comma-separated: aggregated, per-tick")
    args = parser.parse_args()
    modes = args.modes.split(",")
    server = start_search()
    proxy = CountingProxy(server.url)
    try:
        load(server.url, args.events)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "rules").mkdir()
            (root / "watchdog.yaml").write_text(f"rules_dir: rules\nsources:\n  logs: {{type: search, hosts: ['{proxy.url}'], timeout: 50s}}\n")
            (root / "rules" / "r.yaml").write_text(
                "name: r\ntype: threshold\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\nquery: 'level:error'\nwindow: 5m\n"
                "threshold: {above: 60}\ngroup_by: team\nschedule: {every: 1m}\n")
            config = load_config(str(root / "watchdog.yaml"))
            (rule,) = load_rules([config.rules_dir], config).rules
            results = {}
            for mode in modes:
                times, requests, outcome = [], [], None
                for _ in range(args.repeat):
                    sources = Sources(config.sources)
                    sources.get("logs").msearch([SearchRequest("app-logs-*", {"size": 0})])  # connect outside the timing
                    proxy.reset()
                    start = time.perf_counter()
                    outcome = replay(rule, sources, END - timedelta(days=args.days), END, force_per_tick=mode == "per-tick")
                    times.append(time.perf_counter() - start)
                    requests.append(proxy.counts["POST /_msearch"])
                    sources.close()
                assert outcome is not None
                results[mode] = {"ticks": len(outcome.ticks), "requests": median(requests), "seconds_median": median(times),
                                 "seconds_min": min(times), "seconds_max": max(times), "transitions": outcome.transitions}
    finally:
        proxy.close()
        server.close()
    if set(results) == {"aggregated", "per-tick"}:
        same = results["aggregated"]["transitions"] == results["per-tick"]["transitions"]
        a, p = results["aggregated"], results["per-tick"]
        print(f"{args.days}d at 1m ticks ({a['ticks']} ticks, {args.events} events): aggregated {a['requests']:.0f} request(s), "
              f"{a['seconds_median']:.3f}s median; per-tick {p['requests']:.0f} requests, {p['seconds_median']:.3f}s median; "
              f"speed-up {p['seconds_median'] / a['seconds_median']:.1f}x; same transitions: {same} ({len(a['transitions'])})")
    else:
        same = None
        for mode, r in results.items():
            print(f"{args.days}d at 1m ticks ({r['ticks']} ticks, {args.events} events): {mode} {r['requests']:.0f} request(s), "
                  f"{r['seconds_median']:.3f}s median ({r['seconds_min']:.3f}..{r['seconds_max']:.3f}s); "
                  f"{len(r['transitions'])} transitions")
    for r in results.values():
        r["transitions"] = len(r["transitions"])
    save("testrule" if args.days == 1 else f"testrule-{args.days}d",
         {"events": args.events, "repeat": args.repeat, "days": args.days, "same_transitions": same, **results})


if __name__ == "__main__":
    main()
