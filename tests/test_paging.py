"""Paging end to end: the engine routes, each receiver's outbox delivers to the local stand-ins.

PagerDuty (a local Events API endpoint), a signed webhook, a mailbox (aiosmtpd)
and Slack (the local Slack API), each a destination of the outbox with its
own bookkeeping; acknowledgements in Slack reach PagerDuty over Socket Mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock, write_project
from tests.servers.receivers import PagerDutyServer, SmtpServer, WebhookServer
from tests.servers.slack_api import SlackServer
from tests.test_engine import tick
from tests.test_slack_actions import Stand, socket_server, wait_for  # noqa: F401  (socket_server: a fixture)
from watchdog.config import Config
from watchdog.engine import Engine
from watchdog.notify import actions, build_receivers, build_router
from watchdog.notify.delivery import Receivers
from watchdog.notify.outbox import Outbox
from watchdog.notify.pagerduty import dedup_key
from watchdog.notify.slack import SlackNotifier
from watchdog.state import StateStore
from watchdog.times import utcnow

MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # 11:00 in Berlin: business hours
SUNDAY = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
KEY = "routing-key-for-tests-0001"
CONFIG = """\
rules_dir: rules
state_path: state.db
slack: {{token: xoxb-paging-tests-token, channel: "#alerts", base_url: "{slack}", group_wait: 0s}}
receivers:
  pager: {{type: pagerduty, routing_key: {key}, url: "{pd}/v2/enqueue", timeout: 5s}}
  ops-hook: {{type: webhook, url: "{hook}/watchdog", secret: webhook-secret-for-tests, headers: {{X-Team: data}}}}
  data-mail:
    type: email
    smtp: {{host: 127.0.0.1, port: {smtp}, starttls: false, username: watchdog, password: smtp-password-for-tests}}
    from: watchdog@example.com
    to: [data@example.com]
routes:
  - match: {{severity: critical}}
    receivers: [pager, slack]
  - match: {{labels.team: data}}
    receivers: [data-mail, ops-hook, slack]
    active_time_intervals: [business-hours]
time_intervals:
  business-hours: {{weekdays: ["monday:friday"], times: ["09:00-18:00"], location: Europe/Berlin}}
