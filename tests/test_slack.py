"""Slack delivery through slack-sdk against the local Slack API server: threads, retries, limits, once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock
from tests.servers.slack_api import SlackServer
from tests.test_engine import tick
from watchdog.config import SlackConfig
from watchdog.engine import Engine
from watchdog.notify.outbox import REFUSED_RETRY, Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.notify.slack_blocks import MAX_BLOCKS, MAX_FIELD, MAX_FIELDS, MAX_HEADER, MAX_SECTION, message_blocks
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def setup(tmp_path: Path, slack: SlackServer, *, webhook: bool = False, rules=None, **slack_kw):
    clock = Clock(T0)
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    config = SlackConfig(webhook_url=slack.webhook_url, **slack_kw) if webhook else \
        SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url, **slack_kw)
    engine = Engine(rules or [scripted_rule("r", repeat_every=timedelta(minutes=2))], store, OneSource(source), clock=clock,
                    rule_types=TYPES)
    outbox = Outbox(store, SlackNotifier(config), clock=clock, quiet_until=engine.quiet_until)
    return clock, store, source, engine, outbox


def step(clock: Clock, engine: Engine, outbox: Outbox, minutes: float = 1) -> int:
    clock.now += timedelta(minutes=minutes)
    tick(engine)
    return outbox.deliver_due()


def test_firing_repeat_resolved_in_one_thread(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack)
    source.values = {"r": 50}
    for _ in range(3):
        step(clock, engine, outbox)
    source.values = {"r": 0}
    step(clock, engine, outbox)
    posts = slack.calls("chat.postMessage")
    assert [("thread_ts" in p.body) for p in posts] == [False, True, True]
    first_ts = {ts for (_, ts) in slack.messages if "thread_ts" not in slack.messages[("#alerts", ts)]}
    assert len(first_ts) == 1
    assert all(p.body["thread_ts"] == next(iter(first_ts)) for p in posts[1:])
    assert "STILL FIRING: r" in posts[1].body["text"] and "RESOLVED: r" in posts[2].body["text"]
    (update,) = slack.calls("chat.update")
    assert update.body["ts"] == next(iter(first_ts)) and update.body["text"].startswith("[OK] RESOLVED: r")
    assert update.body["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED: r")


def test_rate_limit_waits_for_retry_after_and_posts_once(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack)
    source.values = {"r": 50}
    slack.fail_next({"status": 429, "retry_after": 1})
    assert step(clock, engine, outbox) == 0
    assert outbox.deliver_due() == 0  # not before Retry-After
    time.sleep(1.1)  # (the pause runs on the monotonic clock)
    clock.now += timedelta(seconds=2)
    assert outbox.deliver_due() == 1
    assert len(slack.messages) == 1 and len(slack.calls("chat.postMessage")) == 2


def test_server_errors_back_off_then_succeed(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack)
    source.values = {"r": 50}
    slack.fail_next({"status": 500, "method": "chat.postMessage"}, {"status": 503, "method": "chat.postMessage"})
    step(clock, engine, outbox)
    for _ in range(3):
        clock.now += timedelta(seconds=11)
        outbox.deliver_due()
    assert len(slack.messages) == 1 and len(slack.calls("chat.postMessage")) == 3
    assert store.outbox_depth() == 0 and store.notifier_status()["slack"]["ok"] is True


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
def test_refused_credentials_keep_every_notification_and_are_tried_again_not_hammered(tmp_path: Path, slack: SlackServer,
                                                                                      error: str) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, rules=[scripted_rule("a"), scripted_rule("b")],
                                                 group_wait=timedelta(0))
    source.values = {"a": 50, "b": 50}
    slack.fail_next(*[{"error": error, "method": "chat.postMessage"}] * 2)
    assert step(clock, engine, outbox) == 0
    status = store.notifier_status()["slack"]
    assert status == {**status, "ok": False, "refused": True, "error": f"Slack refuses watchdog's credentials: {error}"}
    assert outbox.refused is not None and outbox.wake_at == clock.now + REFUSED_RETRY
    assert len(slack.calls("chat.postMessage")) == 1  # the other alert is not tried against a refused token
    clock.now += REFUSED_RETRY / 2
    assert outbox.deliver_due() == 0 and len(slack.calls("chat.postMessage")) == 1
    clock.now += REFUSED_RETRY / 2
    assert outbox.deliver_due() == 0 and len(slack.calls("chat.postMessage")) == 2  # still refused: one probe
    assert store.outbox_depth() == 2 and store.failed_notifications() == []  # kept, not given up
    clock.now += REFUSED_RETRY  # the token works again
    assert outbox.deliver_due() == 2
    assert outbox.refused is None and store.notifier_status()["slack"]["refused"] is False
    assert sorted(m["text"].split(":")[1] for m in slack.messages.values()) == [" a", " b"]  # each posted once


def test_fifty_groups_firing_together_give_one_digest_and_share_its_thread(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack)
    source.values = {"r": {f"team-{i:02d}": 50 for i in range(50)}}
    assert step(clock, engine, outbox) == 50
    (post,) = slack.calls("chat.postMessage")
    assert post.body["text"].startswith("[WARNING] 50 alerts firing: 50 warning: r (50)")
    shown = "\n".join(b["text"]["text"] for b in post.body["blocks"] if b["type"] == "section")
    assert "*r* (50: 50 warning)" in shown and "team-09:" in shown and "team-10:" not in shown
    assert "… and 40 more of r" in shown
    source.values = {"r": {f"team-{i:02d}": 50 for i in range(1, 50)}}  # team-00 resolves: a reply in the digest's thread
    step(clock, engine, outbox)
    reply = slack.calls("chat.postMessage")[-1].body
    first_ts = next(iter(slack.messages))[1]
    assert reply["thread_ts"] == first_ts and "RESOLVED: r [team-00]" in reply["text"]
    assert slack.calls("chat.update") == []  # the digest still speaks for 49 firing groups


def test_webhook_mode_sends_each_notification_as_its_own_message(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, webhook=True)
    source.values = {"r": 50}
    slack.fail_next({"status": 429, "retry_after": 1})
    step(clock, engine, outbox)
    clock.now += timedelta(seconds=2)
    outbox.deliver_due()
    source.values = {"r": 0}
    step(clock, engine, outbox)
    hooks = slack.calls("webhook")
    assert len(hooks) == 3 and "FIRING: r" in hooks[1].body["text"] and "RESOLVED: r" in hooks[2].body["text"]
    assert all("thread_ts" not in h.body for h in hooks)


def test_critical_alerts_mention(tmp_path: Path, slack: SlackServer) -> None:
    from dataclasses import replace

    from watchdog.rule import Severity

    rule = replace(scripted_rule("r"), severity=Severity.CRITICAL)
    clock, store, source, engine, outbox = setup(tmp_path, slack, rules=[rule], mention_critical="<!here>")
    source.values = {"r": 50}
    step(clock, engine, outbox)
    assert slack.calls("chat.postMessage")[0].body["text"].startswith("<!here> [CRITICAL] FIRING: r")


def test_payloads_stay_within_slack_limits() -> None:
    payload = {
        "rule": "r" * 200, "group": "g" * 5000, "kind": "firing", "severity": "critical", "title": "FIRING: " + "x" * 500,
        "text": "t" * 10000, "body": "b" * 10000, "value": 1, "summary": "s" * 10000, "runbook_url": "https://wiki/" + "r" * 4000,
        "labels": {f"label{i}": "v" * 3000 for i in range(30)},
        "details": {"samples": [{"message": "m" * 5000}] * 20, "threshold": "above 1", "window": "5m",
                    "dashboard_url": "https://dash/" + "d" * 4000},
    }
    blocks = message_blocks(payload)
    assert len(blocks) <= MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= MAX_HEADER
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= MAX_SECTION
        if "fields" in block:
            assert len(block["fields"]) <= MAX_FIELDS and all(len(f["text"]) <= MAX_FIELD for f in block["fields"])
        for element in block.get("elements", []):
            assert len(element["text"]) <= MAX_SECTION
