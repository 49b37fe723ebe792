"""Hostile log data end to end: search -> engine -> state -> Slack (local server), logs and ``status``: all inert text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import TYPES, OneSource, ScriptedSource, scripted_rule
from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.search import CountingProxy
from tests.servers.slack_api import SlackServer
from tests.test_search import NOW, event, load, project, rule
from watchdog.cli import main
from watchdog.engine import Engine
from watchdog.escape import logfmt_decode, mrkdwn
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.state import StateStore

RUNBOOK = "https://runbook.example/app-errors"
HOSTILE = {
    "channel": "<!channel>",
    "here": "<!here>",
    "user": "<@U123>",
    "phish": "<https://evil.example|click here>",
    "fence": "team ``` <!channel> now live ```",
    "forged-line": "x\x1b[31m\r\n[CRITICAL] FIRING: forged\u2028level=error msg=forged\x0b",
    "long": "g" * 10_000,
    "formatting": "*bold* _it_ ~strike~ `code` :rotating_light:",
    "forged-alert": "alpha\n[CRITICAL] FIRING: forged-rule [prod]: all good",
    "quote": "> all good\n> really",
}
# What data must never make of a Slack message: formatting, a quote, a line of its own, a control character.
FORMATTED = ("*bold*", "_it_", "~strike~", "`code`", ":rotating_light:")
LIVE = re.compile(r"<[!@#]|<https?://(?!runbook\.example|dash\.example\.com)", re.IGNORECASE)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def mrkdwn_texts(value: Any) -> Iterator[str]:
    """Every text of a Slack request body: blocks' texts and the fallback."""
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield value["text"]
        for v in value.values():
            yield from mrkdwn_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from mrkdwn_texts(v)


def texts_by_type(value: Any, kind: str = "mrkdwn") -> Iterator[tuple[str, str]]:
    """(type, text) of every text of a Slack request body; the message's fallback ``text`` is mrkdwn."""
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield str(value.get("type") or kind), value["text"]
        for v in value.values():
            yield from texts_by_type(v, kind)
    elif isinstance(value, list):
        for v in value:
            yield from texts_by_type(v, kind)


def assert_inert(body: dict[str, Any]) -> None:
    for text in mrkdwn_texts(body):
        assert not LIVE.search(text), text
        assert not any(c in text for c in "\r\x1b\x0b\u2028"), text
    for kind, text in texts_by_type(body):
        shown = re.sub(r"<[^>]*>", "", text)  # (a link's target is not shown, and never formatted)
        if kind == "mrkdwn" and not text.startswith("```"):
            assert not any(f in shown for f in FORMATTED), text
        for line in (shown if not text.startswith("```") else "").split("\n"):
            assert "FIRING: forged" not in line or "\u23ce" in line, line  # the forged line stays on its own line
            assert not line.lstrip().startswith(("&gt;", ">")), line  # no block quote


