"""Benchmark: the search server's CPU for rules due together, each searched alone against shared scans.

Run: .venv/bin/python -m bench.shared_scans [--rules 100] [--minutes 3] [--repeat 5]
osmem-server holding an hour of events of 500 services (one every 30 s each); ``--rules`` incremental-style
searches (a date histogram per minute over the last ``--minutes``, one service's errors each, the same time range),
sent through watchdog's search source once each alone (``packing.PACK_MAX`` = 1) and once shared, alternately,
``--repeat`` times. Reports the server's CPU per round (medians, side by side) and checks the answers are equal.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from opensearchpy import OpenSearch, helpers

from bench.common import median, save
from bench.compare_elastalert import MAPPINGS, cpu_seconds
from tests.servers.search import start_search
from watchdog.config import SearchSource as SearchConfig
from watchdog.sources import packing
from watchdog.sources.search import SearchRequest, SearchSource
from watchdog.times import to_text

SERVICES = 500


def load(url: str, now: datetime) -> str:
    index = f"logs-{now:%Y.%m.%d}"
    client = OpenSearch(hosts=[url], timeout=120)
    client.indices.create(index=index, body={"mappings": MAPPINGS})
    docs = ({"_index": index, "_source": {"@timestamp": to_text(now - timedelta(seconds=30 * step)),
                                          "service": f"svc-{s:03d}", "level": "error" if (s + step) % 7 == 0 else "info",
                                          "duration_ms": 100}} for step in range(120) for s in range(SERVICES))
    helpers.bulk(client, docs, refresh=True, chunk_size=5000)
    client.close()
    return index


def requests(index: str, now: datetime, rules: int, minutes: int) -> list[SearchRequest]:
    window = {"range": {"@timestamp": {"gte": to_text(now - timedelta(minutes=minutes)), "lt": to_text(now),
                                       "format": "strict_date_optional_time"}}}
    slices = {"slices": {"date_histogram": {"field": "@timestamp", "fixed_interval": "60s", "min_doc_count": 1}}}
    return [SearchRequest(index, {"size": 0, "query": {"bool": {"filter": [
        window, {"query_string": {"query": f"service:svc-{i:03d} AND level:error"}}]}}, "aggs": slices})
        for i in range(rules)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = start_search()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        index = load(server.url, now)
        batch = requests(index, now, args.rules, args.minutes)
        source = SearchSource(SearchConfig(name="logs", hosts=(server.url,), timeout=timedelta(seconds=60)))
        costs: dict[str, list[float]] = {"alone": [], "shared": []}
        answers: dict[str, Any] = {}
        pack_max = packing.PACK_MAX
        for _ in range(args.repeat):
            for mode in ("alone", "shared"):
                packing.PACK_MAX = 1 if mode == "alone" else pack_max
                before = cpu_seconds(server.pid)
                got = source.msearch(batch)
                time.sleep(0.2)  # (the server's CPU time is read from /proc: let its last tick land)
                costs[mode].append((cpu_seconds(server.pid) - before) * 1000)
                # (filter_path leaves out an empty histogram: no aggregations at all, or none left beside the count)
                answers[mode] = [a.get("aggregations") or {} if isinstance(a, dict) else repr(a) for a in got]
        packing.PACK_MAX = pack_max
        source.close()
    finally:
        server.close()
    diff = [(a, b) for a, b in zip(answers["alone"], answers["shared"], strict=True) if a != b]
    assert not diff, f"shared answers differ from those of each search alone: {diff[:2]}"
    alone, shared = median(costs["alone"]), median(costs["shared"])
    print(f"{args.rules} searches over the same {args.minutes} minutes: server CPU {alone:.0f} ms each alone, "
          f"{shared:.0f} ms shared (medians of {args.repeat}; {alone / max(shared, 1e-9):.0f}x); answers equal")
    save("shared_scans", {"rules": args.rules, "minutes": args.minutes, "repeat": args.repeat,
                          "server_cpu_ms_alone": costs["alone"], "server_cpu_ms_shared": costs["shared"]})


if __name__ == "__main__":
    main()
