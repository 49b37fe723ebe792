"""Delivery truth: every notification reaches Slack exactly once, on time, whatever fails and whatever joins meanwhile.

Counted by the outbox ids in Slack's message metadata: the one record Slack
itself keeps of what watchdog posted.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock, evaluate_now, write_project
from tests.servers.postgres import free_port
from tests.servers.slack_api import SlackServer
from tests.test_daemon import REPO, daemon, execute, outbox, project, wait_for  # noqa: F401 (fixtures)
from tests.test_engine import tick
from watchdog.config import SlackConfig
from watchdog.daemon import Delivery
from watchdog.engine import Engine
from watchdog.lifecycle import Health, Kind, Notice
from watchdog.notify.outbox import Outbox
from watchdog.notify.render import render
from watchdog.notify.slack import METADATA_EVENT, SlackNotifier
from watchdog.state import StateStore
from watchdog.times import from_text

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
WAIT = timedelta(seconds=3)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def ids_in_slack(slack: SlackServer) -> Counter[int]:
    """How many messages Slack holds for each outbox id (from the metadata of every message it accepted)."""
    counts: Counter[int] = Counter()
    for message in slack.messages.values():
        meta = message.get("metadata") or {}
        if meta.get("event_type") == METADATA_EVENT:
            counts.update(meta["event_payload"]["ids"])
    return counts


def sent_ids(store: StateStore) -> set[int]:
    return {r[0] for r in store.db.execute("select id from outbox where sent_at is not null and kind <> 'update'")}


# --- the state machine: random failures, no other traffic ---------------------------------------------------------

FAILURES = {
    "rate limited": {"status": 429, "retry_after": 0},
    "server error": {"status": 500},
    "answer lost": {"status": 500, "taken": True},  # Slack took the post; its answer never arrived
    "refused message": {"error": "channel_not_found"},
}


class OutboxMachine(RuleBasedStateMachine):
    """Notifications recorded in bursts, Slack failing at random; the outbox driven only by its own ``wake_at``."""

    slack: SlackServer
    directory: Path
    runs = itertools.count()

    @initialize()
    def start(self) -> None:
        self.slack.reset()
        self.clock = Clock(T0)
        self.store = StateStore(str(self.directory / f"state-{next(self.runs)}.db"))
        notifier = SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=self.slack.base_url,
                                             group_wait=WAIT))
        self.outbox = Outbox(self.store, notifier, clock=self.clock)
        self.firing: list[str] = []  # episodes whose firing was recorded and not yet resolved
        self.serial = itertools.count()
        self.seen = 0  # the newest outbox id when the outbox last delivered

    def _record(self, name: str, kind: Kind, episode: str) -> None:
        rule_ = scripted_rule(name)
        payload = render(rule_, Notice(kind=kind, group="", at=self.clock.now, severity=rule_.severity, value=50,
                                       summary="value 50", episode=episode))
        self.store.record_evaluation(name, ran_at=self.clock.now, next_run=self.clock.now + timedelta(minutes=1),
                                     duration=0.0, health=Health(), states={},
                                     notifications=[("", kind.value, episode, payload)])

    @rule(count=st.integers(1, 4))
    def fire(self, count: int) -> None:
        for _ in range(count):
            n = next(self.serial)
            episode = f"e{n}"
            self._record(f"rule-{n}", Kind.FIRING, episode)
            self.firing.append(episode)

    @precondition(lambda self: self.firing)
    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        episode = data.draw(st.sampled_from(self.firing))
        self.firing.remove(episode)
        self._record(f"rule-{episode[1:]}", Kind.RESOLVED, episode)

    @rule(failures=st.lists(st.sampled_from(sorted(FAILURES)), min_size=1, max_size=3))
    def slack_fails(self, failures: list[str]) -> None:
        self.slack.fail_next(*[{**FAILURES[f], "method": "chat.postMessage"} for f in failures])

    @rule(late=st.sampled_from([timedelta(0), timedelta(milliseconds=500)]))
    def wake(self, late: timedelta) -> None:
        """The delivery thread wakes when the outbox said (at most ``late`` after it), and delivers."""
        if self.outbox.wake_at is not None:
            self.clock.now = max(self.clock.now, self.outbox.wake_at + late)
        self.outbox.deliver_due()  # (with nothing planned: as after a recording, when the engine wakes it)
        self._delivered()

    def _delivered(self) -> None:
        self.seen = self.store.db.execute("select coalesce(max(id), 0) from outbox").fetchone()[0]

    def _pending(self) -> list[tuple[int, str, datetime, int, str | None, datetime]]:
        rows = self.store.db.execute("select id, episode, next_attempt, attempts, message, created from outbox "
                                     "where sent_at is null and failed = 0 order by id").fetchall()
        return [(r[0], r[1], from_text(r[2]), r[3], r[4], from_text(r[5])) for r in rows]  # type: ignore[misc]

    @invariant()
    def nothing_due_is_left_waiting(self) -> None:
        """After a delivery, whatever was due was attempted, and ``wake_at`` is no later than the next due moment.

        (Notifications recorded since the last delivery are left out: recording one wakes the delivery thread.)
        """
        if not hasattr(self, "store"):
            return
        earliest = None
        episodes: dict[str, datetime] = {}  # an episode's notifications go in order: none before an earlier one
        for id_, episode, next_attempt, attempts, message, created in self._pending():
            if id_ > self.seen:
                continue
            due = next_attempt if attempts or message else max(next_attempt, created + WAIT)
            due = episodes[episode] = max(due, episodes.get(episode, due))
            earliest = due if earliest is None else min(earliest, due)
        if earliest is not None:
            assert self.outbox.wake_at is not None and self.outbox.wake_at <= max(earliest, self.clock.now), (
                self.outbox.wake_at, earliest, self.clock.now)
            assert earliest > self.clock.now or self.outbox.wake_at <= self.clock.now  # nothing due left behind

    @invariant()
    def every_id_is_in_slack_at_most_once_and_every_sent_one_exactly_once(self) -> None:
        if not hasattr(self, "store"):
            return
        counts = ids_in_slack(self.slack)
        assert all(n == 1 for n in counts.values()), counts
        assert sent_ids(self.store) <= set(counts), (sent_ids(self.store), counts)

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        self.slack.failures.clear()
        for _ in range(50):  # Slack is well again: everything left goes out, each at its due time
            if self.store.outbox_depth() == 0:
                break
            self.wake(timedelta(0))
        assert self.store.outbox_depth() == 0
        failed = {r[0] for r in self.store.db.execute("select id from outbox where failed <> 0")}
        counts = ids_in_slack(self.slack)
        posted = {r[0] for r in self.store.db.execute("select id from outbox where kind <> 'update'")} - failed
        assert set(counts) == posted and all(n == 1 for n in counts.values())
        self.store.close()


def test_random_failures_with_no_other_traffic_deliver_each_notification_once_and_on_time(slack: SlackServer,
                                                                                           tmp_path: Path) -> None:
    OutboxMachine.slack = slack
    OutboxMachine.directory = tmp_path
    run_state_machine_as_test(OutboxMachine, settings=settings(max_examples=40, stateful_step_count=25, deadline=None))


# --- retries on time, with nothing else happening (the delivery thread of the daemon, on the wall clock) ----------

def _alone(tmp_path: Path, slack: SlackServer, slack_block: str) -> tuple[StateStore, Delivery]:
    config = write_project(tmp_path, f"rules_dir: rules\nstate_path: state.db\nslack: {slack_block}\n", {})
    store = StateStore(config.state_path)
    source = ScriptedSource()
    source.values = {"r": 50}
    evaluate_now(Engine([scripted_rule("r")], store, OneSource(source), rule_types=TYPES))  # one alert; nothing else
    return store, Delivery(config, stop=threading.Event())


@pytest.mark.parametrize("mode", ["token", "webhook"])
def test_one_alert_and_nothing_else_each_retry_on_time(tmp_path: Path, slack: SlackServer, mode: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.outbox.FIRST_BACKOFF", timedelta(seconds=0.5))
    method = "chat.postMessage" if mode == "token" else "webhook"
    block = (f'{{token: xoxb-test, channel: "#alerts", base_url: "{slack.base_url}", group_wait: 0s}}' if mode == "token"
             else f'{{webhook_url: "{slack.webhook_url}", group_wait: 0s}}')
    slack.fail_next({"status": 429, "retry_after": 1, "method": method}, {"status": 500, "method": method},
                    {"status": 500, "method": method})
    store, delivery = _alone(tmp_path, slack, block)
    delivery.start()
    try:
        wait_for(lambda: store.outbox_depth() == 0, timeout=60, what="the alert, after three failures")
    finally:
        delivery.stop.set()
        delivery.wake.set()
        delivery.join(10)
    calls = [c.at for c in slack.calls(method)]
    assert len(calls) == 4
    # Retry-After 1 s, then the outbox's backoff (0.5 s doubled, then doubled again): each retry within a few seconds of its due time
    # (never waiting for other traffic, which never comes).
    for gap, due in zip([b - a for a, b in itertools.pairwise(calls)], [1.0, 1.0, 2.0], strict=True):
        assert due - 0.1 <= gap <= due + 4.0, (gap, due)
    if mode == "token":
        assert list(ids_in_slack(slack).values()) == [1]
    else:
        assert len([c for c in slack.calls("webhook")]) == 4  # (a webhook cannot be looked up: it was refused 3 times)
    store.close()


# --- lost answers during a burst: kill -9 after Slack took a digest, and a Slack slower than the client -------------

def _burst(tmp_path: Path, slack: SlackServer, names: list[str]):
    clock = Clock(T0)
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    engine = Engine([scripted_rule(n) for n in names], store, OneSource(source), clock=clock, rule_types=TYPES)
    notifier = SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url, group_wait=WAIT))
    return clock, store, source, engine, Outbox(store, notifier, clock=clock)


def test_a_post_slower_than_the_client_during_a_burst_posts_every_alert_once(tmp_path: Path, slack: SlackServer,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.TIMEOUT_SECONDS", 1)
    names = [f"r{i}" for i in range(6)]
    clock, store, source, engine, box = _burst(tmp_path, slack, names)
    source.values = {n: 50 for n in names[:3]}
    clock.now += timedelta(minutes=1)
    tick(engine)
    clock.now += WAIT
    slack.delays["chat.postMessage"] = 2.0  # Slack takes the digest of three, and answers after the client gave up
    assert box.deliver_due() == 0
    assert sum(ids_in_slack(slack).values()) == 3
    time.sleep(1.2)
    slack.delays.clear()
    source.values = {n: 50 for n in names}  # three more fire before the retry: they are a message of their own
    clock.now += timedelta(minutes=1)
    tick(engine)
    for _ in range(4):
        clock.now = max(clock.now, box.wake_at or clock.now)
        box.deliver_due()
    assert store.outbox_depth() == 0
    counts = ids_in_slack(slack)
    assert sorted(counts) == sorted(sent_ids(store)) and len(counts) == 6 and set(counts.values()) == {1}
    assert len([m for m in slack.messages.values() if "thread_ts" not in m]) == 2  # the first digest, then the newcomers
    store.close()


DIGEST_RULES = {f"fresh{i}": f"""\
    name: fresh{i}
    type: freshness
    source: warehouse
    schedule: {{every: 1s}}
    checks:
      - {{name: ga, sql: "select max(finished_at) from runs{i}"}}
    warn_after: 1h
    """ for i in range(4)}


def test_kill_9_after_slack_took_a_digest_while_more_alerts_join_posts_each_once(project: Path, pg_db: str,
                                                                               slack: SlackServer, daemon) -> None:
    for i in range(4):
        execute(pg_db, f"create table runs{i} (finished_at timestamptz)")
        execute(pg_db, f"insert into runs{i} values (now() - interval '{3 if i < 2 else 0} hours')")
    (project / "rules" / "fresh.yaml").unlink()
    for name, text in DIGEST_RULES.items():
        (project / "rules" / f"{name}.yaml").write_text(textwrap.dedent(text))
    slack.delays["chat.postMessage"] = 6.0  # Slack takes the digest of two; its answer is slow: the kill lands first
    first = daemon()
    wait_for(lambda: slack.messages, what="Slack to hold the digest")
    for i in (2, 3):  # two more alerts join the channel while the answer is on its way
        execute(pg_db, f"update runs{i} set finished_at = now() - interval '3 hours'")
    wait_for(lambda: len(outbox(project)) == 4, what="the two new alerts recorded")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert sum(ids_in_slack(slack).values()) == 2 and [a for _, a, s in outbox(project)] == [1, 1, 0, 0]
    slack.delays.clear()

    second = daemon()
    wait_for(lambda: len(outbox(project)) == 4 and all(sent for _, _, sent in outbox(project)), timeout=30,
             what="all four alerts delivered")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    counts = ids_in_slack(slack)
    assert len(counts) == 4 and set(counts.values()) == {1}  # each alert posted exactly once, none marked sent unposted
    assert len(slack.calls("conversations.history")) == 1


# --- a refused token: nothing given up, watchdog says so where it still can -----------------------------------------

def test_a_refused_token_keeps_every_alert_and_says_so_on_the_console_metrics_and_status(project: Path, slack: SlackServer,
                                                                                         daemon) -> None:
    port = free_port()
    config = project / "watchdog.yaml"
    config.write_text(config.read_text() + f"metrics: {{listen: \"127.0.0.1:{port}\"}}\n")
    slack.fail_next(*[{"error": "token_revoked", "method": "chat.postMessage"}] * 50)
    proc = daemon()

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    wait_for(lambda: 'watchdog_notifier_credentials_refused{notifier="slack"} 1.0' in scrape(), timeout=30,
             what="the refusal in /metrics")
    wait_for(lambda: any(kind == "firing" and sent is None for kind, _, sent in outbox(project)[1:]),
             what="watchdog's own alert, recorded (it waits for Slack like the rest)")
    status = subprocess.run([sys.executable, "-m", "watchdog", "status", "-c", str(config), "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    doc = json.loads(status.stdout)
    assert doc["notifiers"]["slack"]["refused"] is True and doc["failed_notifications"] == []
    assert doc["outbox_pending"] >= 2  # the alert and watchdog's own: kept, not given up
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    (line,) = [line for line in out.splitlines() if line.startswith("notification=firing rule=(watchdog)")]
    assert 'group="notifier slack"' in line and "token_revoked" in line and "kept in the outbox" in line
    assert len(slack.calls("chat.postMessage")) == 1  # one probe, not a loop against a revoked token


def test_history_lost_right_after_a_start_is_noticed_at_the_next_start(project: Path, slack: SlackServer, daemon) -> None:
    first = daemon()
    wait_for(lambda: slack.messages, what="the firing message")
    wait_for(lambda: '"firing": 1' in (project / "state.db.firing").read_text()
             if (project / "state.db.firing").exists() else False, what="the marker")
    first.send_signal(signal.SIGKILL)  # seconds after the start, long before the marker's periodic write
    first.wait(10)
    for suffix in ("-wal", "-shm"):  # the WAL is lost: every transaction since the start with it
        (project / f"state.db{suffix}").unlink(missing_ok=True)
    slack.reset()
    second = daemon()
    wait_for(lambda: any("is empty, but the previous run had recorded runs" in json.dumps(m) for m in slack.messages.values()), timeout=30,
             what="watchdog's own alert about the lost history")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
