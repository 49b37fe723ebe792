"""watchdog against ElastAlert2 2.19.0: same server, same data, same rules, measured side by side.

Run: .venv/bin/python -m bench.compare_elastalert [--sizes 10,100,500] [--repeat 1] [--steady 120] [--mix classic|ratio-spike]
     [--burst 70] [--every 10] [--window-minutes 60] [--bursts 12] [--hog] [--separate-servers] [--history-minutes M]

``--every S --window-minutes W``: every rule at ``every: S`` (ElastAlert2's
``run_every``), the count, flatline and metric windows W minutes (issue 29:
500 rules, 1h windows every minute). ``--bursts K``: K error bursts, each on
its own rule, at random moments of the steady phase (so at random phases of
the schedule); latency median and p90 over them. ``--hog``: a busy loop
beside both tools for the whole run (one core taken). With
``--separate-servers`` each tool has its own search server, and a third one,
the control, is fed the same events by the feeder but searched by no tool:
``server_cpu_seconds_per_minute`` is each tool's server (indexing the feeder's
events included, the same for both), ``control_server_cpu_seconds_per_minute``
the control's (indexing alone) and ``own_server_cpu_seconds_per_minute`` the
difference: what the tool's searches cost the server. Bytes per cycle are
request and response bytes through the counting proxy.

History: before the tools start, every server gets ``--history-minutes`` of
the feeder's events (one per service every 30 s; default: the longest window
of the rule set and 2 minutes for the loading, so every window is full from
the start, as in production; 500 services over 62 minutes take about a minute
to load).

Latency split (``bench/search_log.py``): for each burst rule, the first search
the tool sent after the burst was indexed that covers the rule;
``wait_for_schedule`` is from the injection to that search, ``processing``
from that search to the alert (median and p90 beside the total latency).

``--burst K``: instead of a few bursts of a few rules, two error bursts that
make K frequency/threshold rules fire at once each (the workload of issue 16:
about 70 alerts in the same second, one webhook for every rule). Latency is
reported as median and p90 over every alert; at the end both tools get
SIGTERM together and the time each takes to exit is measured.

For each size N it starts osmem-server with a counting proxy in front of it
for each tool, a local Slack sink, and a feeder that keeps N services
logging; it writes equivalent rule sets (ElastAlert2 ``frequency`` <->
``threshold`` above, ``flatline`` <-> ``threshold`` below,
``metric_aggregation`` <-> ``metric``; with ``--mix ratio-spike`` also
``percentage_match`` <-> ``ratio`` and ``spike`` <-> ``spike``, a fifth of the
rules each), all at a 10 s schedule, starts both
tools together, injects known bursts during the steady window and measures:
steady RSS and its growth, CPU seconds per minute, search requests per cycle,
time from start to the first query, detection latency (burst indexed -> Slack
message) and correctness (each expected alert exactly once, nothing else).

ElastAlert2 2.19.0 is installed from PyPI into bench/.venv-elastalert (later
releases need Python 3.12). Results: bench/results/compare_elastalert.json.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch, helpers

from bench.common import median, percentile, save
from bench.search_log import SearchLog, split
from tests.servers.search import CountingProxy, start_search
from tests.servers.slack_api import SlackServer

ROOT = Path(__file__).resolve().parent.parent
EA_VENV = ROOT / "bench" / ".venv-elastalert"
EA_VERSION = "2.19.0"
RUN_EVERY = 10
FEED_SECONDS = 30  # the feeder's cadence: one info event per service
LOAD_MARGIN_MINUTES = 2  # history beyond the longest window: loading it and starting the tools take about a minute
MAPPINGS = {"properties": {"@timestamp": {"type": "date"}, "service": {"type": "keyword"}, "level": {"type": "keyword"},
                           "duration_ms": {"type": "long"}, "message": {"type": "text"}}}


def install_elastalert() -> Path:
    python = EA_VENV / "bin" / "python"
    if not (EA_VENV / "bin" / "elastalert").exists():
        subprocess.run([sys.executable, "-m", "venv", str(EA_VENV)], check=True)
        # pytz is imported by elastalert 2.19.0 without being declared
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"elastalert2=={EA_VERSION}", "pytz"], check=True)
    return EA_VENV / "bin"


def now_text(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


class Plan:
    """Which rules exist at size N, and which alerts are due.

    ``classic``: half frequency/threshold, a quarter flatline, a quarter
    metric. ``ratio-spike``: 30% frequency, 15% flatline, 15% metric, 20%
    error ratio (percentage_match) and 20% spike; some ratio rules get an
    error burst (both tools must alert), spike rules stay quiet (their
    requests are what is compared).
    """

    def __init__(self, n: int, mix: str = "classic", burst: int = 0):
        if mix == "classic":
            sizes = {"freq": n // 2, "flat": n // 4, "ratio": 0, "spike": 0}
        else:
            sizes = {"freq": n * 3 // 10, "flat": n * 3 // 20, "ratio": n // 5, "spike": n // 5}
        self.freq = [f"freq-{i:03d}" for i in range(sizes["freq"])]
        self.flat = [f"flat-{i:03d}" for i in range(sizes["flat"])]
        self.ratio = [f"ratio-{i:03d}" for i in range(sizes["ratio"])]
        self.spike = [f"spike-{i:03d}" for i in range(sizes["spike"])]
        self.metric = [f"metric-{i:03d}" for i in range(n - sum(sizes.values()))]
        if burst:  # two bursts of `burst` rules each, every rule of one burst firing in the same second
            step = max(1, len(self.freq) // (2 * burst))
            self.burst = self.freq[::step][: 2 * burst]
        else:
            self.burst = self.freq[:: max(1, len(self.freq) // 5)][:5]  # error bursts
        self.burst += self.ratio[:: max(1, len(self.ratio) // 3)][:3]  # error bursts on ratio rules' services
        self.slow = self.metric[:: max(1, len(self.metric) // 2)][:2]  # latency bursts
        self.silent = self.flat[:: max(1, len(self.flat) // 3)][:3]  # services that never log
        self.services = [name for name in self.freq + self.flat + self.metric + self.ratio + self.spike
                         if name not in self.silent]

    def expected(self) -> set[str]:
        return set(self.burst) | set(self.slow) | set(self.silent)


def longest_window(plan: Plan, window: int | None) -> int:
    """Minutes of data the longest window of the rule set reads (a spike: its window and the baseline before it)."""
    minutes = [window or 1] if plan.freq else []
    minutes += [window or 2] if plan.flat else []
    minutes += [window or 5] if plan.metric else []
    minutes += [5] if plan.ratio else []
    minutes += [4] if plan.spike else []
    return max(minutes, default=0)


def query_for(name: str) -> str:
    return f"service:{name} AND level:error" if name.startswith(("freq", "spike")) else f"service:{name}"


def elastalert_rules(plan: Plan, folder: Path, webhook: str, window: int | None = None) -> None:
    common = (f"index: logs-%Y.%m.%d\nuse_strftime_index: true\ntimestamp_field: '@timestamp'\nrealert: {{minutes: 60}}\n"
              f"alert: [slack]\nslack_webhook_url: {webhook}\nalert_text_type: alert_text_only\nalert_text: 'ALERT {{0}}'\n")
    for name in plan.freq:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\ntype: frequency\nnum_events: 21\ntimeframe: {{minutes: {window or 1}}}\n"
            f"filter: [{{query: {{query_string: {{query: '{query_for(name)}'}}}}}}]\n{common}alert_text_args: [name]\n")
    for name in plan.flat:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\ntype: flatline\nthreshold: 1\ntimeframe: {{minutes: {window or 2}}}\n"
            f"filter: [{{query: {{query_string: {{query: '{query_for(name)}'}}}}}}]\n{common}alert_text_args: [name]\n")
    for name in plan.metric:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\ntype: metric_aggregation\nmetric_agg_key: duration_ms\nmetric_agg_type: avg\nmax_threshold: 1000\n"
            f"buffer_time: {{minutes: {window or 5}}}\nfilter: [{{query: {{query_string: {{query: '{query_for(name)}'}}}}}}]\n"
            f"{common}alert_text_args: [name]\n")
    for name in plan.ratio:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\ntype: percentage_match\nmatch_bucket_filter: [{{term: {{level: error}}}}]\n"
            f"max_percentage: 50\nmin_denominator: 10\nbuffer_time: {{minutes: 5}}\n"
            f"filter: [{{query: {{query_string: {{query: '{query_for(name)}'}}}}}}]\n{common}alert_text_args: [name]\n")
    for name in plan.spike:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\ntype: spike\nspike_height: 3\nspike_type: up\ntimeframe: {{minutes: 2}}\nthreshold_cur: 5\n"
            f"filter: [{{query: {{query_string: {{query: '{query_for(name)}'}}}}}}]\n{common}alert_text_args: [name]\n")


def watchdog_rules(plan: Plan, folder: Path, every: int = RUN_EVERY, window: int | None = None) -> None:
    common = f"source: logs\nindex: 'logs-%Y.%m.%d'\nschedule: {{every: {every}s}}\nrepeat_every: 1h\n"
    for name in plan.freq:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntype: threshold\n{common}query: '{query_for(name)}'\n"
                                             f"window: {window or 1}m\nthreshold: {{above: 20}}\n")
    for name in plan.flat:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntype: threshold\n{common}query: '{query_for(name)}'\n"
                                             f"window: {window or 2}m\nthreshold: {{below: 1}}\n")
    for name in plan.metric:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntype: metric\n{common}query: '{query_for(name)}'\n"
                                             f"window: {window or 5}m\nmetric: {{avg: duration_ms}}\nthreshold: {{above: 1000}}\n")
    for name in plan.ratio:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntype: ratio\n{common}query: '{query_for(name)}'\n"
                                             "numerator: 'level:error'\nwindow: 5m\nmin_denominator: 10\n"
                                             "threshold: {above: 0.5}\n")
    for name in plan.spike:
        (folder / f"{name}.yaml").write_text(f"name: {name}\ntype: spike\n{common}query: '{query_for(name)}'\n"
                                             "window: 2m\noffset: 2m\nmin_count: 5\nthreshold: {ratio_above: 3}\n")


class Feeder(threading.Thread):
    """Keeps every non-silent service logging one info event every FEED_SECONDS (so flatline rules stay quiet)."""

    def __init__(self, urls: list[str], plan: Plan):
        super().__init__(daemon=True)
        self.clients = [OpenSearch(hosts=[url], timeout=60) for url in urls]  # the same events to every server
        self.plan = plan
        self.stop = threading.Event()

    def index(self, events: list[dict[str, Any]]) -> None:
        """Index ``events`` into every server at once (so no tool's server sees a burst before the other's)."""
        self._each(lambda client: helpers.bulk(client, ({"_index": f"logs-{e['@timestamp'][:10].replace('-', '.')}",
                                                         "_source": e} for e in events), refresh=True))

    def _each(self, load: Callable[[OpenSearch], object]) -> None:
        loaders = [threading.Thread(target=load, args=(client,)) for client in self.clients]
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join()

    def baseline(self, at: datetime) -> list[dict[str, Any]]:
        return [{"@timestamp": now_text(at), "service": s, "level": "info", "duration_ms": 100,
                 "message": f"service={s} event=request"} for s in self.plan.services]

    def preload(self, now: datetime, minutes: int) -> int:
        """Index ``minutes`` of history at the feeder's cadence into every server at once; returns events per server."""
        events = [e for step in range(minutes * 60 // FEED_SECONDS + 1)
                  for e in self.baseline(now - timedelta(seconds=step * FEED_SECONDS))]

        def load(client: OpenSearch) -> None:
            helpers.bulk(client, ({"_index": f"logs-{e['@timestamp'][:10].replace('-', '.')}", "_source": e}
                                  for e in events), chunk_size=2000, refresh=False, request_timeout=300)
            client.indices.refresh(index="logs-*")

        self._each(load)
        return len(events)

    def run(self) -> None:
        while not self.stop.wait(FEED_SECONDS):
            self.index(self.baseline(datetime.now(UTC)))


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


RULE_NAME = re.compile(r"\b(?:freq|flat|metric|ratio|spike)-\d{3}\b")
ONLY_RESOLVED = re.compile(r"\(\d+: \d+ ok\)")  # a digest's rule line whose notifications are all resolutions


def message_lines(body: dict[str, Any]) -> list[str]:
    """The lines a person reads: Block Kit sections when there are blocks (a digest's text only summarizes), else text."""
    blocks = body.get("blocks")
    if isinstance(blocks, list) and blocks:
        texts = [str((b.get("text") or {}).get("text", "")) for b in blocks if isinstance(b, dict)]
        return [line for text in texts for line in text.splitlines()]
    return (str(body.get("text", "")) + " " + str(body.get("attachments", ""))).splitlines()


def alerts(sink: SlackServer, tool: str) -> list[tuple[str, float]]:
    """(rule name, arrival time) of every alert the tool posted: once per message that announces the rule firing."""
    out = []
    for request in sink.calls("webhook"):
        if f"/services/{tool}/" not in request.path:
            continue
        names: set[str] = set()
        for line in message_lines(request.body):
            if "RESOLVED" in line or ONLY_RESOLVED.search(line):  # ElastAlert2 sends no resolutions; count alerts only
                continue
            names.update(RULE_NAME.findall(line))
        out.extend((name, request.at) for name in names)
    return out


def stop_both(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60.0) -> dict[str, float | None]:
    """SIGTERM to every tool at once; seconds until each exited (None: still running after ``timeout``)."""
    sent = time.monotonic()
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    took: dict[str, float | None] = {tool: None for tool in procs}
    while time.monotonic() - sent < timeout and any(v is None for v in took.values()):
        for tool, proc in procs.items():
            if took[tool] is None and proc.poll() is not None:
                took[tool] = time.monotonic() - sent
        time.sleep(0.02)
    return took


def run_size(n: int, ea_bin: Path, steady: float, warmup: float, mix: str = "classic", burst: int = 0,
             logs: Path | None = None, separate: bool = False, every: int = RUN_EVERY, window: int | None = None,
             bursts: int = 0, hog: bool = False, history: int | None = None) -> dict[str, Any]:
    plan = Plan(n, mix, burst)
    history = longest_window(plan, window) + LOAD_MARGIN_MINUTES if history is None else history
    if bursts:  # one rule per burst, at random moments: every phase of the schedule
        plan.burst = plan.freq[:: max(1, len(plan.freq) // bursts)][:bursts]
    hogging = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hog else None
    # One server for both (the default: same server, same data), or one each with the same data (--separate-servers:
    # neither tool's searches queue behind the other's, as when each runs against its own production cluster), and a
    # control fed the same events but searched by nobody: what indexing alone costs.
    servers = [start_search() for _ in range(3 if separate else 1)]
    control = servers[2] if separate else None
    server_of = {"elastalert": servers[0], "watchdog": servers[1] if separate else servers[0]}
    proxies = {tool: CountingProxy(server.url) for tool, server in server_of.items()}
    searches = {tool: SearchLog(RULE_NAME) for tool in proxies}
    for tool, proxy in proxies.items():
        proxy.on_request = searches[tool].record
    sink = SlackServer()
    feeder = Feeder([server.url for server in servers], plan)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        today = datetime.now(UTC)
        days = {f"logs-{today + timedelta(minutes=m):%Y.%m.%d}" for m in range(-history - 1, int(warmup + steady) // 60 + 30, 30)}
        for server in servers:
            client = OpenSearch(hosts=[server.url], timeout=60)
            for name in sorted(days):
                if not client.indices.exists(index=name):
                    client.indices.create(index=name, body={"mappings": MAPPINGS})
        loaded = time.monotonic()
        per_server = feeder.preload(today, history)
        caught_up = datetime.now(UTC)  # the feeder's events for the time the loading took, so no gap is left
        feeder.index([e for step in range(int((caught_up - today).total_seconds()) // FEED_SECONDS)
                      for e in feeder.baseline(caught_up - timedelta(seconds=step * FEED_SECONDS))])
        print(f"{n:>4} history: {history} min, {per_server} events per server, loaded in {time.monotonic() - loaded:.0f} s",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            port = sink.base_url.split(":")[2].split("/")[0]
            ea_dir, wd_dir = root / "ea", root / "wd"
            (ea_dir / "rules").mkdir(parents=True)
            (wd_dir / "rules").mkdir(parents=True)
            host, ea_port = proxies["elastalert"].url.split("//")[1].split(":")
            (ea_dir / "config.yaml").write_text(
                f"rules_folder: {ea_dir / 'rules'}\nrun_every: {{seconds: {every}}}\nbuffer_time: {{minutes: 5}}\n"
                f"es_host: {host}\nes_port: {ea_port}\nwriteback_index: elastalert_status\nalert_time_limit: {{days: 1}}\n"
                "max_threads: 10\n")
            elastalert_rules(plan, ea_dir / "rules", f"http://127.0.0.1:{port}/services/EA/B/X", window)
            (wd_dir / "watchdog.yaml").write_text(
                f"rules_dir: rules\nstate_path: state.db\nworkers: 4\n"
                f"sources:\n  logs: {{type: search, hosts: ['{proxies['watchdog'].url}']}}\n"
                f"slack: {{webhook_url: 'http://127.0.0.1:{port}/services/WD/B/X'}}\n")
            watchdog_rules(plan, wd_dir / "rules", every, window)
            subprocess.run([str(ea_bin / "elastalert-create-index"), "--config", str(ea_dir / "config.yaml")],
                           check=True, capture_output=True, cwd=ea_dir)
            for proxy in proxies.values():
                proxy.reset()
                proxy.first_search_at = None
            feeder.start()
            started = time.time()
            outputs = {tool: open(logs / f"{tool}.log", "wb") if logs else subprocess.DEVNULL  # noqa: SIM115
                       for tool in ("elastalert", "watchdog")}
            procs["elastalert"] = subprocess.Popen([str(ea_bin / "elastalert"), "--config", str(ea_dir / "config.yaml")],
                                                   cwd=ea_dir, stdout=outputs["elastalert"], stderr=subprocess.STDOUT)
            procs["watchdog"] = subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(wd_dir / "watchdog.yaml")],
                                                 cwd=ROOT, stdout=outputs["watchdog"], stderr=subprocess.STDOUT)
            time.sleep(warmup)
            base = {tool: (cpu_seconds(p.pid), proxies[tool].total(), cpu_seconds(server_of[tool].pid), proxies[tool].bytes)
                    for tool, p in procs.items()}
            control0 = cpu_seconds(control.pid) if control is not None else 0.0
            samples: dict[str, list[int]] = {tool: [] for tool in procs}
            steady_start = time.monotonic()
            steady_wall = time.time()
            injected: dict[str, float] = {}
            if bursts:
                rng = random.Random()
                moments = sorted(rng.uniform(0.05, 0.85) * steady for _ in plan.burst)
                schedule = [(at, [name] + (plan.slow[i:i + 1] if i < len(plan.slow) else []))
                            for i, (at, name) in enumerate(zip(moments, plan.burst, strict=True))]
            else:
                schedule = [(steady * 0.25, plan.burst[: (len(plan.burst) + 1) // 2] + plan.slow[:1]),
                            (steady * 0.5, plan.burst[(len(plan.burst) + 1) // 2:] + plan.slow[1:])]
            while time.monotonic() - steady_start < steady:
                elapsed = time.monotonic() - steady_start
                while schedule and elapsed >= schedule[0][0]:
                    _, names = schedule.pop(0)
                    at = datetime.now(UTC)
                    events = []
                    for name in names:
                        slow = name.startswith("metric")  # freq and ratio services get errors
                        events += [{"@timestamp": now_text(at - timedelta(seconds=i % 5)), "service": name,
                                    "level": "info" if slow else "error", "duration_ms": 5000 if slow else 100,
                                    "message": f"service={name} error=Timeout"} for i in range(30)]
                    feeder.index(events)
                    injected.update({name: time.time() for name in names})
                for tool, proc in procs.items():
                    samples[tool].append(rss_kib(proc.pid))
                time.sleep(1 if bursts else 5)
            minutes = (time.monotonic() - steady_start) / 60
            result: dict[str, Any] = {}
            time.sleep(every + 5)  # let the last bursts be detected
            ended = {tool: (cpu_seconds(p.pid), proxies[tool].total(), cpu_seconds(server_of[tool].pid), proxies[tool].bytes)
                     for tool, p in procs.items()}
            control_cpu = (cpu_seconds(control.pid) - control0) / minutes if control is not None else None
            stopped = stop_both(procs)
            for tool in procs:
                cpu0, req0, server0, bytes0 = base[tool]
                cpu1, req1, server1, bytes1 = ended[tool]
                got = alerts(sink, "EA" if tool == "elastalert" else "WD")
                counts: dict[str, int] = {}
                for name, _ in got:
                    counts[name] = counts.get(name, 0) + 1
                latencies = [at - injected[name] for name, at in got if name in injected]
                parts = split(searches[tool], injected, got)
                waits = [p.wait_for_schedule for p in parts if p.wait_for_schedule is not None]
                processing = [p.processing for p in parts if p.processing is not None]
                by_burst: dict[float, list[float]] = {}
                for name, at in got:
                    if name in injected:
                        by_burst.setdefault(round(injected[name]), []).append(at - injected[name])
                first = proxies[tool].first_search_at
                expected = plan.expected()
                result[tool] = {
                    "rss_mib_median": median([s / 1024 for s in samples[tool] if s]),
                    "rss_growth_mib": (samples[tool][-1] - samples[tool][0]) / 1024 if samples[tool] else 0.0,
                    "cpu_seconds_per_minute": (cpu1 - cpu0) / minutes,
                    "requests_per_cycle": (req1 - req0) / (minutes * 60 / every),
                    "kib_per_cycle": (bytes1 - bytes0) / 1024 / (minutes * 60 / every),
                    "server_cpu_seconds_per_minute": (server1 - server0) / minutes,
                    "control_server_cpu_seconds_per_minute": control_cpu,
                    "own_server_cpu_seconds_per_minute": ((server1 - server0) / minutes - control_cpu
                                                          if control_cpu is not None else None),
                    "seconds_to_first_query": (first - started) if first else None,
                    "detection_latency_median": median(latencies) if latencies else None,
                    "detection_latency_p90": percentile(latencies, 90) if latencies else None,
                    "detection_latency_max": max(latencies) if latencies else None,
                    "wait_for_schedule_median": median(waits) if waits else None,
                    "wait_for_schedule_p90": percentile(waits, 90) if waits else None,
                    "processing_median": median(processing) if processing else None,
                    "processing_p90": percentile(processing, 90) if processing else None,
                    "latency_split": {p.rule: [round(p.total, 2), None if p.wait_for_schedule is None
                                               else round(p.wait_for_schedule, 2),
                                               None if p.processing is None else round(p.processing, 2)] for p in parts},
                    "messages": sum(1 for r in sink.calls("webhook")
                                    if f"/services/{'EA' if tool == 'elastalert' else 'WD'}/" in r.path),
                    "stop_seconds": stopped[tool],
                    "latency_per_burst": {f"+{at - round(steady_wall):.0f}s": [round(min(v), 2), round(max(v), 2), len(v)]
                                          for at, v in sorted(by_burst.items())},
                    "expected_alerted_once": sum(1 for name in expected if counts.get(name) == 1),
                    "expected": len(expected),
                    "history_minutes": history,
                    "duplicates": sum(c - 1 for c in counts.values() if c > 1),
                    "duplicated": sorted(name for name, c in counts.items() if c > 1),
                    "latencies": {name: round(at - injected[name], 1) for name, at in got if name in injected},
                    "missed": sorted(expected - set(counts)),
                    "unexpected": sorted(set(counts) - expected),
                }
            return result
    finally:
        if hogging is not None:
            hogging.kill()
            hogging.wait()
        feeder.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proxy in proxies.values():
            proxy.close()
        sink.close()
        for server in servers:
            server.close()


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--steady", type=float, default=150.0)
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--mix", choices=("classic", "ratio-spike"), default="classic",
                        help="ratio-spike: a fifth of the rules error ratios, a fifth spikes")
    parser.add_argument("--separate-servers", action="store_true",
                        help="one search server per tool, fed the same events (default: one server for both)")
    parser.add_argument("--logs", type=Path, default=None, help="write each tool's output to DIR/TOOL.log")
    parser.add_argument("--every", type=int, default=RUN_EVERY, help="seconds between evaluations (both tools)")
    parser.add_argument("--window-minutes", type=int, default=None, help="count, flatline and metric windows")
    parser.add_argument("--bursts", type=int, default=0, help="this many one-rule bursts at random moments")
    parser.add_argument("--hog", action="store_true", help="a busy loop beside both tools (one core taken)")
    parser.add_argument("--history-minutes", type=int, default=None,
                        help="minutes of the feeder's events loaded before the start (default: the longest window)")
    parser.add_argument("--burst", type=int, default=0,
                        help="two error bursts of this many rules each, all firing at once (issue 16: 70)")
    args = parser.parse_args()
    ea_bin = install_elastalert()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:
            runs[n].append(run_size(n, ea_bin, args.steady, args.warmup, args.mix, args.burst, args.logs,
                                    args.separate_servers, args.every, args.window_minutes, args.bursts, args.hog,
                                    args.history_minutes))
    keys = ["rss_mib_median", "rss_growth_mib", "cpu_seconds_per_minute", "server_cpu_seconds_per_minute",
            "control_server_cpu_seconds_per_minute", "own_server_cpu_seconds_per_minute",
            "requests_per_cycle", "kib_per_cycle", "seconds_to_first_query",
            "detection_latency_median", "detection_latency_p90", "detection_latency_max",
            "wait_for_schedule_median", "wait_for_schedule_p90", "processing_median", "processing_p90",
            "messages", "stop_seconds"]
    table: dict[str, Any] = {}
    print(f"{'N':>4} {'metric':<37} {'watchdog':>18} {'ElastAlert2':>18} {'ratio':>7}")
    for n in sizes:
        table[str(n)] = {}
        for key in keys:
            row = {}
            for tool in ("watchdog", "elastalert"):
                values = [r[tool][key] for r in runs[n] if r[tool][key] is not None]
                row[tool] = {"median": median(values) if values else None, "min": min(values) if values else None,
                             "max": max(values) if values else None}
            w, e = row["watchdog"]["median"], row["elastalert"]["median"]
            row["ratio"] = (w / e) if w is not None and e else None
            table[str(n)][key] = row

            def cell(r: dict[str, Any]) -> str:
                if r["median"] is None:
                    return "-"
                spread = f" [{r['min']:.1f}-{r['max']:.1f}]" if args.repeat > 1 else ""
                return f"{r['median']:.2f}{spread}"
            print(f"{n:>4} {key:<37} {cell(row['watchdog']):>18} {cell(row['elastalert']):>18} {fmt(row['ratio'], '.3f'):>7}")
        for tool in ("watchdog", "elastalert"):
            last = runs[n][-1][tool]
            print(f"{n:>4} correctness {tool:<14} {last['expected_alerted_once']}/{last['expected']} alerted once, "
                  f"{last['duplicates']} duplicate(s), missed {last['missed']}, unexpected {last['unexpected']}")
            print(f"{n:>4} latency per burst {tool:<14} (injected at: [min, max, alerts]) {last['latency_per_burst']}")
    name = "compare_elastalert" if args.mix == "classic" else f"compare_elastalert_{args.mix.replace('-', '_')}"
    if args.burst:
        name += f"_burst{args.burst}"
    if args.separate_servers:
        name += "_separate"
    if args.window_minutes:
        name += f"_window{args.window_minutes}m_every{args.every}s"
    if args.hog:
        name += "_hog"
    save(name, {"mix": args.mix, "burst": args.burst, "separate_servers": args.separate_servers, "sizes": sizes,
                "repeat": args.repeat, "steady_seconds": args.steady, "run_every": args.every,
                "window_minutes": args.window_minutes, "bursts": args.bursts, "hog": args.hog,
                "history_minutes": args.history_minutes,
                "load": os.getloadavg(), "table": table,
                "runs": {str(n): r for n, r in runs.items()}})


if __name__ == "__main__":
    main()
