"""Delivery to the last step: a kill between a post and its record, a kill during the update, a slow Slack, Retry-After.

Each ends with exactly one post per notification.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock
from tests.servers.slack_api import SlackServer
from tests.test_daemon import daemon, execute, outbox, posted, project, wait_for  # noqa: F401 (fixtures)
from tests.test_engine import tick
from watchdog.config import SlackConfig
from watchdog.engine import Engine
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import METADATA_EVENT, SlackNotifier, find_held
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def top_level(slack: SlackServer) -> list[dict]:
    return [m for m in posted(slack) if "thread_ts" not in m]


def replies(slack: SlackServer) -> list[dict]:
    return [m for m in posted(slack) if "thread_ts" in m]


def test_kill_between_the_post_and_its_record_posts_once(project: Path, slack: SlackServer, daemon) -> None:
    slack.delays["chat.postMessage"] = 5.0  # Slack takes the post, and its answer is slow: the kill lands in between
    first = daemon()
    wait_for(lambda: top_level(slack), what="Slack to hold the firing message")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert [(kind, attempts, sent) for kind, attempts, sent in outbox(project)] == [("firing", 1, None)]
    slack.delays.clear()

    second = daemon()
    wait_for(lambda: [sent for kind, _, sent in outbox(project) if kind == "firing" and sent], what="the record")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert len(slack.calls("chat.postMessage")) == 1  # found in the channel by its metadata, not posted again
    assert len(slack.calls("conversations.history")) == 1
    assert len(top_level(slack)) == 1


def test_kill_during_the_update_posts_the_resolution_once(project: Path, pg_db: str, slack: SlackServer, daemon) -> None:
    first = daemon()
    wait_for(lambda: top_level(slack), what="the firing message")
    slack.delays["chat.update"] = 5.0
    execute(pg_db, "insert into runs values (now())")  # fresh again: the resolution, then the rewrite of the first
    wait_for(lambda: slack.calls("chat.update"), what="the update call")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    kinds = {kind: sent for kind, _, sent in outbox(project)}
    assert kinds["resolved"] is not None and kinds["update"] is None  # the reply was recorded when Slack took it
    slack.delays.clear()

    second = daemon()
    wait_for(lambda: all(sent for _, _, sent in outbox(project)), what="the update")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert len(replies(slack)) == 1 and "RESOLVED" in replies(slack)[0]["text"]  # one resolution, never re-posted
    assert len(slack.calls("chat.update")) == 2  # the interrupted rewrite, done again (it is idempotent)
    (first_message,) = top_level(slack)
    assert "RESOLVED" in first_message["text"]


def setup(tmp_path: Path, slack: SlackServer, rules=None):
    clock = Clock(T0)
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    engine = Engine(rules or [scripted_rule("r")], store, OneSource(source), clock=clock, rule_types=TYPES)
    notifier = SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url))
    return clock, store, source, engine, Outbox(store, notifier, clock=clock, quiet_until=engine.quiet_until)


def test_a_slack_answer_slower_than_the_client_timeout_posts_once(tmp_path: Path, slack: SlackServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.TIMEOUT_SECONDS", 1)
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)
    clock, store, source, engine, box = setup(tmp_path, slack)
    slack.delays["chat.postMessage"] = 2.0  # accepted, answered after the client gave up
    source.values = {"r": 50}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert box.deliver_due() == 0  # timed out: retried later
    assert len(top_level(slack)) == 1
    time.sleep(1.2)
    slack.delays.clear()
    source.values = {"r": 0}
    for _ in range(3):
        clock.now += timedelta(minutes=1)
        tick(engine)
        box.deliver_due()
    assert len(slack.calls("chat.postMessage")) == 2  # the firing once (found again by its metadata), the resolution
    assert len(top_level(slack)) == 1 and len(replies(slack)) == 1
    assert store.outbox_depth() == 0
    assert replies(slack)[0]["thread_ts"] == next(ts for (_, ts), m in slack.messages.items() if "thread_ts" not in m)


def test_retry_after_pauses_every_post_to_the_channel(tmp_path: Path, slack: SlackServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)
    clock, store, source, engine, box = setup(tmp_path, slack, [scripted_rule("a"), scripted_rule("b"), scripted_rule("c")])
    slack.fail_next({"status": 429, "retry_after": 1, "method": "chat.postMessage"})
    source.values = {"a": 50}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert box.deliver_due() == 0
    source.values = {"a": 50, "b": 50, "c": 50}
    clock.now += timedelta(seconds=5)  # (wall clock: the outbox's own backoff is not what holds these)
    tick(engine)
    for _ in range(5):
        assert box.deliver_due() == 0  # paused: not even an attempt, for any alert to that channel
    assert len(slack.calls("chat.postMessage")) == 1
    time.sleep(1.1)
    clock.now += timedelta(seconds=10)
    box.deliver_due()
    assert store.outbox_depth() == 0
    assert len(slack.calls("chat.postMessage")) == 2  # the refused one, then the three alerts (one digest message)


def test_a_permanently_failed_notification_stays_in_status_until_acknowledged(tmp_path: Path, slack: SlackServer,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tests.helpers import write_project
    from watchdog.status import show_status

    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)
    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\n", {})
    clock, store, source, engine, box = setup(tmp_path, slack, [scripted_rule("a"), scripted_rule("b")])
    slack.fail_next({"error": "channel_not_found", "method": "chat.postMessage"})
    source.values = {"a": 50}
    clock.now += timedelta(minutes=1)
    tick(engine)
    box.deliver_due()
    source.values = {"a": 50, "b": 50}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert box.deliver_due() == 1  # a later notification goes out: the notifier is fine again
    assert store.notifier_status()["slack"]["ok"] is True
    show_status(config, fmt="json")
    (failed,) = json.loads(capsys.readouterr().out)["failed_notifications"]  # still shown
    assert failed["rule"] == "a" and failed["last_error"] == "Slack refused the message: channel_not_found"
    show_status(config)
    assert "failed notifications" in capsys.readouterr().out
    show_status(config, fmt="json", ack_failed=True)
    assert json.loads(capsys.readouterr().out)["failed_notifications"] == []


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(json_values, st.lists(st.integers(0, 5), max_size=4))
def test_any_history_answer_is_read_without_error(answer: object, wanted: list[int]) -> None:
    found = find_held(answer, wanted)
    assert set(found) <= set(wanted)
    assert all(isinstance(ts, str) and ts and carried >= 1 for ts, carried in found.values())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.lists(st.integers(0, 5), max_size=3)), max_size=6),
       st.lists(st.integers(0, 5), max_size=4))
def test_every_wanted_id_is_looked_up_on_its_own(posts: list[tuple[str, list[int]]], wanted: list[int]) -> None:
    messages = [{"ts": ts, "metadata": {"event_type": METADATA_EVENT, "event_payload": {"ids": ids}}} for ts, ids in posts]
    expected = {}
    for i in wanted:
        holder = next(((ts, len(ids)) for ts, ids in posts if i in ids), None)
        if holder is not None:
            expected[i] = holder
    assert find_held(messages, wanted) == expected
