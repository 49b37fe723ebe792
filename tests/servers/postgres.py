"""A throwaway PostgreSQL cluster from Debian's packages, for tests and the demo.

``initdb`` refuses to run as root, so as root the cluster is created and run
as the ``postgres`` user (which the Debian package creates).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


def find_bindir() -> str:
    """The newest PostgreSQL server bin directory; raises RuntimeError when none is installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for bindir in reversed(candidates):
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    raise RuntimeError("PostgreSQL is not installed: run scripts/setup (apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    datadir: str
    port: int
    bindir: str
    user: str

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user={self.user}"

    def dsn_for(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={self.user}"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=check, capture_output=True, text=True)

    @classmethod
    def create(cls, parent: str | None = None) -> LocalPostgres:
        bindir = find_bindir()
        base = tempfile.mkdtemp(prefix="watchdog-pg-", dir=parent)
        datadir = os.path.join(base, "data")
        user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            os.chmod(base, 0o755)
            shutil.chown(base, "postgres", "postgres")
        pg = cls(datadir=datadir, port=free_port(), bindir=bindir, user=user)
        pg._run([os.path.join(bindir, "initdb"), "-D", datadir, "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8"])
        with open(os.path.join(datadir, "postgresql.conf"), "a") as fh:
            fh.write(f"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nport = {pg.port}\n"
                     f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\nmax_connections = 100\n")
        pg.start()
        return pg

    def start(self) -> None:
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-t", "60",
                   "-l", os.path.join(os.path.dirname(self.datadir), "log"), "start"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not start")

    def stop(self, mode: str = "fast") -> None:
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-m", mode, "stop"], check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(os.path.dirname(self.datadir), ignore_errors=True)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql (as the cluster owner) and return its output."""
        psql = os.path.join(self.bindir, "psql")
        result = subprocess.run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.dsn_for(dbname), "-c", sql],
                                check=True, capture_output=True, text=True)
        return result.stdout
