"""The daemon never dies from one rule: guards around scheduling, evaluating and rendering; a bounded metrics listener."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import wait_idle
from tests.servers.postgres import free_port
from watchdog.engine import GUARD_RETRY, Engine
from watchdog.metrics import MAX_CONNECTIONS, MetricsServer
from watchdog.rule import Schedule
from watchdog.ruletypes.base import Evaluation, Finding
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


class Unprintable:
    """A finding value no renderer can show: its text raises."""

    def __str__(self) -> str:
        raise RuntimeError("cannot show this")

    __format__ = None  # type: ignore[assignment]


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore(str(tmp_path / "state.db"))
    yield s
    s.close()


def test_a_rule_that_cannot_be_rendered_is_in_error_and_the_others_carry_on(store: StateStore) -> None:
    source = ScriptedSource()
    source.values = {"odd": Evaluation(findings=(Finding(group="", value=Unprintable(), summary="odd"),)),  # type: ignore[arg-type]
                     "fine": 50}
    clock = [NOW]
    engine = Engine([scripted_rule("odd"), scripted_rule("fine")], store, OneSource(source), clock=lambda: clock[0],
                    rule_types=TYPES)
    for _ in range(3):
        clock[0] += timedelta(minutes=1)
        engine.dispatch(engine.due(clock[0]), clock[0])
        applied = {a.rule: a for a in wait_idle(engine)}
        assert applied["odd"].error is not None and "internal error" in applied["odd"].error
        assert applied["fine"].error is None
    records = store.rule_records()
    assert records["odd"].health.errors == 3  # in error like any failing rule: notified once, after repeated failures
    assert store.groups("fine")["fine"][""].state.value == "firing"
    assert engine.next_run["odd"] > clock[0]  # still scheduled


def test_a_schedule_that_cannot_be_computed_never_stops_the_others(store: StateStore) -> None:
    source = ScriptedSource()
    never = scripted_rule("never")
    never = type(never)(**{**never.__dict__, "schedule": Schedule(cron="0 0 31 2 *")})  # bypasses validation
    engine = Engine([never, scripted_rule("fine")], store, OneSource(source), clock=lambda: NOW, rule_types=TYPES)
    assert engine.next_run["never"] == NOW + GUARD_RETRY
    assert "fine" in engine.next_run


def test_idle_connections_cannot_exhaust_the_metrics_listener(store: StateStore) -> None:
    engine = Engine([], store, OneSource(ScriptedSource()), rule_types=TYPES)
    port = free_port()
    before = threading.active_count()
    server = MetricsServer(f"127.0.0.1:{port}", engine, store.outbox_depth, lambda: (True, "test"), connection_timeout=0.5)
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]  # never send a byte
        idle.append(socket.create_connection(("127.0.0.1", port)))
        idle[-1].sendall(b"GET /metrics HTTP/1.1\r\nHost: x")  # and one that never finishes its request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:  # served at once
            assert b"watchdog_rules" in answer.read()
        assert threading.active_count() - before == 1  # the listener's one thread, whatever the clients do
        for conn in idle:  # each is closed by the server once its time is up
            conn.settimeout(5)
            assert conn.recv(1) == b""
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 20)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        assert len(server.connections) <= MAX_CONNECTIONS
        for conn in flood:
            conn.close()
    finally:
        server.close()


def test_metrics_listen_on_ipv6_loopback(store: StateStore) -> None:
    engine = Engine([], store, OneSource(ScriptedSource()), rule_types=TYPES)
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    server = MetricsServer(f"[::1]:{port}", engine, store.outbox_depth, lambda: (True, "test"))
    try:
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.close()
