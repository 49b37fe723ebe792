"""Buttons in Slack over Socket Mode: slack-sdk's own client against a local Socket Mode server.

The local Slack API server answers ``apps.connections.open`` with the URL of a
local WebSocket server (tests/servers/socket_mode.py); clicks are delivered as
Slack delivers them, and what watchdog answers arrives at the local Slack API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.slack_api import SlackServer
from tests.servers.socket_mode import SocketModeServer
from tests.test_dms import create_task, fail
from tests.test_engine import tick
from watchdog.config import SlackActionsConfig, SlackConfig
from watchdog.daemon import Delivery, Loop, RuleFiles
from watchdog.engine import SELF_RULE, Engine
from watchdog.notify import actions
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.notify.socket_mode import SlackActions, SocketHealth
from watchdog.state import StateStore
from watchdog.status import status_document
from watchdog.times import utcnow

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
CHANNEL = "C0ALERTS"


@pytest.fixture(scope="module")
def socket_server() -> Iterator[SocketModeServer]:
    server = SocketModeServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)
    monkeypatch.setattr("watchdog.notify.socket_mode.SUPERVISE_SECONDS", 0.1)
    monkeypatch.setattr("watchdog.notify.socket_mode.BACKOFF_FIRST", 0.1)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


class Stand:
    """watchdog's engine, outbox, Slack notifier and Socket Mode connection on one state file."""

    def __init__(self, tmp_path: Path, slack: SlackServer, sockets: SocketModeServer, *,
                 allow: tuple[str, ...] = (), approvers: tuple[str, ...] = ()):
        slack.socket_url = sockets.url
        sockets.reset()
        self.slack, self.sockets = slack, sockets
        self.clock = Clock(T0)
        self.path = str(tmp_path / "state.db")
        self.store = StateStore(self.path)
        self.source = ScriptedSource()
        self.config = SlackConfig(token="xoxb-test", app_token="xapp-test", channel=CHANNEL, base_url=slack.base_url,
                                  actions=SlackActionsConfig(allow=allow, approvers=approvers))
        self.engine = Engine([scripted_rule("r", repeat_every=timedelta(minutes=30))], self.store, OneSource(self.source),
                             clock=self.clock, rule_types=TYPES)
        self.health = SocketHealth()
        self.outbox = Outbox(self.store, SlackNotifier(self.config, self.health), clock=self.clock,
                             quiet_until=self.engine.quiet_until)
        self.actions = SlackActions(self.config, self.path, self.health, clock=self.clock)
        self.actions.start()
        sockets.wait_connected()
        wait_for(lambda: self.health.connected, "the Socket Mode health")

    def step(self, minutes: float = 1) -> None:
        self.clock.now += timedelta(minutes=minutes)
        tick(self.engine)
        self.outbox.deliver_due()

    def first_message(self) -> tuple[str, dict[str, Any]]:
        (ts, body), *_ = [(ts, body) for (channel, ts), body in self.slack.messages.items() if "thread_ts" not in body]
        return ts, body

    def episode(self) -> str:
        return self.store.groups("r")["r"][""].episode

    def click(self, action_id: str, value: str, user: str = "U0ONCALL", **kw: Any) -> str:
        ts, _ = self.first_message()
        envelope = self.sockets.click(user=user, action_id=action_id, value=value, channel=CHANNEL, message_ts=ts, **kw)
        self.sockets.wait_ack(envelope)
        return envelope

    def replies(self) -> list[str]:
        return [p.body["text"] for p in self.slack.calls("chat.postMessage") if "thread_ts" in p.body]

    def close(self) -> None:
        self.actions.close()
        self.store.close()


@pytest.fixture
def stand(tmp_path: Path, slack: SlackServer, socket_server: SocketModeServer) -> Iterator[Stand]:
    s = Stand(tmp_path, slack, socket_server)
    yield s
    s.close()