def run(tmp_path: Path, search: CountingProxy, slack: SlackServer, teams: list[str]) -> tuple[Engine, Any]:
    load(search.url, [{**event(m, team), "message": f"user said {team}"} for team in teams for m in range(1, 4)])
    config = project(tmp_path, search.url, {
        "hostile": rule("hostile", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 1}\n"
                        "group_by: team\nsample: 2\nsample_fields: [team, message]\n"
                        f"runbook_url: {RUNBOOK}\n"
                        f"message: '*{{group}}* logged {{count}} errors: {{summary}} (<{RUNBOOK}|runbook>)'\n"),
    }, extra="")
    (tmp_path / "watchdog.yaml").write_text((tmp_path / "watchdog.yaml").read_text()
                                            + f"slack: {{token: xoxb-test, channel: '#alerts', base_url: '{slack.base_url}'}}\n")
    from watchdog.config import load_config

    config = load_config(str(tmp_path / "watchdog.yaml"))
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert config.slack is not None
    Outbox(engine.store, SlackNotifier(config.slack), clock=engine.clock, quiet_until=engine.quiet_until).deliver_due()
    return engine, config


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_one_hostile_group_reaches_slack_logs_and_status_as_text(
        name: str, tmp_path: Path, search: CountingProxy, slack: SlackServer, log_lines: list[str],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    value = HOSTILE[name]
    engine, config = run(tmp_path, search, slack, [value])
    assert set(engine.store.groups()["hostile"]) == {value}
    (post,) = slack.calls("chat.postMessage")
    assert_inert(post.body)
    blocks = post.body["blocks"]
    # the author's markup is live: bold group, the runbook link in the body and in the context block
    assert blocks[1]["text"]["text"].startswith("*")
    if name != "long":  # (10 kB of group: the body is cut before the link, never inside it)
        assert f"<{RUNBOOK}|runbook>" in blocks[1]["text"]["text"]
    assert blocks[-1]["type"] == "context" and f"<{RUNBOOK}|Runbook>" in blocks[-1]["elements"][0]["text"]
    if name == "long":  # 10 kB of group: the dashboards link is left out whole, never cut mid-URL
        assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks)
        assert "Open in dashboards" not in blocks[-1]["elements"][0]["text"]
    else:
        assert "|Open in dashboards>" in blocks[-1]["elements"][0]["text"]
    # logs: one line per event, the value inside its quotes
    for line in log_lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
        fields = logfmt_decode(line)
        assert fields["level"] in ("debug", "info", "warning", "error")
    transitions = [logfmt_decode(line) for line in log_lines if "msg=transition" in line]
    assert transitions and transitions[0]["group"] == value
    # status text: one line per group, nothing a terminal would act on
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["status", "-c", "watchdog.yaml"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u2028" not in out and "\x0b" not in out
    group_lines = [line for line in out.splitlines() if ": firing " in line]
    assert len(group_lines) == 1
    # test-rule's text: the replayed window holds the events; its notification lines stay lines
    start = (NOW - timedelta(minutes=40)).isoformat().replace("+00:00", "Z")
    end = (NOW + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    main(["test-rule", "-c", "watchdog.yaml", "rules/hostile.yaml", "--start", start, "--end", end])
    replay = capsys.readouterr().out
    assert "notifications:" in replay and "\x1b" not in replay and "\r" not in replay and "\u2028" not in replay
    assert not [line for line in replay.splitlines() if line.startswith("[CRITICAL] FIRING")]  # no forged line


def test_every_hostile_group_at_once_in_one_digest(tmp_path: Path, search: CountingProxy,
                                                             slack: SlackServer) -> None:
    teams = [v for k, v in HOSTILE.items() if k != "long"]
    run(tmp_path, search, slack, teams)
    (post,) = slack.calls("chat.postMessage")
    assert_inert(post.body)
    listed = "\n".join(b.get("text", {}).get("text", "") for b in post.body["blocks"])
    assert "alpha\u23ce[CRITICAL] FIRING: forged-rule" in listed and "\u2217bold\u2217" in listed
    assert "&lt;!channel&gt;" in listed and "&lt;@U123&gt;" in listed and "&lt;https://evil.example|click here&gt;" in listed


def test_a_lone_surrogate_in_a_group_is_stored_and_shown(tmp_path: Path, slack: SlackServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """It crashed the SQLite write; now it is one group (U+FFFD in place of the surrogate), every evaluation."""
    from tests.helpers import Clock as TestClock
    from watchdog.config import SlackConfig

    clock = TestClock(NOW)
    store = StateStore(str(tmp_path / "state.db"))
    source = ScriptedSource()
    engine = Engine([scripted_rule("r", repeat_every=timedelta(hours=4))], store, OneSource(source), clock=clock,
                    rule_types=TYPES)
    outbox = Outbox(store, SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url)),
                    clock=clock, quiet_until=engine.quiet_until)
    source.values = {"r": {"bad \ud800 team": 50, "<!here>\udfff": 60}}
    for _ in range(3):
        clock.now += timedelta(minutes=1)
        evaluate_now(engine)
    outbox.deliver_due()
    groups = store.groups()["r"]
    assert set(groups) == {"bad \ufffd team", "&lt;!here&gt;\ufffd".replace("&lt;", "<").replace("&gt;", ">")}
    assert {g.state.value for g in groups.values()} == {"firing"}
    (post,) = slack.calls("chat.postMessage")  # fired once, combined: not a new group each evaluation
    assert_inert(post.body)
    assert "\ufffd" in json.dumps(post.body, ensure_ascii=False)


@pytest.mark.parametrize("names", [["formatting"], ["forged-alert"], ["quote"],  # each alone: a message of its own
                                   [k for k in HOSTILE if k != "long"]])  # all at once: one digest
def test_hostile_table_values_reach_slack_as_text(tmp_path: Path, pg_db: str, slack: SlackServer,
                                                  names: list[str]) -> None:
    import psycopg2

    from tests.helpers import write_project

    values = [HOSTILE[name] for name in names]
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("create table teams (team text, errors int)")
        cur.executemany("insert into teams values (%s, 5)", [(v,) for v in values])
    conn.close()
    config = write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        slack: {{token: xoxb-test, channel: '#alerts', base_url: '{slack.base_url}'}}
        """, {"table": """\
        name: table
        type: sql_value
        source: warehouse
        threshold: {above: 1}
        checks: [{name: errors, sql: "select team, errors from teams"}]
        """})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert {g.removeprefix("errors/") for g in engine.store.groups()["table"]} == set(values)
    assert config.slack is not None
    Outbox(engine.store, SlackNotifier(config.slack), clock=engine.clock, quiet_until=engine.quiet_until).deliver_due()
    (post,) = slack.calls("chat.postMessage")
    assert_inert(post.body)
    shown = "\n".join(mrkdwn_texts(post.body))
    for value in values:  # each shown whole, escaped, on its line (the group is check/value)
        assert mrkdwn(f"errors/{value}") in shown, value
    if len(names) == 1:  # a message of its own: the Group field shows the value, on one line
        fields = [f["text"] for b in post.body["blocks"] for f in b.get("fields", [])]
        assert f"*Group*\n{mrkdwn('errors/' + values[0])}" in fields
