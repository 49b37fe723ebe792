"""Benchmark: the loader fuzzed with at least 10,000 generated rule and config files.

Run: .venv/bin/python -m bench.fuzz_loading [--files 10000] [--seed 1]

Files come from ``tests/fuzzing.mutate`` (one in five a config file), plus,
every 250th file, a special one: a FIFO, a symbolic link to /dev/zero, a
50 MiB file, a directory named like a rule, an alias bomb at full size. A
worker process loads each file (``check_rule_file`` / ``check_config_file``:
no exception, problems with file and line, and whatever loads can be
scheduled and rendered). The parent gives each file 2 s: a file that takes
longer is a hang, the worker is killed and a new one started. Reported:
exceptions (by kind), hangs, the slowest file, per-file median and p99, and
the worker's peak RSS (ru_maxrss) against its RSS after start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import median, percentile, save

HANG_SECONDS = 2.0


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker() -> None:
    """Read ``kind path`` lines on stdin; answer one JSON line per file on stdout."""
    from tests.fuzzing import check_config_file, check_rule_file, config_for_rules

    config = config_for_rules(tempfile.mkdtemp(prefix="fuzz-config-"))
    print(json.dumps({"ready": True, "rss_kib": _rss_kib()}), flush=True)
    for line in sys.stdin:
        kind, path = line.rstrip("\n").split(" ", 1)
        started = time.perf_counter()
        try:
            outcome = check_config_file(path) if kind == "config" else check_rule_file(path, config)
            error = None
        except BaseException as exc:  # what the benchmark counts
            outcome, error = "exception", f"{type(exc).__name__}: {str(exc)[:300]}"
        print(json.dumps({"outcome": outcome, "error": error, "seconds": time.perf_counter() - started,
                          "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fuzz_loading", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        self.start_rss_kib = json.loads(self.read(60.0) or "{}").get("rss_kib", 0)

    def read(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else None

    def load(self, kind: str, path: str) -> dict | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {path}\n")
        self.proc.stdin.flush()
        line = self.read(HANG_SECONDS)
        return json.loads(line) if line else None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def special(index: int, directory: Path, rng: random.Random) -> tuple[str, str]:
    """One of the files that are bad for what they are rather than what they say."""
    path = directory / f"special{index}.yaml"
    choice = (index // 250) % 5
    if choice == 0:
        os.mkfifo(path)
    elif choice == 1:
        os.symlink("/dev/zero", path)
    elif choice == 2:
        with open(path, "wb") as fh:
            fh.truncate(50 * 1024 * 1024)
    elif choice == 3:  # a directory named like a rule file is searched like any directory
        path.mkdir()
        os.mkfifo(path / "inner.yaml")
    else:
        levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
        path.write_text("name: bomb\nl0: &l0 [x, x, x, x, x, x, x, x, x]\n" + levels)
    return "rule", str(path)


def run(files: int, seed: int) -> dict:
    from tests.fuzzing import CONFIG_SEED, mutate, seeds

    rng = random.Random(seed)
    texts = seeds()
    outcomes: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    hangs: list[str] = []
    seconds: list[float] = []
    slowest = (0.0, "")
    peak_kib = 0
    start_rss = []
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        directory = Path(tmp)
        current = Worker()
        start_rss.append(current.start_rss_kib)
        started = time.monotonic()
        for index in range(files):
            if index % 250 == 249:
                kind, path = special(index, directory, rng)
            else:
                kind = "config" if index % 5 == 0 else "rule"
                data = mutate(rng, CONFIG_SEED if kind == "config" else rng.choice(texts))
                path = str(directory / f"{kind}{index}.yaml")
                Path(path).write_bytes(data)
            answer = current.load(kind, path)
            if answer is None:
                hangs.append(path)
                current.kill()
                current = Worker()
                continue
            outcomes[answer["outcome"]] += 1
            if answer["error"]:
                exceptions[answer["error"]] += 1
            seconds.append(answer["seconds"])
            slowest = max(slowest, (answer["seconds"], path))
            peak_kib = max(peak_kib, answer["maxrss_kib"])
            if kind == "rule" and not path.startswith(str(directory / "special")):
                os.unlink(path)  # keep the directory small; specials stay for the post-mortem
        elapsed = time.monotonic() - started
        current.kill()
    return {
        "files": files, "seed": seed, "elapsed_seconds": round(elapsed, 1), "outcomes": dict(outcomes),
        "exceptions": sum(exceptions.values()), "exception_kinds": dict(exceptions.most_common(20)),
        "hangs_over_2s": len(hangs), "hung_files": hangs[:20],
        "per_file_ms": {"median": round(median(seconds) * 1000, 3), "p99": round(percentile(seconds, 99) * 1000, 3),
                        "max": round(slowest[0] * 1000, 1)},
        "worker_rss_mib": {"after_start": round(median(start_rss) / 1024, 1), "peak": round(peak_kib / 1024, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    result = run(args.files, args.seed)
    path = save("fuzz_loading", result)
    print(json.dumps(result, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
