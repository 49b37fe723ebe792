"""Session-wide real services on 127.0.0.1, started once and shared by every test.

PostgreSQL (Debian's packages), osmem-server (Elasticsearch/OpenSearch REST
API) behind a counting proxy, a moto DMS server with a failure hook, and a
local Slack API server. Each test resets what it uses.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.servers.moto_dms import MotoDms
from tests.servers.postgres import LocalPostgres
from tests.servers.receivers import PagerDutyServer, SmtpServer, WebhookServer
from tests.servers.search import CountingProxy, start_search
from tests.servers.slack_api import SlackServer
from watchdog.logfmt import LogfmtFormatter
from watchdog.state import StateStore
from watchdog.state_db import PostgresDatabase


@pytest.fixture(autouse=True)
def private_default_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default path a test (or a daemon it starts) could reach points into a temporary directory.

    The state directory (``$STATE_DIRECTORY``, else /var/lib/watchdog), the home directory (~/.aws and the
    like) and AWS's shared files: a test never reads or writes the machine's own, and another process using
    them on a shared machine never changes a test's outcome.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.delenv("WATCHDOG_CONFIG", raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    pg = LocalPostgres.create()
    yield pg
    pg.destroy()


@pytest.fixture
def pg_db(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh database for one test; yields its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"create database {name}")
    yield postgres.dsn_for(name)
    postgres.psql(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
def state_db(postgres: LocalPostgres) -> Iterator[str]:
    """One database for the state-store tests on PostgreSQL (each store gets a schema of its own); yields its DSN."""
    postgres.psql("create database state_tests")
    yield postgres.dsn_for("state_tests")


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], StateStore]]:
    """Makes empty state stores, on SQLite (a file each) and on PostgreSQL (a schema each): the store's tests run on both."""
    stores: list[StateStore] = []

    def make() -> StateStore:
        if request.param == "postgres":
            dsn = request.getfixturevalue("state_db")
            store = StateStore(db=PostgresDatabase(dsn, f"s_{uuid.uuid4().hex[:12]}"))
        else:
            store = StateStore(str(tmp_path_factory.mktemp("state") / "state.db"))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture(scope="session")
def search_server() -> Iterator[object]:
    server = start_search()
    yield server
    server.close()


@pytest.fixture
def search(search_server: object) -> Iterator[CountingProxy]:
    """A clone of the (empty) search cluster behind a request-counting proxy."""
    clone = search_server.clone()  # type: ignore[attr-defined]
    proxy = CountingProxy(clone.url)
    yield proxy
    proxy.close()
    clone.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoDms]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoDms()
    yield server
    server.close()


@pytest.fixture
def moto(moto_server: MotoDms) -> Iterator[MotoDms]:
    moto_server.reset()
    yield moto_server
    moto_server.reset()


@pytest.fixture(scope="session")
def slack_server() -> Iterator[SlackServer]:
    server = SlackServer()
    yield server
    server.close()


@pytest.fixture
def slack(slack_server: SlackServer) -> Iterator[SlackServer]:
    slack_server.reset()
    yield slack_server
    slack_server.reset()


@pytest.fixture(scope="session")
def pagerduty_server() -> Iterator[PagerDutyServer]:
    server = PagerDutyServer()
    yield server
    server.close()


@pytest.fixture
def pagerduty(pagerduty_server: PagerDutyServer) -> Iterator[PagerDutyServer]:
    """A local PagerDuty Events API v2 endpoint (its URL: ``pagerduty.url + "/v2/enqueue"``)."""
    pagerduty_server.reset()
    yield pagerduty_server
    pagerduty_server.reset()


@pytest.fixture(scope="session")
def webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture
def webhook(webhook_server: WebhookServer) -> Iterator[WebhookServer]:
    webhook_server.reset()
    yield webhook_server
    webhook_server.reset()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A local SMTP server (aiosmtpd) that takes the login watchdog / smtp-password-for-tests."""
    server = SmtpServer("watchdog", "smtp-password-for-tests")
    yield server
    server.close()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log line watchdog writes during the test, formatted as in production."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)
