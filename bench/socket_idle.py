"""What Slack buttons cost an idle daemon: the same daemon with and without Socket Mode, side by side.

Run: .venv/bin/python -m bench.socket_idle [--seconds 120] [--repeat 3]

Both daemons run at the same time against a local Slack API server and a local
Socket Mode server (tests/servers), with no rules: what is measured is the
daemon's idle floor, with and without the connection. Each run samples CPU seconds and
RSS from /proc after a 10 s settling period; the medians of ``--repeat`` runs
and the ratio are printed and saved to bench/results/socket_idle.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, save
from bench.soak import cpu_seconds, rss_kib
from tests.servers.slack_api import SlackServer
from tests.servers.socket_mode import SocketModeServer

ROOT = Path(__file__).resolve().parent.parent
SETTLE = 10.0


def project(root: Path, slack: SlackServer, buttons: bool) -> Path:
    (root / "rules").mkdir(parents=True, exist_ok=True)
    app = "  app_token: xapp-bench\n" if buttons else ""
    (root / "watchdog.yaml").write_text(
        "rules_dir: rules\nstate_path: state.db\n"
        f"slack:\n  token: xoxb-bench\n{app}  channel: C0BENCH\n  base_url: {slack.base_url}\n")
    return root / "watchdog.yaml"


def one_run(slack: SlackServer, seconds: float) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as plain_dir, tempfile.TemporaryDirectory() as buttons_dir:
        procs = {
            name: subprocess.Popen([sys.executable, "-m", "watchdog", "run", "-c", str(project(Path(d), slack, name == "buttons"))],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, d in (("plain", plain_dir), ("buttons", buttons_dir))}
        try:
            time.sleep(SETTLE)
            start = {n: cpu_seconds(p.pid) for n, p in procs.items()}
            time.sleep(seconds)
            out = {n: {"cpu_seconds_per_minute": (cpu_seconds(p.pid) - start[n]) * 60 / seconds,
                       "rss_mib": rss_kib(p.pid) / 1024} for n, p in procs.items()}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    slack, sockets = SlackServer(), SocketModeServer()
    slack.socket_url = sockets.url
    try:
        runs = [one_run(slack, args.seconds) for _ in range(args.repeat)]
        if sockets.connects < args.repeat:
            raise SystemExit(f"the daemon with buttons connected {sockets.connects} times in {args.repeat} runs")
    finally:
        sockets.close()
        slack.close()
    result: dict[str, Any] = {"seconds": args.seconds, "repeat": args.repeat, "runs": runs}
    print(f"{'measure':32} {'plain':>10} {'buttons':>10} {'ratio':>8}")
    for measure in ("cpu_seconds_per_minute", "rss_mib"):
        plain = median([r["plain"][measure] for r in runs])
        buttons = median([r["buttons"][measure] for r in runs])
        result[measure] = {"plain": plain, "buttons": buttons}
        print(f"{measure:32} {plain:10.3f} {buttons:10.3f} {buttons / plain if plain else float('nan'):8.2f}")
    print(f"saved {save('socket_idle', result)}")


if __name__ == "__main__":
    main()