"""


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def config_for(tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer, webhook: WebhookServer,
               smtp: SmtpServer) -> Config:
    return write_project(tmp_path, CONFIG.format(slack=slack.base_url, key=KEY, pd=pagerduty.url, hook=webhook.url,
                                                 smtp=smtp.port), {})


class Paging:
    """Engine, router and one outbox per receiver on one state file, driven step by step on a test clock."""

    def __init__(self, config: Config, start: datetime):
        self.clock = Clock(start)
        self.store = StateStore(config.state_path)
        self.source = ScriptedSource()
        rules = [scripted_rule("api-errors"), replace(scripted_rule("etl-load"), labels={"team": "data"})]
        self.engine = Engine(rules, self.store, OneSource(self.source), clock=self.clock, rule_types=TYPES)
        self.engine.router = build_router(config)
        self.outboxes = {"": Outbox(self.store, SlackNotifier(config.slack), clock=self.clock)}  # type: ignore[arg-type]
        for key, notifier in build_receivers(config).items():
            self.outboxes[key] = Outbox(self.store, notifier, clock=self.clock, receiver=key)

    def step(self, seconds: float = 60, skip: tuple[str, ...] = ()) -> None:
        self.clock.now += timedelta(seconds=seconds)
        tick(self.engine)
        for key, outbox in self.outboxes.items():
            if key not in skip:
                outbox.deliver_due()


def slack_texts(slack: SlackServer) -> list[str]:
    return [c.body["text"] for c in slack.calls("chat.postMessage")]


def test_critical_pages_retries_with_one_dedup_key_and_resolves(tmp_path: Path, slack: SlackServer,
                                                                pagerduty: PagerDutyServer, webhook: WebhookServer,
                                                                smtp: SmtpServer) -> None:
    paging = Paging(config_for(tmp_path, slack, pagerduty, webhook, smtp), MONDAY)
    pagerduty.script = [(500, {})]
    paging.source.values = {"api-errors": 5000}  # critical
    paging.step()
    assert any("[CRITICAL] FIRING: api-errors" in t for t in slack_texts(slack))
    assert pagerduty.events() == [] and [r.status for r in pagerduty.received] == [500]
    paging.step(10)  # the retry after the 500 (5 s backoff)
    (trigger,) = pagerduty.events()
    episode = paging.store.groups("api-errors")["api-errors"][""].episode
    assert trigger["event_action"] == "trigger" and trigger["payload"]["severity"] == "critical"
    assert trigger["dedup_key"] == dedup_key("api-errors", "", episode, KEY)
    assert pagerduty.received[0].json["dedup_key"] == trigger["dedup_key"]  # the failed attempt: the same event
    assert webhook.received == [] and smtp.messages == []
    paging.source.values = {"api-errors": 50}  # warning now: the pager that was told hears of it (one incident)
    paging.step()
    paging.source.values = {"api-errors": 0}
    paging.step()
    events = pagerduty.events()
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]
    assert events[1]["payload"]["severity"] == "warning"
    assert events[1]["dedup_key"] == events[2]["dedup_key"] == trigger["dedup_key"]
    assert any("RESOLVED: api-errors" in t for t in slack_texts(slack))


def test_a_warning_never_pages_and_data_alerts_reach_the_mailbox_and_the_signed_webhook(
        tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer, webhook: WebhookServer, smtp: SmtpServer) -> None:
    paging = Paging(config_for(tmp_path, slack, pagerduty, webhook, smtp), MONDAY)
    paging.source.values = {"etl-load": 50, "api-errors": 50}  # warnings; etl-load has team: data
    paging.step()
    assert pagerduty.received == []
    (mail,) = smtp.messages
    assert mail["Subject"] == "[WARNING] FIRING: etl-load"
    (hook,) = webhook.received
    assert hook.headers["X-Watchdog-Signature"] == "sha256=" + hmac.new(
        b"webhook-secret-for-tests", hook.raw, hashlib.sha256).hexdigest()
    assert [a["labels"]["rule"] for a in hook.json["alerts"]] == ["etl-load"]
    texts = slack_texts(slack)
    assert any("etl-load" in t for t in texts) and any("api-errors" in t for t in texts)


def test_a_muted_interval_holds_back_and_never_replays(tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer,
                                                       webhook: WebhookServer, smtp: SmtpServer) -> None:
    paging = Paging(config_for(tmp_path, slack, pagerduty, webhook, smtp), SUNDAY)
    paging.source.values = {"etl-load": 50}
    paging.step()
    assert smtp.messages == [] and webhook.received == [] and slack.calls("chat.postMessage") == []
    (held,) = [a for a in paging.store.audit("etl-load") if a["action"] == "held back"]
    assert held["detail"]["receivers"] == ["data-mail", "ops-hook", "slack"] and held["detail"]["kind"] == "firing"
    paging.clock.now = MONDAY - timedelta(minutes=1)  # business hours begin: the past is not replayed...
    paging.step()
    paging.source.values = {"etl-load": 0}
    paging.step()  # ...what happens now is sent: the repeat that came due, then the resolution
    assert [m["Subject"] for m in smtp.messages] == ["[WARNING] STILL FIRING: etl-load", "[OK] RESOLVED: etl-load"]
    assert [a["kind"] for h in webhook.received for a in h.json["alerts"]] == ["repeat", "resolved"]


def test_pagerduty_down_for_ten_minutes_delays_nothing_else(tmp_path: Path, slack: SlackServer,
                                                            pagerduty: PagerDutyServer, webhook: WebhookServer,
                                                            smtp: SmtpServer) -> None:
    paging = Paging(config_for(tmp_path, slack, pagerduty, webhook, smtp), MONDAY)
    pagerduty.down = True
    paging.source.values = {"api-errors": 5000, "etl-load": 50}
    paging.step()
    for minute in range(10):  # each minute another data alert comes and goes, delivered at once
        paging.source.values = {"api-errors": 5000, "etl-load": 50 if minute % 2 else 0}
        paging.step()
        assert paging.store.outbox_depth("") == paging.store.outbox_depth("data-mail") == 0
        assert paging.store.outbox_depth("ops-hook") == 0
    assert len(smtp.messages) == 11 and len(webhook.received) == 11
    assert pagerduty.events() == [] and len(pagerduty.received) >= 4  # backing off: 5 s, 10 s, 20 s, ...
    pagerduty.down = False
    paging.step(600)  # the backoff reaches 10 minutes at most
    assert [e["event_action"] for e in pagerduty.events()] == ["trigger"]


def test_a_hanging_pager_delays_only_itself(tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer,
                                            webhook: WebhookServer, smtp: SmtpServer) -> None:
    """Each receiver sends from its own thread: a PagerDuty that holds its answer holds nothing else back."""
    text = CONFIG.format(slack=slack.base_url, key=KEY, pd=pagerduty.url, hook=webhook.url, smtp=smtp.port)
    text = text.replace("    active_time_intervals: [business-hours]\n", "").replace("timeout: 5s", "timeout: 30s")
    config = write_project(tmp_path, text, {})
    store = StateStore(config.state_path)
    source = ScriptedSource()
    rules = [scripted_rule("api-errors"), replace(scripted_rule("etl-load"), labels={"team": "data"})]
    clock = Clock(utcnow() - timedelta(minutes=2))  # in the past of the receivers' clock (the real one)
    engine = Engine(rules, store, OneSource(source), rule_types=TYPES, clock=clock)
    engine.router = build_router(config)
    receivers = Receivers(build_receivers(config), config.state_path)
    receivers.start()
    try:
        pagerduty.hold = threading.Event()  # PagerDuty takes the call and holds its answer
        source.values = {"api-errors": 5000, "etl-load": 50}  # a page, and a mail and a webhook
        clock.now += timedelta(minutes=1)
        tick(engine)
        receivers.wake()
        wait_for(lambda: pagerduty.received and webhook.received and smtp.messages, "every receiver's call", timeout=20)
        wait_for(lambda: store.outbox_depth("ops-hook") == store.outbox_depth("data-mail") == 0, "the others done")
        assert store.outbox_depth("pager") == 1  # its answer is still held
        pagerduty.hold.set()
        wait_for(lambda: store.outbox_depth("pager") == 0, "the page's answer", timeout=20)
    finally:
        receivers.stop(time.monotonic() + 5)
        receivers.join(time.monotonic() + 6)
        store.close()


def test_an_acknowledgement_in_slack_acknowledges_in_pagerduty(tmp_path: Path, slack: SlackServer,
                                                               pagerduty: PagerDutyServer, socket_server: Any) -> None:
    stand = Stand(tmp_path, slack, socket_server)
    try:
        (tmp_path / "p").mkdir()
        config = write_project(tmp_path / "p", f"""\
            rules_dir: rules
            state_path: state.db
            slack: {{token: xoxb-test, channel: C0ALERTS, base_url: "{slack.base_url}"}}
            receivers:
              pager: {{type: pagerduty, routing_key: {KEY}, url: "{pagerduty.url}/v2/enqueue"}}
            routes:
              - {{match: {{rule: r}}, receivers: [pager, slack]}}
            """, {})
        stand.engine.router = build_router(config)
        stand.actions.pagers = frozenset({"pager"})
        pager = Outbox(stand.store, build_receivers(config)["pager"], clock=stand.clock, receiver="pager")
        stand.source.values = {"r": 50}  # a warning: the route sends it to the pager all the same
        stand.step()
        pager.deliver_due()
        episode = stand.episode()
        stand.click(actions.ACK, episode)
        wait_for(lambda: stand.store.acks("r"), "the acknowledgement")
        wait_for(lambda: pager.deliver_due() or len(pagerduty.events()) == 2, "the acknowledge event")
        trigger, ack = pagerduty.events()
        assert (trigger["event_action"], ack["event_action"]) == ("trigger", "acknowledge")
        assert ack["dedup_key"] == trigger["dedup_key"] == dedup_key("r", "", episode, KEY)
    finally:
        stand.close()


@contextlib.contextmanager
def paged_once(config: Config, pagerduty: PagerDutyServer, status: int) -> Iterator[tuple[StateStore, Receivers, str]]:
    """One critical alert fired to the pager receiver alone, which answers ``status``: yields (store, receivers, problem)."""
    store = StateStore(config.state_path)
    clock = Clock(utcnow() - timedelta(minutes=2))
    engine = Engine([scripted_rule("api-errors")], store, OneSource(source := ScriptedSource()), rule_types=TYPES,
                    clock=clock)
    engine.router = build_router(config)
    receivers = Receivers({"pager": build_receivers(config)["pager"]}, config.state_path)
    receivers.start()
    try:
        pagerduty.script = [(status, {})]
        source.values = {"api-errors": 5000}
        clock.now += timedelta(minutes=1)
        tick(engine)
        receivers.wake()
        yield store, receivers, wait_for(lambda: receivers.problems()["receiver pager"], "the receiver's problem")
    finally:
        receivers.stop(time.monotonic() + 2)
        receivers.join(time.monotonic() + 3)
        store.close()


def test_a_notification_refused_for_good_is_a_problem_until_acknowledged(
        tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer, webhook: WebhookServer, smtp: SmtpServer) -> None:
    config = config_for(tmp_path, slack, pagerduty, webhook, smtp)
    with paged_once(config, pagerduty, 400) as (store, receivers, problem):
        assert problem.startswith("receiver pager refused 1 notification for good, the latest: PagerDuty trigger: HTTP 400")
        assert KEY not in problem
        store.acknowledge_failed()
        receivers.wake()
        wait_for(lambda: receivers.problems()["receiver pager"] is None, "the problem to clear")


def test_a_routes_group_wait_and_repeat_every(tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer,
                                              webhook: WebhookServer, smtp: SmtpServer) -> None:
    text = CONFIG.format(slack=slack.base_url, key=KEY, pd=pagerduty.url, hook=webhook.url, smtp=smtp.port)
    config = write_project(tmp_path, text.replace("    active_time_intervals: [business-hours]\n",
                                                  "    group_wait: 30s\n    repeat_every: 12h\n"), {})
    paging = Paging(config, MONDAY)
    paging.source.values = {"etl-load": 50}  # the rule repeats every 4h, the route's receivers every 12h
    paging.step()
    assert smtp.messages == [] and webhook.received == []  # held for the route's group wait
    paging.step(31)
    assert [m["Subject"] for m in smtp.messages] == ["[WARNING] FIRING: etl-load"]
    for _ in range(3):  # repeats at 4h and 8h: not to this route's receivers; at 12h: yes
        paging.step(4 * 3600)
        paging.step(31)
    assert [m["Subject"] for m in smtp.messages] == ["[WARNING] FIRING: etl-load", "[WARNING] STILL FIRING: etl-load"]
    assert len(webhook.received) == 2


def test_refused_credentials_keep_the_notification_and_are_a_problem(
        tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer, webhook: WebhookServer, smtp: SmtpServer) -> None:
    config = config_for(tmp_path, slack, pagerduty, webhook, smtp)
    with paged_once(config, pagerduty, 403) as (store, _, problem):
        assert problem.startswith("PagerDuty trigger: HTTP 403") and "every one is kept in the outbox" in problem
        assert store.outbox_depth("pager") == 1 and store.failed_notifications() == []


def test_receiver_secrets_never_leave(tmp_path: Path, slack: SlackServer, pagerduty: PagerDutyServer,
                                      webhook: WebhookServer, smtp: SmtpServer, log_lines: list[str]) -> None:
    """The routing key, the webhook's secret and the SMTP password: in no log line, no state row, no error."""
    from watchdog.redact import redact

    config = config_for(tmp_path, slack, pagerduty, webhook, smtp)
    secrets = [KEY, "webhook-secret-for-tests", "smtp-password-for-tests"]
    assert all(redact(f"x {s} y") == "x *** y" for s in secrets)
    paging = Paging(config, MONDAY)
    pagerduty.script = [(400, {})]
    pagerduty.echo = True  # its error quotes the event, routing key included
    webhook.script = [(500, {})]
    paging.source.values = {"api-errors": 5000, "etl-load": 50}
    paging.step()
    (failed,) = paging.store.failed_notifications()
    assert "routing_key" in failed["last_error"] and KEY not in failed["last_error"]
    paging.store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert log_lines and not any(s in line for s in secrets for line in log_lines)
    assert not any(s.encode() in stored for s in secrets)
