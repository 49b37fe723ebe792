"""The ``state`` and ``ha`` config keys, and the lease's flapping alarm (no daemon: a real SQLite store, a fake clock)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog.config import load_config
from watchdog.problems import InvalidFileError
from watchdog.lease import FLAP_TAKEOVERS, Fence, LeaseKeeper
from watchdog.state import StateStore


def config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    path = tmp_path / "watchdog.yaml"
    path.write_text("rules_dir: rules\n" + body)
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("ha: {lease: 15s}\n", "ha needs 'state: {type: postgres, ...}'"),
    ("state_path: s.db\nstate: {type: postgres, dsn: 'host=db'}\n", "give 'state' or 'state_path', not both"),
    ("state: {type: postgres}\n", "give 'dsn' or 'dsn_file'"),
    ("state: {type: sqlite, dsn: 'host=db'}\n", "'dsn', 'dsn_file' and 'schema' are for state type postgres"),
    ("state: {type: postgres, dsn: 'host=db', schema: 'a b'}\n", "a lower-case SQL identifier"),
    ("state: {type: postgres, dsn: 'host=db'}\nha: {instance: 'web 1'}\n", "a name without spaces"),
    ("state: {type: postgres, dsn: 'host=db password=hunter2 x'}\n", "the value is not shown"),
])
def test_bad_state_and_ha_keys_are_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InvalidFileError) as caught:
        load_config(str(config(tmp_path, body)))
    assert message in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_postgres_state_reads_its_dsn_file_even_for_status(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("host=db dbname=w password=s3cret\n")
    (tmp_path / "dsn").chmod(0o600)
    path = config(tmp_path, "state: {type: postgres, dsn_file: dsn}\nha: {lease: 5s, instance: web-1}\n")
    for secrets in (True, False):
        loaded = load_config(str(path), secrets=secrets)
        assert loaded.state.dsn == "host=db dbname=w password=s3cret" and loaded.state.shared
        assert loaded.ha.lease.total_seconds() == 5 and loaded.ha.instance == "web-1"
        assert "s3cret" not in repr(loaded) and loaded.state.where == "PostgreSQL schema watchdog"
    single = load_config(str(config(tmp_path, "")))
    assert single.state.type == "sqlite" and single.state.path == single.state_path and not single.state.shared


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seconds=st.integers(0, 100_000), unit=st.sampled_from(["s", "m", "h"]))
def test_a_lease_shorter_than_5s_is_refused_and_any_other_kept(tmp_path: Path, seconds: int, unit: str) -> None:
    path = config(tmp_path, f"state: {{type: postgres, dsn: 'host=db'}}\nha: {{lease: {seconds}{unit}}}\n")
    total = seconds * {"s": 1, "m": 60, "h": 3600}[unit]
    try:
        loaded = load_config(str(path))
    except InvalidFileError as exc:
        assert total < 5 or total > 400 * 86400, exc
        return
    assert loaded.ha.lease.total_seconds() == total >= 5


def test_a_lease_that_changes_hands_three_times_within_twenty_leases_is_flapping(tmp_path: Path) -> None:
    now = [1000.0]
    store = StateStore(str(tmp_path / "state.db"))
    keepers = {name: LeaseKeeper(store, Fence(name, monotonic=lambda: now[0]), 5.0) for name in ("one", "two")}
    keepers["one"].attempt()
    for turn in range(FLAP_TAKEOVERS):
        holder, other = ("one", "two") if turn % 2 == 0 else ("two", "one")
        store.release_lease(holder, keepers[holder].fence.epoch)
        assert keepers[other].attempt().became_leader
        assert keepers[holder].attempt().leader == other
        now[0] += 10.0
    assert keepers["one"].flapping()  # (it saw every change; "two" saw its first epoch as a start)
    now[0] += 20 * 5.0  # quiet for twenty leases: no longer flapping
    assert not keepers["one"].flapping()
    store.close()
