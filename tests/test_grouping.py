"""Per-channel grouping in the outbox, through slack-sdk and the local Slack API server."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock
from tests.servers.slack_api import SlackServer
from tests.test_engine import tick
from watchdog.config import SlackConfig
from watchdog.engine import Engine
from watchdog.notify.digest import MAX_ENTRIES, MAX_LINES_PER_RULE, digest
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.notify.slack_blocks import MAX_BLOCKS, MAX_HEADER, MAX_SECTION, digest_blocks, digest_layout
from watchdog.rule import NotifyTarget, Severity
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
WAIT = timedelta(seconds=3)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def setup(tmp_path: Path, slack: SlackServer, rules, *, webhook: bool = False, quiet: bool = False, **kw):
    clock = Clock(T0)
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    kw = {"group_wait": WAIT, **kw}
    config = SlackConfig(webhook_url=slack.webhook_url, **kw) if webhook else \
        SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url, **kw)
    engine = Engine(rules, store, OneSource(source), clock=clock, rule_types=TYPES)
    outbox = Outbox(store, SlackNotifier(config), clock=clock, quiet_until=engine.quiet_until if quiet else None)
    return clock, store, source, engine, outbox


def sections(body: dict) -> str:
    return "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b)


def rule(name: str, severity: Severity = Severity.WARNING, channel: str | None = None):
    return replace(scripted_rule(name), severity=severity, notify=NotifyTarget(channel=channel))


def test_a_burst_waits_for_the_group_wait_then_goes_out_as_one_message_most_severe_first(tmp_path: Path,
                                                                                          slack: SlackServer) -> None:
    rules = [rule("a-low", Severity.INFO), rule("b-mid"), rule("c-high", Severity.CRITICAL)]
    clock, store, source, engine, outbox = setup(tmp_path, slack, rules, mention_critical="<!here>")
    source.values = {"a-low": 20, "b-mid": 30, "c-high": 40}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert outbox.deliver_due() == 0 and slack.calls() == []  # within the wait: held
    assert outbox.wake_at == clock.now + WAIT
    clock.now += WAIT
    assert outbox.deliver_due() == 3
    (post,) = slack.calls("chat.postMessage")
    assert post.body["text"] == "<!here> [CRITICAL] 3 alerts firing: 1 critical, 1 warning, 1 info: c-high, b-mid, a-low"
    text = sections(post.body)
    assert text.index("c-high") < text.index("b-mid") < text.index("a-low")
    assert "[CRITICAL] FIRING: value 40" in text and "[WARNING] FIRING: value 30" in text and "[INFO] FIRING: value 20" in text
    assert post.body["blocks"][0]["text"]["text"] == ":red_circle: [CRITICAL] 3 alerts firing: 1 critical, 1 warning, 1 info"


def test_a_single_alert_goes_out_as_itself(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a"), rule("b")])
    source.values = {"a": 20}
    clock.now += timedelta(minutes=1)
    tick(engine)
    clock.now += WAIT
    assert outbox.deliver_due() == 1
    (post,) = slack.calls("chat.postMessage")
    assert post.body["text"] == "[WARNING] FIRING: a: value 20"
    assert post.body["blocks"][0]["text"]["text"] == ":large_orange_circle: FIRING: a"


def test_the_wait_ends_as_soon_as_no_evaluation_can_add_to_the_group(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a"), rule("b")], quiet=True)
    source.values = {"a": 20, "b": 30}
    clock.now += timedelta(minutes=1)
    tick(engine)  # both rules evaluated and applied; the next run is a minute away
    assert engine.quiet_until() > clock.now + WAIT
    assert outbox.deliver_due() == 2 and len(slack.calls("chat.postMessage")) == 1


def test_channels_are_grouped_apart(tmp_path: Path, slack: SlackServer) -> None:
    rules = [rule("a"), rule("b"), rule("c", channel="#other")]
    clock, store, source, engine, outbox = setup(tmp_path, slack, rules)
    source.values = {"a": 20, "b": 30, "c": 40}
    clock.now += timedelta(minutes=1)
    tick(engine)
    clock.now += WAIT
    assert outbox.deliver_due() == 3
    posts = {p.body["channel"]: p.body["text"] for p in slack.calls("chat.postMessage")}
    assert posts == {"#alerts": "[WARNING] 2 alerts firing: 2 warning: a, b", "#other": "[WARNING] FIRING: c: value 40"}


def test_follow_ups_in_one_thread_within_the_wait_are_one_reply(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a"), rule("b"), rule("c")])
    source.values = {"a": 20, "b": 30, "c": 40}
    clock.now += timedelta(minutes=1)
    tick(engine)
    clock.now += WAIT
    outbox.deliver_due()
    source.values = {}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert outbox.deliver_due() == 0  # replies wait too
    clock.now += WAIT
    assert outbox.deliver_due() == 3
    root, reply = slack.calls("chat.postMessage")
    ts = next(iter(slack.messages))[1]
    assert reply.body["thread_ts"] == ts and reply.body["text"].startswith("[OK] 3 resolved: a, b, c")
    assert "<!" not in reply.body["text"]


def test_webhook_bursts_are_one_message_and_a_flood_is_cut_into_messages_that_name_every_rule(tmp_path: Path,
                                                                                          slack: SlackServer) -> None:
    rules = [rule(f"r{i:03d}") for i in range(MAX_ENTRIES + 20)]
    clock, store, source, engine, outbox = setup(tmp_path, slack, rules, webhook=True)
    source.values = {r.name: 20 for r in rules}
    clock.now += timedelta(minutes=1)
    tick(engine)
    clock.now += WAIT
    assert outbox.deliver_due() == len(rules)
    hooks = slack.calls("webhook")
    assert len(hooks) == 2
    named = [r.name for r in rules if any(f"*{r.name}*" in sections(h.body) for h in hooks)]
    assert named == [r.name for r in rules]
    assert all(len(h.body["blocks"]) <= MAX_BLOCKS for h in hooks)


def test_a_stop_sends_what_its_budget_allows_and_the_next_start_sends_the_rest(tmp_path: Path, slack: SlackServer,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.4)  # per channel
    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a"), rule("b")])
    source.values = {"a": 20}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert outbox.flush(time.monotonic() + 5)
    source.values = {"a": 20, "b": 20}
    clock.now += timedelta(minutes=1)
    tick(engine)
    assert outbox.flush(time.monotonic() + 5)  # two messages, two threads
    source.values = {}
    clock.now += timedelta(minutes=1)
    tick(engine)  # two resolutions: one reply in each thread, paced
    time.sleep(0.5)
    started = time.monotonic()
    assert not outbox.flush(started + 0.1)  # room to start one message
    assert time.monotonic() - started < 0.5
    # One resolution left, and the rewrite of the first message that the sent one recorded (its own entry).
    assert sorted(r[0] for r in store.db.execute("select kind from outbox where sent_at is null")) == ["resolved", "update"]
    store.close()
    again = StateStore(str(tmp_path / "state.db"))  # the next start sends the rest
    later = Outbox(again, SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url)),
                   clock=clock)
    assert later.flush(time.monotonic() + 5) and again.outbox_depth() == 0
    replies = [p.body["text"] for p in slack.calls("chat.postMessage") if "thread_ts" in p.body]
    assert sorted(replies) == ["[OK] RESOLVED: a: value 0 now (resolved after 2m)",
                               "[OK] RESOLVED: b: value 0 now (resolved after 1m)"]


payloads = st.builds(
    lambda rule, group, kind, severity, body, dry: {
        "rule": rule, "group": group, "kind": kind, "severity": severity, "body": body, "dry_run": dry,
        "details": {"dashboard_url": "https://dash/x"}, "since": "2026-11-28T02:00:00Z"},
    st.sampled_from(["a", "b", "c-rule", "d"]), st.text(max_size=300),
    st.sampled_from(["firing", "repeat", "severity", "resolved", "error", "recovered", "action"]),
    st.sampled_from(["info", "warning", "critical"]), st.text(max_size=5000), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(payloads, min_size=2, max_size=MAX_ENTRIES))
def test_any_digest_fits_slack_and_counts_every_notification(items: list[dict]) -> None:
    result = digest(items)
    assert sum(block["count"] for block in result["rules"]) == len(items)
    for block in result["rules"]:
        assert len(block["entries"]) == min(block["count"], MAX_LINES_PER_RULE)
        assert block["more"] == block["count"] - len(block["entries"])
    ranks = [(e["kind"] in ("resolved", "recovered")) for block in result["rules"] for e in block["entries"]]
    assert ranks[0] == all(ranks)  # a problem, when there is one, comes first
    if any(p["severity"] == "critical" and p["kind"] in ("firing", "severity") and not p["dry_run"] for p in items):
        assert result["pages"] and result["shown"] == "CRITICAL"
    else:
        assert not result["pages"]
    blocks = digest_blocks(result)
    assert len(blocks) <= MAX_BLOCKS and len(blocks[0]["text"]["text"]) <= MAX_HEADER
    assert all(len(b["text"]["text"]) <= MAX_SECTION for b in blocks)
    body = "\n".join(b["text"]["text"] for b in blocks[1:])
    assert "<" not in body.replace("<https://dash/x|dashboards>", "")  # data never becomes markup


@settings(max_examples=40, deadline=None)
@given(st.lists(payloads, min_size=2, max_size=MAX_ENTRIES), st.booleans())
def test_every_firing_alert_of_any_digest_has_its_menu_in_the_digest_or_its_thread(items: list[dict], live: bool) -> None:
    items = [{**p, "episode": f"{i:032x}", "details": {**p["details"], "samples": [{"message": p["body"][:50]}]}}
             for i, p in enumerate(items)]
    result = digest(items)
    blocks, leftover = digest_layout(result, menus=live)
    assert len(blocks) <= MAX_BLOCKS and all(len(b["text"]["text"]) <= MAX_SECTION for b in blocks)
    inline = [b["accessory"]["options"][0]["value"].split(" ")[1] for b in blocks if "accessory" in b]
    listed = {e["episode"] for r in result["rules"] for e in r["entries"] if e["episode"]}
    assert (set(inline) | {e["episode"] for e in leftover}) == (listed if live else set())
    assert len(inline) + len(leftover) == len(listed if live else ())  # each once
    assert all(p["kind"] == "firing" and not p["dry_run"] for p in items if p["episode"] in listed)
    shows_samples = any(b["text"]["text"].startswith("```") for b in blocks if "text" in b and b["type"] == "section")
    assert shows_samples == (len(items) <= 10 and any(e for r in result["rules"] for e in r["entries"]))


def test_remediation_steps_in_a_digest_are_steps_not_alerts() -> None:
    steps = [{"rule": "heal", "group": f"task-{i}", "kind": kind, "severity": "warning", "body": "restarted",
              "step": True} for i, kind in enumerate(["firing", "action", "action"])]
    result = digest(steps)
    assert result["title"] == "3 remediation steps" and "alerts firing" not in result["text"]
    assert result["rules"][0]["severities"] == {"step": 3}
    mixed = digest([*steps, {"rule": "app", "group": "", "kind": "firing", "severity": "critical", "body": "x"}])
    assert mixed["title"] == "1 alert firing: 1 critical; 3 remediation steps"


def test_a_digest_of_six_alerts_shows_their_example_events() -> None:
    alerts = [{"rule": f"r{i}", "group": "", "kind": "firing", "severity": "warning", "body": "errors",
               "episode": f"{i:032x}", "details": {"samples": [{"message": f"NullPointerException in handler {i}"}]}}
              for i in range(6)]
    text = json.dumps(digest_blocks(digest(alerts)))
    assert all(f"NullPointerException in handler {i}" in text for i in range(6))


def test_group_wait_zero_sends_each_alert_on_its_own(tmp_path: Path, slack: SlackServer) -> None:
    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a"), rule("b")], group_wait=timedelta(0))
    source.values = {"a": 20, "b": 30}
    clock.now += timedelta(minutes=1)
    tick(engine)  # both in the same evaluation
    assert outbox.deliver_due() == 2
    assert len(slack.calls("chat.postMessage")) == 2
    assert all("alerts firing" not in p.body["text"] for p in slack.calls("chat.postMessage"))
    store.close()


def test_a_routes_group_wait_of_zero_sends_each_alert_on_its_own_too(tmp_path: Path, slack: SlackServer) -> None:
    from watchdog.lifecycle import Health

    clock, store, source, engine, outbox = setup(tmp_path, slack, [rule("a")])
    for name in ("x", "y"):  # two alerts of one evaluation, routed with group_wait: 0s
        store.record_evaluation(name, ran_at=clock.now, next_run=clock.now + timedelta(minutes=1), duration=0.0,
                                health=Health(), states={}, notifications=[
                                    ("", "firing", f"episode-{name}", {"rule": name, "kind": "firing", "title": name,
                                                                       "text": f"FIRING: {name}", "group_wait": 0.0})])
    assert outbox.deliver_due() == 2
    assert [p.body["text"] for p in slack.calls("chat.postMessage")] == ["FIRING: x", "FIRING: y"]
    store.close()
