"""``python -m demo``: start the stand-ins, load demo data, run ``watchdog run --once``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from demo.data import WAREHOUSE_SQL
from tests.servers.postgres import LocalPostgres
from tests.servers.search import start_search

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    state_dir = ROOT / ".demo"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir()
    sys.stdout.flush()
    print("demo: starting PostgreSQL, the search server and the DMS stand-in on 127.0.0.1", file=sys.stderr)
    pg = LocalPostgres.create(tempfile.gettempdir())
    search = start_search()
    moto = subprocess.Popen([sys.executable, "-m", "tests.servers.moto_dms", "--port", "0"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})
    try:
        assert moto.stdout is not None
        dms_url = moto.stdout.readline().strip()
        pg.psql("create database warehouse")
        pg.psql(WAREHOUSE_SQL, dbname="warehouse")
        env = {
            **os.environ,
            "WATCHDOG_DEMO_SEARCH_URL": search.url,
            "WATCHDOG_DEMO_WAREHOUSE_DSN": pg.dsn_for("warehouse"),
            "WATCHDOG_DEMO_DMS_URL": dms_url,
            "WATCHDOG_DEMO_STATE": str(state_dir / "state.db"),
            "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
        }
        config = str(ROOT / "demo" / "watchdog.yaml")
        watchdog = [sys.executable, "-m", "watchdog"]
        print("demo: watchdog validate", file=sys.stderr, flush=True)
        subprocess.run([*watchdog, "validate", "-c", config], env=env, check=True)
        print("demo: watchdog run --once (alerts print below, one line each)", file=sys.stderr, flush=True)
        code = subprocess.run([*watchdog, "run", "--once", "-c", config], env=env).returncode
        print("demo: watchdog status", file=sys.stderr, flush=True)
        subprocess.run([*watchdog, "status", "-c", config], env=env, check=True)
        return code
    finally:
        if moto.stdin:
            moto.stdin.close()
        moto.wait(10)
        search.close()
        pg.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
