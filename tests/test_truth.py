"""What notifications say, read where the on-call engineer reads them: the local Slack API server.

Real sources behind each rule (osmem-server, PostgreSQL, the moto DMS server);
the messages go through the outbox and slack-sdk.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers import moto_dms
from tests.servers.moto_dms import MotoDms
from tests.servers.search import CountingProxy
from tests.servers.slack_api import SlackServer
from tests.test_dms import create_task, fail, remediate
from tests.test_freshness import SCHEMA, execute
from tests.test_search import event, load
from watchdog.config import SlackConfig
from watchdog.notify.outbox import Outbox
from watchdog.notify.render import render
from watchdog.notify.slack import SlackNotifier
from watchdog.durations import format_age
from watchdog.lifecycle import Kind, Notice
from watchdog.notify.digest import pages
from watchdog.rule import Rule, Severity
from watchdog.times import to_text

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def query_one(dsn: str, sql: str) -> Any:
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.close()
    return value


def load_at(dsn: str, ago: str) -> datetime:
    """Insert a load stamped ``ago`` before the database's now() (whole seconds); returns it."""
    return query_one(dsn, "insert into analytics.fact_logins_daily (updated_at) "
                          f"values (date_trunc('second', now()) - interval '{ago}') returning updated_at")


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def project(tmp_path: Path, slack: SlackServer, sources: str, rules: dict[str, str]) -> Any:
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
        {sources}
        slack: {{token: xoxb-test, channel: "#alerts", base_url: "{slack.base_url}", mention_critical: "<!here>"}}
        rule_refresh_sql: ["insert into refreshes default values"]
        """, rules)


def deliver(config: Any, engine: Any) -> Outbox:
    assert config.slack is not None
    outbox = Outbox(engine.store, SlackNotifier(config.slack), clock=engine.clock)
    assert outbox.flush(time.monotonic() + 10)
    return outbox


def posts(slack: SlackServer) -> list[dict[str, Any]]:
    return [r.body for r in slack.calls("chat.postMessage")]


def field(body: dict[str, Any], label: str) -> str | None:
    for block in body["blocks"]:
        for item in block.get("fields", []):
            if item["text"].startswith(f"*{label}*\n"):
                return str(item["text"].split("\n", 1)[1])
    return None


def sections(body: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b)


# --- resolutions state the present ---------------------------------------------------------------------------


def test_a_search_resolution_states_the_count_in_the_window_now(tmp_path: Path, search: CountingProxy,
                                                                slack: SlackServer) -> None:
    load(search.url, [event(m / 4) for m in range(2, 21)] + [event(8 + m / 4) for m in range(7)])  # 19 recent, 7 older
    rule = ("name: app-errors\ntype: threshold\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\nquery: 'level:error'\n"
            "window: 10m\nthreshold: {above: 20}\ndescription: Errors in the app logs\n")
    config = project(tmp_path, slack, f'  logs: {{type: search, hosts: ["{search.url}"]}}', {"app-errors": rule})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    deliver(config, engine)
    clock.now = NOW + timedelta(minutes=3)  # the 7 older events leave the window: 19 now
    evaluate_now(engine)
    deliver(config, engine)
    first, reply = posts(slack)
    assert first["text"] == "[WARNING] FIRING: app-errors: events 26 in the last 10m (above 20)"
    assert reply["text"] == "[OK] RESOLVED: app-errors: events 19 in the last 10m (above 20) now (resolved after 3m)"
    assert field(reply, "Value") == "19 (above 20)"
    (update,) = slack.calls("chat.update")
    rewritten = sections(update.body)
    assert "~events 26 in the last 10m (above 20)~" in rewritten
    assert "Now: events 19 in the last 10m (above 20) now (resolved after 3m)" in rewritten
    description = [b for b in first["blocks"] if b["type"] == "context" and b["elements"][0]["type"] == "plain_text"]
    assert description[0]["elements"][0]["text"] == "Errors in the app logs"


def test_a_freshness_resolution_states_the_age_now_and_since_is_the_last_load(tmp_path: Path, pg_db: str,
                                                                              slack: SlackServer) -> None:
    execute(pg_db, SCHEMA)
    # Ages are measured by the database's clock: loads are stamped relative to its now(), the engine runs on the host's.
    first_load = load_at(pg_db, "3 hours 2 minutes")
    rule = ("name: loads\ntype: freshness\nsource: warehouse\n"
            "checks: [{name: fact_logins, table: analytics.fact_logins_daily, loaded_at: updated_at}]\nwarn_after: 2h\n")
    config = project(tmp_path, slack, f'  warehouse: {{type: postgres, dsn: "{pg_db}"}}', {"loads": rule})
    clock = Clock(datetime.now(UTC))
    engine = engine_for(config, clock)
    evaluate_now(engine)
    deliver(config, engine)
    second_load = load_at(pg_db, "1 minute")
    clock.now = datetime.now(UTC)
    evaluate_now(engine)
    deliver(config, engine)
    first, reply = posts(slack)
    assert first["text"].startswith("[WARNING] FIRING: loads [fact_logins]: fact_logins last loaded 3h2m ago")
    assert field(first, "Since") == to_text(first_load)  # the last load, not when watchdog noticed
    assert reply["text"].startswith(f"[OK] RESOLVED: loads [fact_logins]: fact_logins loaded 1m ago now "
                                    f"({to_text(second_load)}); warn after 2h (resolved after 3h")
    assert "last loaded 3h" not in reply["text"]


def test_a_dms_alert_shows_the_stop_date_as_since_and_resolves_with_the_state_now(tmp_path: Path, moto: MotoDms,
                                                                                 slack: SlackServer) -> None:
    create_task(moto)
    stopped = NOW - timedelta(hours=2, minutes=5)
    fail(Stats={"StopDate": stopped.timestamp()})
    rule = "name: dms-failed\ntype: dms_task\nsource: aws\ntasks: [prod-to-warehouse]\nseverity: critical\n"
    config = project(tmp_path, slack, f'  aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}',
                     {"dms-failed": rule})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    deliver(config, engine)
    moto_dms.set_task("prod-to-warehouse", status="running", StopReason="", LastFailureMessage="")
    clock.now = NOW + timedelta(minutes=30)
    evaluate_now(engine)
    deliver(config, engine)
    first, reply = posts(slack)
    assert first["text"].startswith("<!here> [CRITICAL] FIRING: dms-failed [prod-to-warehouse]: task prod-to-warehouse is failed")
    assert field(first, "Since") == "2026-11-28T03:55:00Z"  # DMS's stop date
    assert reply["text"] == ("[OK] RESOLVED: dms-failed [prod-to-warehouse]: task prod-to-warehouse is running now "
                             "(resolved after 2h35m)")
    assert "is failed" not in reply["text"]


# --- dry runs never page; one severity for a transition and its notification ---------------------------------


def test_a_dry_run_never_pages(tmp_path: Path, moto: MotoDms, pg_db: str, slack: SlackServer) -> None:
    create_task(moto)
    fail()
    config = project(tmp_path, slack, f'  aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}\n'
                                      f'          warehouse: {{type: postgres, dsn: "{pg_db}"}}',
                     {"fix-dms": remediate(dry_run=True)})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    deliver(config, engine)
    first, step = posts(slack)
    assert first["text"].startswith("[INFO] DRY RUN REMEDIATION: fix-dms [prod-to-warehouse]: failure seen")
    assert first["blocks"][0]["text"]["text"] == ":large_blue_circle: DRY RUN REMEDIATION: fix-dms [prod-to-warehouse]"
    assert "<!" not in first["text"] and "CRITICAL" not in first["text"] + step["text"]
    assert step["thread_ts"] and "dry run: would restart" in step["text"]
    state = engine.store.groups()["fix-dms"]["prod-to-warehouse"]
    assert state.severity is Severity.INFO  # the transition is logged with the severity the message shows


def test_a_remediation_transition_has_the_severity_of_its_notification(tmp_path: Path, moto: MotoDms, pg_db: str,
                                                                      slack: SlackServer) -> None:
    create_task(moto)
    fail()
    moto_dms.set_task("prod-to-warehouse", hold_starting=True)  # the restart does not come back within the wait
    config = project(tmp_path, slack, f'  aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}"}}\n'
                                      f'          warehouse: {{type: postgres, dsn: "{pg_db}"}}',
                     {"fix-dms": remediate(wait="1s")})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    deliver(config, engine)
    first = posts(slack)[0]
    assert first["text"].startswith("<!here> [CRITICAL] REMEDIATION: fix-dms [prod-to-warehouse]")
    state = engine.store.groups()["fix-dms"]["prod-to-warehouse"]
    assert state.severity is Severity.CRITICAL
    transitions = [a for a in engine.store.audit("fix-dms") if a["action"] == "ok->firing"]
    assert transitions


# --- combined messages ------------------------------------------------------------------------------------------


def test_a_combined_message_shows_each_groups_severity(tmp_path: Path, pg_db: str, slack: SlackServer) -> None:
    execute(pg_db, SCHEMA)
    execute(pg_db, "insert into etl.runs values ('ga', date_trunc('second', now()) - interval '3 hours'), "
                   "('logs', date_trunc('second', now()) - interval '7 hours'), ('crm', now() - interval '5 minutes')")
    logs_load = query_one(pg_db, "select finished_at from etl.runs where source = 'logs'")
    rule = ("name: sources\ntype: freshness\nsource: warehouse\n"
            "checks: [{name: per-source, sql: \"select source, max(finished_at) from etl.runs group by source\"}]\n"
            "warn_after: 2h\nerror_after: 6h\n")
    config = project(tmp_path, slack, f'  warehouse: {{type: postgres, dsn: "{pg_db}"}}', {"sources": rule})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    deliver(config, engine)
    (digest,) = posts(slack)
    assert digest["text"] == "<!here> [CRITICAL] 2 alerts firing: 1 critical, 1 warning: sources (2)"
    lines = sections(digest).splitlines()
    assert lines[0] == "*sources* (2: 1 critical, 1 warning)"
    assert lines[1].startswith(":red_circle: [CRITICAL] FIRING per-source/logs: logs (check per-source) last loaded 7h ago")
    assert lines[1].endswith(f"(since {to_text(logs_load)})")
    assert lines[2].startswith(":large_orange_circle: [WARNING] FIRING per-source/ga: ga (check per-source) last loaded 3h ago")


# --- templates tell firing from resolved ------------------------------------------------------------------------


def test_templates_tell_firing_from_resolved(tmp_path: Path, search: CountingProxy, slack: SlackServer) -> None:
    load(search.url, [event(m / 4) for m in range(2, 30)])
    rule = ("name: app-errors\ntype: threshold\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\nquery: 'level:error'\n"
            "window: 10m\nthreshold: {above: 20}\nmessage: '{state}: {count} errors in {window}'\n"
            "resolved_message: '{state}: back to {count} errors in {window}'\n")
    config = project(tmp_path, slack, f'  logs: {{type: search, hosts: ["{search.url}"]}}', {"app-errors": rule})
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    clock.now = NOW + timedelta(hours=1)
    evaluate_now(engine)
    deliver(config, engine)
    first, reply = posts(slack)
    assert first["text"] == "[WARNING] FIRING: app-errors: firing: 28 errors in 10m"
    assert reply["text"] == "[OK] RESOLVED: app-errors: resolved: back to 0 errors in 10m (resolved after 1h)"


def test_an_unknown_placeholder_in_resolved_message_is_a_validation_error(tmp_path: Path) -> None:
    from watchdog.loader import load_rules

    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\n", {"r": (
        "name: r\ntype: dms_task\nsource: aws\nresolved_message: 'back: {statu}'\n")})
    problems = load_rules([config.rules_dir], None).problems
    assert any(p.path == "resolved_message" and "unknown placeholder '{statu}'" in p.message for p in problems)


# --- property: a resolution says the present and how long it lasted, and never pages ------------------------------


@settings(max_examples=50, deadline=None)
@given(now=st.text(max_size=200), minutes=st.integers(0, 60 * 24 * 30), severity=st.sampled_from(list(Severity)))
def test_a_rendered_resolution_is_the_present_and_its_duration(now: str, minutes: int, severity: Severity) -> None:
    rule = Rule(name="r", type="threshold", path="/r.yaml", options=None, message="{count} errors")
    notice = Notice(kind=Kind.RESOLVED, group="g", at=NOW, severity=severity, value=1, summary=now, episode="e",
                    since=NOW - timedelta(minutes=minutes))
    payload = render(rule, notice)
    assert payload["text"] == f"[OK] RESOLVED: r [g]: {now} (resolved after {format_age(timedelta(minutes=minutes))})"
    assert not pages(payload)  # (the firing template is not used for a resolution)


def test_a_burst_of_new_alerts_fetches_no_example_events(tmp_path: Path, search: CountingProxy, slack: SlackServer) -> None:
    from watchdog.ruletypes.search import MAX_SAMPLE_SEARCHES

    load(search.url, [event(m / 4, team=f"team-{t:02d}") for t in range(MAX_SAMPLE_SEARCHES + 1) for m in range(2, 30)])
    search.reset()
    rules = {f"per-team-{i}": (f"name: per-team-{i}\ntype: threshold\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\n"
                               "query: 'level:error'\nwindow: 10m\nthreshold: {above: 20}\ngroup_by: team\nsample: 3\n")
             for i in range(3)}  # 3 rules x 21 teams: 30 example searches wanted (10 per rule), over the limit
    config = project(tmp_path, slack, f'  logs: {{type: search, hosts: ["{search.url}"]}}', rules)
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert search.counts["POST /_msearch"] == 1  # the counting search only: the burst goes out as a digest
    assert all("samples" not in s.details for g in engine.store.groups().values() for s in g.values())
    deliver(config, engine)
    (digest,) = posts(slack)
    assert digest["text"].startswith(f"[WARNING] {3 * (MAX_SAMPLE_SEARCHES + 1)} alerts firing")