def load_config_for(stand: Stand) -> Any:
    """An empty project: status lists the stand's rule from its state."""
    root = Path(stand.path).parent / "status-project"
    root.mkdir(exist_ok=True)
    return write_project(root, "rules_dir: rules\nstate_path: state.db\n", {})


def button_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b.get("type") == "actions" for e in b["elements"]]


def test_firing_alerts_carry_buttons_and_acknowledge_stops_repeats(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    _, first = stand.first_message()
    assert button_ids(first["blocks"]) == [actions.ACK, actions.SILENCE_1H, actions.SILENCE_4H, actions.SILENCE_RESOLVED]
    episode = stand.episode()
    stand.click(actions.ACK, episode)
    wait_for(lambda: stand.store.acks("r"), "the acknowledgement")
    ack = stand.store.acks("r")[""]
    assert (ack.by, ack.episode) == ("U0ONCALL", episode)
    wait_for(lambda: stand.replies(), "the thread reply")
    assert stand.replies()[0].startswith("Acknowledged by <@U0ONCALL> at 2026-11-28 02:01 UTC")
    update = wait_for(lambda: stand.slack.calls("chat.update"), "the message update")[0].body
    assert actions.ACK not in button_ids(update["blocks"]) and actions.SILENCE_1H in button_ids(update["blocks"])
    assert any("Acknowledged by <@U0ONCALL>" in str(b) for b in update["blocks"] if b["type"] == "context")
    assert [a["action"] for a in stand.store.audit("r")][-1] == "acknowledged"
    assert stand.store.audit("r")[-1]["detail"]["user"] == "U0ONCALL"
    doc = status_document(load_config_for(stand), stand.store, stand.clock())
    (group,) = doc["rules"][0]["groups"]
    assert group["acknowledged"] == {"by": "U0ONCALL", "at": "2026-11-28T02:01:00Z", "severity": "warning"}
    for _ in range(3):  # 90 minutes: three repeats were due, none is sent
        stand.step(30)
    assert not any("STILL FIRING" in text for text in stand.replies())
    stand.source.values = {"r": 5000}  # critical: above the acknowledged severity
    stand.step()
    stand.step(30)
    texts = stand.replies()
    assert any("SEVERITY CHANGED" in t for t in texts) and any("STILL FIRING" in t for t in texts)


def test_silence_buttons_silence_and_unsilence(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    stand.click(actions.SILENCE_1H, stand.episode())
    (silence,) = wait_for(lambda: stand.store.silences(stand.clock()), "the silence")
    assert (silence.rule, silence.group, silence.created_by) == ("r", "", "U0ONCALL")
    assert silence.until == stand.clock() + timedelta(hours=1)
    reply = wait_for(lambda: [p.body for p in stand.slack.calls("chat.postMessage") if "thread_ts" in p.body], "the reply")[0]
    assert reply["text"].startswith("Silenced by <@U0ONCALL> until 2026-11-28 03:01 UTC")
    assert button_ids(reply["blocks"]) == [actions.UNSILENCE]
    stand.step(35)  # a repeat would be due: silenced
    assert not any("STILL FIRING" in t for t in stand.replies())
    stand.click(actions.UNSILENCE, str(silence.id))
    wait_for(lambda: not stand.store.silences(stand.clock()), "the unsilence")
    wait_for(lambda: any(t.startswith("Unsilenced by <@U0ONCALL>") for t in stand.replies()), "the unsilence reply")
    assert [a["action"] for a in stand.store.audit("r")][-2:] == ["silenced", "unsilenced"]


def test_an_unsilence_click_from_another_message_acts_on_nothing(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    ts, _ = stand.first_message()
    stand.click(actions.SILENCE_1H, stand.episode())
    (silence,) = wait_for(lambda: stand.store.silences(stand.clock()), "the silence")
    forged = [dict(channel="C0ELSEWHERE", message_ts=ts), dict(channel=CHANNEL, message_ts="1700000000.000001"),
              dict(channel="C0ELSEWHERE", message_ts="1700000000.000002", thread_ts=ts)]
    for where in forged:  # the silence id is right; the message is not in the silenced alert's thread
        envelope = stand.sockets.click(user="U0ONCALL", action_id=actions.UNSILENCE, value=str(silence.id), **where)
        stand.sockets.wait_ack(envelope)
    wait_for(lambda: len(stand.slack.calls("chat.postEphemeral")) == len(forged), "the refusals")
    assert all("not on a message watchdog posted" in c.body["text"] for c in stand.slack.calls("chat.postEphemeral"))
    assert stand.store.silences(stand.clock()) == [silence]
    reply_ts = "1700000000.000003"  # the Unsilence button sits on a reply in the alert's thread: that click acts
    envelope = stand.sockets.click(user="U0ONCALL", action_id=actions.UNSILENCE, value=str(silence.id), channel=CHANNEL,
                                   message_ts=reply_ts, thread_ts=ts)
    stand.sockets.wait_ack(envelope)
    wait_for(lambda: not stand.store.silences(stand.clock()), "the unsilence")


def test_silence_until_resolved_ends_with_the_episode(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    stand.click(actions.SILENCE_RESOLVED, stand.episode())
    (silence,) = wait_for(lambda: stand.store.silences(stand.clock()), "the silence")
    wait_for(lambda: any(t.startswith("Silenced by") for t in stand.replies()), "the reply")  # posted after the silence
    assert silence.episode == stand.episode()
    doc = status_document(load_config_for(stand), stand.store, stand.clock())
    assert doc["rules"][0]["groups"][0]["silenced"] == str(silence.id)
    assert doc["silences"][0]["until_resolved"] is True and doc["silences"][0]["by"] == "U0ONCALL"
    stand.source.values = {"r": 0}
    stand.step()  # resolves: nothing said (silenced)
    posts = len(stand.slack.calls("chat.postMessage"))
    stand.source.values = {"r": 60}
    stand.step()  # a new episode: the silence no longer covers it
    assert len(stand.slack.calls("chat.postMessage")) == posts + 1
    assert "FIRING: r" in stand.slack.calls("chat.postMessage")[-1].body["text"]


def test_a_click_from_someone_not_allowed_changes_nothing(tmp_path: Path, slack: SlackServer,
                                                          socket_server: SocketModeServer) -> None:
    slack_groups = {"S0ONCALL": ["U0MEMBER"]}
    stand = Stand(tmp_path, slack, socket_server, allow=("U0LEAD", "S0ONCALL"))
    try:
        slack.usergroups.update(slack_groups)
        stand.source.values = {"r": 50}
        stand.step()
        stand.click(actions.ACK, stand.episode(), user="U0STRANGER")
        ephemeral = wait_for(lambda: slack.calls("chat.postEphemeral"), "the ephemeral answer")[0].body
        assert ephemeral["user"] == "U0STRANGER" and "not allowed" in ephemeral["text"]
        assert not stand.store.acks("r") and not stand.replies()
        stand.click(actions.ACK, stand.episode(), user="U0MEMBER")  # in the allowed user group
        wait_for(lambda: stand.store.acks("r"), "the member's acknowledgement")
    finally:
        stand.close()


def test_a_redelivered_click_acts_once(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    episode = stand.episode()
    stand.click(actions.SILENCE_4H, episode, action_ts="1764295260.000100")
    wait_for(lambda: stand.store.silences(stand.clock()), "the silence")
    stand.click(actions.SILENCE_4H, episode, action_ts="1764295260.000100", retry_attempt=1)  # Slack delivers it again
    time.sleep(0.5)
    assert len(stand.store.silences(stand.clock())) == 1
    assert len([t for t in stand.replies() if t.startswith("Silenced by")]) == 1
    assert [a["action"] for a in stand.store.audit("r")].count("silenced") == 1


def test_a_click_after_resolution_says_so_and_does_nothing(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    episode = stand.episode()
    stand.source.values = {"r": 0}
    stand.step()
    stand.click(actions.ACK, episode)
    ephemeral = wait_for(lambda: stand.slack.calls("chat.postEphemeral"), "the ephemeral answer")[0].body
    assert "no longer firing" in ephemeral["text"]
    assert not stand.store.acks("r")


def test_the_connection_reconnects_and_buttons_say_when_it_is_down(stand: Stand) -> None:
    stand.sockets.refuse = True
    stand.sockets.drop()
    wait_for(lambda: not stand.health.connected, "the disconnection")
    assert stand.store.notifier_status()["slack-socket-mode"]["ok"] is False
    stand.source.values = {"r": 50}
    stand.step()  # posted while down: no buttons, a note instead
    _, first = stand.first_message()
    assert not button_ids(first["blocks"])
    assert any("Buttons unavailable" in str(b) for b in first["blocks"])
    stand.sockets.refuse = False
    stand.sockets.wait_connected(timeout=90, count=2)  # the reconnect backoff doubles while refused; a loaded machine is slower
    wait_for(lambda: stand.health.connected, "the reconnection")
    assert stand.store.notifier_status()["slack-socket-mode"]["ok"] is True
    stand.click(actions.ACK, stand.episode())  # the buttons of older messages work again
    wait_for(lambda: stand.store.acks("r"), "the acknowledgement after reconnecting")


def test_a_click_naming_another_channel_or_message_acts_on_nothing(stand: Stand) -> None:
    stand.source.values = {"r": 50}
    stand.step()
    ts, _ = stand.first_message()
    episode = stand.episode()
    forged = [dict(channel="C0ELSEWHERE", message_ts=ts), dict(channel=CHANNEL, message_ts="1700000000.000001"),
              dict(channel="C0ELSEWHERE", message_ts="1700000000.000001", thread_ts=ts)]
    for where in forged:  # the episode is right; the message is not the one watchdog posted for it
        envelope = stand.sockets.click(user="U0ONCALL", action_id=actions.SILENCE_4H, value=episode, **where)
        stand.sockets.wait_ack(envelope)
    wait_for(lambda: len(stand.slack.calls("chat.postEphemeral")) == len(forged), "the refusals")
    assert all("not on a message watchdog posted" in c.body["text"] for c in stand.slack.calls("chat.postEphemeral"))
    assert stand.store.silences(stand.clock()) == [] and stand.replies() == []
    assert [a["action"] for a in stand.store.audit("r")].count("silenced") == 0
    stand.click(actions.SILENCE_4H, episode)  # on the alert's own message: it acts
    wait_for(lambda: stand.store.silences(stand.clock()), "the silence")


@settings(max_examples=200, deadline=None)
@given(channel=st.sampled_from(["C0A", "C0B"]), message_ts=st.sampled_from(["1.1", "2.2", "3.3"]),
       thread_ts=st.sampled_from([None, "1.1", "2.2"]), ref=st.fixed_dictionaries(
           {"channel": st.sampled_from(["C0A", "C0B", ""]), "ts": st.sampled_from(["1.1", "2.2", ""])}) | st.none())
def test_a_click_is_posted_for_its_thread_exactly_when_channel_and_message_match(
        channel: str, message_ts: str, thread_ts: str | None, ref: dict[str, str] | None) -> None:
    click = actions.Click(action=actions.ACK, value="0123456789abcdef", user="U0ONCALL", channel=channel,
                          message_ts=message_ts, action_ts="9.9", thread_ts=thread_ts)
    expected = (ref is not None and bool(ref["channel"]) and bool(ref["ts"]) and ref["channel"] == channel
                and ref["ts"] in (message_ts, thread_ts))
    assert actions.posted_for(click, ref) is expected


VALID = {"type": "block_actions", "user": {"id": "U0ONCALL"}, "container": {"channel_id": "C0ALERTS", "message_ts": "1.000001"},
         "actions": [{"action_id": actions.ACK, "value": "0123456789abcdef", "action_ts": "2.000002"}]}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=json_values, field=st.sampled_from(["user", "container", "actions", "type"]), junk=json_values)
def test_any_payload_parses_to_a_valid_click_or_none(payload: Any, field: str, junk: Any) -> None:
    for candidate in (payload, {**VALID, field: junk}):
        click = actions.parse_click(candidate)
        if click is not None:
            assert click.action in actions.ACTIONS
            assert actions.USER_ID.fullmatch(click.user) and actions.CHANNEL_ID.fullmatch(click.channel)
            assert actions.mention(click.user) == f"<@{click.user}>"


@settings(max_examples=200, deadline=None)
@given(user=st.text(max_size=40), value=st.text(max_size=80))
def test_hostile_user_ids_and_values_never_reach_slack(user: str, value: str) -> None:
    payload = {**VALID, "user": {"id": user}, "actions": [{**VALID["actions"][0], "value": value}]}
    click = actions.parse_click(payload)
    if click is not None:
        assert "<" not in click.user + click.value and "!" not in click.user + click.value


def approval_project(tmp_path: Path, slack: SlackServer, moto: Any) -> Any:
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}
        slack:
          token: xoxb-test
          app_token: xapp-test
          channel: {CHANNEL}
          base_url: {slack.base_url}
          group_wait: 0s
          actions: {{approvers: [U0LEAD]}}
        """, {"fix-dms": """\
        name: fix-dms
        type: dms_remediate
        source: aws
        tasks: [prod-to-warehouse]
        restart: {type: resume-processing, wait_running: 1s}
        approve: true
        """})


class Watchdog:
    """One run of watchdog on a state file: engine, outbox with the Slack notifier, Socket Mode; ``close`` is a stop."""

    def __init__(self, config: Any, sockets: SocketModeServer):
        self.clock = Clock(T0)
        self.engine = engine_for(config, self.clock)
        self.health = SocketHealth()
        self.actions = SlackActions(config.slack, config.state_path, self.health, clock=self.clock)
        connects = sockets.connects
        self.actions.start()
        sockets.wait_connected(count=connects + 1)  # the server side has it too: clicks go to this connection
        wait_for(lambda: self.health.connected, "the Socket Mode connection")
        self.outbox = Outbox(self.engine.store, SlackNotifier(config.slack, self.health), clock=self.clock)

    def evaluate(self) -> None:
        evaluate_now(self.engine)
        for _ in range(5):  # the thread's first message, then its replies
            self.outbox.deliver_due()

    def close(self) -> None:
        self.actions.close()
        self.engine.store.close()


def test_an_approval_is_asked_once_decided_once_and_survives_restarts(
        tmp_path: Path, slack: SlackServer, socket_server: SocketModeServer, moto: Any) -> None:
    slack.socket_url = socket_server.url
    socket_server.reset()
    config = approval_project(tmp_path, slack, moto)
    create_task(moto)
    fail()
    first = Watchdog(config, socket_server)
    first.evaluate()
    first.evaluate()  # still waiting: asked once
    assert moto.calls("StartReplicationTask") == []
    asks = [p.body for p in slack.calls("chat.postMessage") if button_ids(p.body.get("blocks", []))]
    assert len(asks) == 1 and button_ids(asks[0]["blocks"]) == [actions.APPROVE, actions.DECLINE]
    assert "APPROVAL NEEDED" in asks[0]["text"] and asks[0]["thread_ts"]
    episode = asks[0]["blocks"][-1]["elements"][0]["value"]
    first.close()  # watchdog restarts while the question is open

    second = Watchdog(config, socket_server)
    message_ts, thread_ts = next((ts, body["thread_ts"]) for (_, ts), body in slack.messages.items()
                                 if button_ids(body.get("blocks", [])))  # the question: a reply in the thread
    envelope = socket_server.click(user="U0STRANGER", action_id=actions.APPROVE, value=episode, channel=CHANNEL,
                                   message_ts=message_ts, thread_ts=thread_ts)
    socket_server.wait_ack(envelope)
    wait_for(lambda: slack.calls("chat.postEphemeral"), "the refusal")
    assert second.engine.store.approval(episode)["decision"] is None
    envelope = socket_server.click(user="U0LEAD", action_id=actions.APPROVE, value=episode, channel=CHANNEL,
                                   message_ts=message_ts, thread_ts=thread_ts)
    socket_server.wait_ack(envelope)
    wait_for(lambda: second.engine.store.approval(episode)["decision"] == "approved", "the approval")
    update = wait_for(lambda: slack.calls("chat.update"), "the message update")[-1].body
    assert not button_ids(update["blocks"]) and "Approved by <@U0LEAD>" in str(update["blocks"])
    envelope = socket_server.click(user="U0LEAD", action_id=actions.DECLINE, value=episode, channel=CHANNEL,
                                   message_ts=message_ts, thread_ts=thread_ts)  # too late: the first decision counts
    socket_server.wait_ack(envelope)
    wait_for(lambda: any("Already decided: approved" in c.body["text"] for c in slack.calls("chat.postEphemeral")),
             "the stale-click answer")
    assert second.engine.store.approval(episode)["decision"] == "approved"
    second.close()  # and restarts again before the remediation acted on it

    third = Watchdog(config, socket_server)
    try:
        third.evaluate()
        assert moto.calls("StartReplicationTask") == ["StartReplicationTask"]
        audit = [a["action"] for a in third.engine.store.audit("fix-dms")]
        assert "remediation approved" in audit
        assert any(a.startswith("action: restart issued") and "approved by Slack user U0LEAD" in a for a in audit)
    finally:
        third.close()


def test_a_long_socket_mode_outage_is_one_of_watchdogs_own_alerts(tmp_path: Path) -> None:
    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\n", {})
    engine = Engine([], StateStore(config.state_path), OneSource(ScriptedSource()), rule_types=TYPES)
    engine.socket = SocketHealth()
    loop = Loop(config, engine, RuleFiles(config), engine.store, Delivery(config, threading.Event()))
    engine.socket.set(False, "ConnectionRefusedError")
    loop.check_socket()  # just went down: reconnecting is routine
    assert not engine.store.groups(SELF_RULE)
    engine.socket.since = utcnow() - timedelta(minutes=6)
    loop.check_socket()
    (summary,) = [s.summary for s in engine.store.groups(SELF_RULE)[SELF_RULE].values()]
    assert summary.startswith("Slack Socket Mode disconnected since") and "ConnectionRefusedError" in summary
    engine.socket.set(True)
    loop.check_socket()
    assert not engine.store.groups(SELF_RULE)
    kinds = [r["kind"] for r in engine.store.db.execute("select kind from outbox where rule = ? order by id", (SELF_RULE,))]
    assert kinds == ["firing", "resolved"]


def menus_in(slack: SlackServer) -> dict[str, tuple[str, str | None]]:
    """Every alert menu Slack shows: episode -> (ts of the message holding it, the thread it is a reply in)."""
    found: dict[str, tuple[str, str | None]] = {}
    for (_, ts), body in slack.messages.items():
        for block in body.get("blocks") or []:
            menu = block.get("accessory") or {}
            if menu.get("action_id") == actions.MENU:
                values = [o["value"] for o in menu["options"]]
                episode = values[0].split(" ", 1)[1]
                assert [v.split(" ", 1)[0] for v in values] == [actions.ACK, actions.SILENCE_1H, actions.SILENCE_4H,
                                                                actions.SILENCE_RESOLVED]
                assert episode not in found
                found[episode] = (ts, body.get("thread_ts"))
    return found


@pytest.mark.parametrize("burst", [2, 30])
def test_every_alert_of_a_burst_can_be_acknowledged_and_silenced_from_its_digest_alone(stand: Stand, burst: int) -> None:
    names = [f"b{i:02d}" for i in range(burst)]
    stand.engine.set_rules([scripted_rule(n, repeat_every=timedelta(minutes=30)) for n in names])
    stand.source.values = {n: 50 for n in names}
    stand.clock.now += timedelta(minutes=1)
    evaluate_now(stand.engine)  # one burst: every rule fires in the same evaluation
    stand.clock.now += timedelta(seconds=5)  # (the group wait)
    stand.outbox.deliver_due()  # the digest, and the menus that did not fit in it: replies in its thread
    (digest_ts, digest), = [(ts, b) for (_, ts), b in stand.slack.messages.items() if "thread_ts" not in b]
    assert len(digest["blocks"]) <= 50 and f"{burst} alerts firing" in digest["text"]
    episodes = {n: stand.store.groups(n)[n][""].episode for n in names}
    menus = menus_in(stand.slack)
    assert set(menus) == set(episodes.values())  # every alert of the burst, each with its own menu
    assert all(thread in (None, digest_ts) for _, thread in menus.values())
    acked, silenced = names[0], names[-1]
    for name, action in ((acked, actions.ACK), (silenced, actions.SILENCE_1H)):
        ts, thread = menus[episodes[name]]
        envelope = stand.sockets.click(user="U0ONCALL", action_id=actions.MENU, value="", channel=CHANNEL, message_ts=ts,
                                       thread_ts=thread, selected=f"{action} {episodes[name]}")
        stand.sockets.wait_ack(envelope)
    wait_for(lambda: len([r for r in stand.replies() if "by <@U0ONCALL>" in r]) == 2, "both replies")
    assert {n for n in names if stand.store.acks(n)} == {acked}  # on that alert alone
    assert [(s.rule, s.group) for s in stand.store.silences(stand.clock.now)] == [(silenced, "")]
    assert all(p.body.get("thread_ts") == digest_ts for p in stand.slack.calls("chat.postMessage")
               if "by <@U0ONCALL>" in p.body["text"])  # said in the digest's thread
    assert stand.slack.messages[(CHANNEL, digest_ts)]["blocks"] == digest["blocks"]  # the digest stays as it is


def test_a_connection_cut_without_a_word_is_noticed_and_replaced(tmp_path: Path, slack: SlackServer,
                                                                 socket_server: SocketModeServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.notify import socket_mode

    # The defaults notice a dead connection well within a minute (no pong for DEAD_SECONDS, seen at the next ping
    # and the next look of the supervisor); the test runs the same mechanism twenty times faster.
    assert socket_mode.DEAD_SECONDS + socket_mode.PING_SECONDS + socket_mode.SUPERVISE_SECONDS < 60
    monkeypatch.setattr(socket_mode, "PING_SECONDS", 0.5)
    monkeypatch.setattr(socket_mode, "DEAD_SECONDS", 1.5)
    stand = Stand(tmp_path, slack, socket_server)
    try:
        stand.source.values = {"r": 50}
        stand.step()
        socket_server.drop_silently()  # a NAT timeout: no close frame, no FIN, nothing passes any more
        started = time.monotonic()
        socket_server.wait_connected(timeout=30, count=2)  # a new connection, replacing the dead one
        assert time.monotonic() - started < 30
        wait_for(lambda: stand.health.connected, "the health to say connected again", timeout=30)
        assert stand.health.reconnects >= 2
        stand.click(actions.ACK, stand.episode())  # buttons work again, through the new connection
        wait_for(lambda: any("Acknowledged by <@U0ONCALL>" in r for r in stand.replies()), "the acknowledgement")
    finally:
        stand.close()
