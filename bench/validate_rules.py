"""Benchmark: validating 1,000 rule files (target: under 2 s).

Run: .venv/bin/python -m bench.validate_rules [--rules 1000] [--repeat 5]
Measures ``load_rules`` in-process (parse, schema, logical checks, typed
objects) and the whole ``watchdog validate`` command, medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import median, save
from watchdog.config import load_config
from watchdog.loader import load_rules

CONFIG = """\
rules_dir: rules
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9200"]}
  warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=w"}
  aws: {type: dms, region: us-east-1}
"""

TEMPLATES = [
    """name: errors-{i}
type: threshold
source: logs
index: "app-logs-%Y.%m.%d"
query: "level:error AND service:svc{i}"
window: 5m
delay: 1m
threshold: {{above: 50}}
group_by: team
schedule: {{every: 1m}}
message: "{{count}} errors in {{window}} for {{group}}"
""",
    """name: latency-{i}
type: metric
source: logs
index: "app-logs-*"
filter: [{{term: {{service: svc{i}}}}}]
metric: {{percentile: {{field: duration_ms, percent: 95}}}}
window: 10m
threshold: {{above: 800}}
schedule: {{cron: "*/5 * * * *", timezone: UTC}}
""",
    """name: fresh-{i}
type: freshness
source: warehouse
checks:
  - {{name: t{i}, table: analytics.fact_{i}, loaded_at: updated_at}}
  - {{name: s{i}, sql: "select source, max(finished_at) from etl.runs group by source"}}
warn_after: 2h
error_after: 6h
""",
    """name: dms-{i}
type: dms_task
source: aws
tasks: [task-{i}]
alert_on: [failed, stopped_with_error]
""",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "rules").mkdir()
        (root / "watchdog.yaml").write_text(CONFIG)
        for i in range(args.rules):
            (root / "rules" / f"rule-{i:04d}.yaml").write_text(TEMPLATES[i % len(TEMPLATES)].format(i=i))
        config = load_config(str(root / "watchdog.yaml"))
        in_process = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = load_rules([config.rules_dir], config)
            in_process.append(time.perf_counter() - start)
            assert len(result.rules) == args.rules and not result.problems, result.problems[:3]
        command = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "watchdog", "validate", "-c", str(root / "watchdog.yaml")],
                           check=True, capture_output=True)
            command.append(time.perf_counter() - start)
    out = {"rules": args.rules, "repeat": args.repeat,
           "load_rules_seconds": {"median": median(in_process), "min": min(in_process), "max": max(in_process)},
           "validate_command_seconds": {"median": median(command), "min": min(command), "max": max(command)}}
    print(f"{args.rules} rule files: load_rules median {median(in_process):.3f}s "
          f"(range {min(in_process):.3f}-{max(in_process):.3f}); "
          f"'watchdog validate' median {median(command):.3f}s (range {min(command):.3f}-{max(command):.3f})")
    save("validate_rules", out)


if __name__ == "__main__":
    main()
