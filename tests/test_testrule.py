"""``watchdog test-rule``: replays on the local search server with known bursts; no side effects."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers.search import CountingProxy
from tests.servers.slack_api import SlackServer
from tests.test_search import load
from watchdog.config import load_config
from watchdog.loader import load_rules
from watchdog.sources import Sources
from watchdog.cli import parse_time
from watchdog.rule import Schedule
from watchdog.testrule import MAX_TICKS, replay, ticks_for
from watchdog.times import to_text

REPO = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def ev(at: datetime, team: str, level: str = "error", duration: int = 100, service: str = "api") -> dict[str, Any]:
    return {"@timestamp": at.isoformat().replace("+00:00", "Z"), "team": team, "level": level, "service": service,
            "duration_ms": duration, "message": f"userId=u1 team={team} event=x"}


@pytest.fixture
def bursts(search: CountingProxy) -> CountingProxy:
    """A day of background noise, a team-a burst 02:10-02:20 (10 errors/min), team-b quiet from 04:00, billing only until 05:00."""
    events = []
    for minute in range(0, 8 * 60, 3):
        at = DAY + timedelta(minutes=minute)
        events.append(ev(at, "team-a", level="info", duration=100 + minute % 50))
        if minute < 4 * 60:
            events.append(ev(at, "team-b", level="info", duration=300))
        if minute < 5 * 60:
            events.append(ev(at, "team-c", level="info", service="billing"))
    for minute in range(130, 140):
        for second in range(0, 60, 6):
            events.append(ev(DAY + timedelta(minutes=minute, seconds=second), "team-a", duration=900))
    load(search.url, events)
    search.reset()
    return search


def project(tmp_path: Path, url: str, rules: dict[str, str], slack: SlackServer | None = None, extra: str = "") -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    slack_block = f"slack: {{token: xoxb-test, channel: '#alerts', base_url: '{slack.base_url}'}}\n" if slack else ""
    (tmp_path / "watchdog.yaml").write_text(
        f"rules_dir: rules\nstate_path: state.db\nsources:\n  logs: {{type: search, hosts: ['{url}']}}\n{extra}{slack_block}")
    for name, body in rules.items():
        (tmp_path / "rules" / f"{name}.yaml").write_text(f"name: {name}\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\n{body}")
    return tmp_path


BURST = "type: threshold\nquery: 'level:error'\nwindow: 5m\nthreshold: {above: 20}\ngroup_by: team\nschedule: {every: 1m}\nrepeat_every: 1h\n"


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchdog", "test-rule", *args, "-c", str(root / "watchdog.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_transitions_at_the_expected_times(tmp_path: Path, bursts: CountingProxy, slack: SlackServer) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST}, slack)
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T00:00:00Z",
                     "--end", "2026-11-27T06:00:00Z", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["rule"], doc["ticks"], doc["mode"], doc["requests"]) == ("burst", 361, "aggregated", 1)
    assert [(t["at"], t["group"], t["from"], t["to"]) for t in doc["transitions"]] == [
        ("2026-11-27T02:13:00Z", "team-a", "ok", "firing"),  # 3 minutes of 10/min: 30 > 20
        ("2026-11-27T02:23:00Z", "team-a", "firing", "resolved")]  # down to 2 minutes: 20
    assert [n["kind"] for n in doc["notifications"]] == ["firing", "resolved"]
    assert doc["notifications"][0]["text"].startswith("[WARNING] FIRING: burst [team-a]: events 30 for team=team-a")
    assert doc["notifications"][0]["blocks"][0]["type"] == "header"
    assert doc["actions"] == [] and doc["errors"] == []
    assert bursts.counts["POST /_msearch"] == 1
    assert slack.calls() == [] and not (root / "state.db").exists()  # no side effects


def test_text_output_shows_a_sparkline(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST})
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T00:00:00Z", "--end", "2026-11-27T06:00:00Z")
    assert result.returncode == 0, result.stderr
    assert "361 tick(s), aggregated, 1 search request(s)" in result.stdout
    assert "vs above 20; 10 tick(s) breach:" in result.stdout
    assert "█" in result.stdout and "2026-11-27T02:13:00Z team-a: ok -> firing value=30 warning" in result.stdout


@pytest.mark.parametrize("body", [
    BURST,
    "type: threshold\nwindow: 10m\ndelay: 2m\nthreshold: {below: 1}\ngroup_by: team\nschedule: {every: 2m}\n",
    "type: threshold\nquery: 'service:billing'\nwindow: 15m\nthreshold: {below: 2}\nschedule: {every: 5m}\nfor: 10m\n",
    "type: metric\nwindow: 10m\nmetric: {avg: duration_ms}\nthreshold: {above: 150}\ngroup_by: team\nschedule: {every: 2m}\n",
    "type: metric\nwindow: 4m\nmetric: {max: duration_ms}\nthreshold: {above: 500}\nschedule: {every: 1m}\n",
    "type: metric\nwindow: 6m\nmetric: {sum: duration_ms}\nthreshold: {below: 400}\ngroup_by: team\nschedule: {every: 3m}\n",
    "type: ratio\nnumerator: 'level:error'\nwindow: 5m\ngroup_by: team\nmin_denominator: 5\n"
    "threshold: {above: {warning: 0.5, critical: 0.8}}\nschedule: {every: 1m}\n",
    "type: ratio\nquery: 'team:team-a'\nnumerator: 'level:error'\ndenominator: 'level:info OR level:error'\nwindow: 10m\n"
    "delay: 2m\nthreshold: {above: 0.5}\nschedule: {every: 2m}\nkeep_firing_for: 6m\n",
    "type: spike\nquery: 'level:error'\nwindow: 10m\noffset: 1h\ngroup_by: team\nmin_count: 10\n"
    "threshold: {ratio_above: 3}\nschedule: {every: 1m}\n",
    "type: spike\nwindow: 30m\noffset: 1h\ngroup_by: service\nmin_count: 5\nthreshold: {ratio_below: 0.5}\n"
    "schedule: {every: 5m}\n",
    "type: spike\nwindow: 10m\noffset: 2h\nmetric: {avg: duration_ms}\nthreshold: {ratio_above: 1.5}\nschedule: {every: 2m}\n",
])
def test_aggregated_replay_equals_tick_by_tick(tmp_path: Path, bursts: CountingProxy, body: str) -> None:
    root = project(tmp_path, bursts.url, {"r": body})
    config = load_config(str(root / "watchdog.yaml"))
    (rule,) = load_rules([str(root / "rules" / "r.yaml")], config).rules
    start, end = DAY + timedelta(hours=1), DAY + timedelta(hours=7)
    sources = Sources(config.sources)
    aggregated = replay(rule, sources, start, end)
    per_tick = replay(rule, sources, start, end, force_per_tick=True)
    sources.close()
    assert (aggregated.mode, per_tick.mode) == ("aggregated", "per-tick")
    assert aggregated.transitions == per_tick.transitions and aggregated.transitions
    assert [n["text"] for n in aggregated.notifications] == [n["text"] for n in per_tick.notifications]
    assert [round(v or 0, 6) for _, v in aggregated.series] == [round(v or 0, 6) for _, v in per_tick.series]
    assert aggregated.requests == 1 and per_tick.requests == -(-len(per_tick.ticks) // 100)


def test_percentile_falls_back_to_batched_searches(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"p": "type: metric\nwindow: 5m\nmetric: {percentile: {field: duration_ms, percent: 95}}\n"
                                                "threshold: {above: 800}\nschedule: {every: 1m}\n"})
    result = run_cli(root, str(root / "rules" / "p.yaml"), "--start", "2026-11-27T02:00:00Z", "--end", "2026-11-27T03:00:00Z",
                     "--format", "json")
    doc = json.loads(result.stdout)
    assert (doc["mode"], doc["ticks"], doc["requests"]) == ("per-tick", 61, 1)
    assert doc["transitions"][0]["at"] == "2026-11-27T02:11:00Z"


def test_invalid_rule_exits_one_and_source_errors_exit_two(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"bad": "type: threshold\nwindow: 5 minutes\nthreshold: {above: 1}\n",
                                          "broken": "type: threshold\nquery: 'level:(error'\nwindow: 5m\nthreshold: {above: 1}\n"})
    invalid = run_cli(root, str(root / "rules" / "bad.yaml"))
    assert invalid.returncode == 1 and "'5 minutes' is not a duration" in invalid.stderr
    broken = run_cli(root, str(root / "rules" / "broken.yaml"), "--start", "2026-11-27T02:00:00Z", "--end", "-1d")
    assert broken.returncode == 2 and "level:(error" in broken.stderr


def test_send_posts_one_preview(tmp_path: Path, bursts: CountingProxy, slack: SlackServer) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST}, slack)
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T02:00:00Z", "--end", "2026-11-27T03:00:00Z",
                     "--send")
    assert result.returncode == 0, result.stderr
    (post,) = slack.calls("chat.postMessage")
    assert post.body["text"].startswith("(preview) [WARNING] FIRING: burst [team-a]")


def test_present_only_rules_say_so_and_change_nothing(tmp_path: Path, pg_db: str, moto, slack: SlackServer) -> None:
    import boto3

    from tests.servers import moto_dms
    from tests.test_dms import create_task, fail

    create_task(moto)
    fail()
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(
        f"rules_dir: rules\nstate_path: state.db\nsources:\n  aws: {{type: dms, region: us-east-1, endpoint_url: '{moto.url}'}}\n"
        f"  warehouse: {{type: postgres, dsn: '{pg_db}'}}\nrule_refresh_sql: ['create table x (i int)']\n"
        f"slack: {{token: xoxb-test, channel: '#alerts', base_url: '{slack.base_url}'}}\n")
    (tmp_path / "rules" / "fix.yaml").write_text(
        "name: fix\ntype: dms_remediate\nsource: aws\nrefresh: {source: warehouse, sql: 'create table x (i int)'}\n")
    result = run_cli(tmp_path, str(tmp_path / "rules" / "fix.yaml"), "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["note"].startswith("dms_remediate rules evaluate the present only")
    assert [a["kind"] for a in doc["actions"]] == ["firing", "action"]
    assert "dry run: would restart prod-to-warehouse with resume-processing" in doc["actions"][1]["text"]
    assert set(moto.calls()) == {"DescribeReplicationTasks"} and slack.calls() == []
    assert not (tmp_path / "state.db").exists()
    text = run_cli(tmp_path, str(tmp_path / "rules" / "fix.yaml"))
    assert text.returncode == 0 and "search request" not in text.stdout and doc["requests"] == 0  # it makes none
    assert moto_dms.dms_backends  # the task is still failed: nothing was restarted
    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    assert dms.describe_replication_tasks()["ReplicationTasks"][0]["Status"] == "failed"


# --- the whole range, options that agree, a summary that agrees -------------------------------------------------


def test_thirty_days_at_one_minute_ticks_find_the_last_days_transition(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST})
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-10-28T06:00:00Z",
                     "--end", "2026-11-27T06:00:00Z", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["ticks"], doc["ticks_left_out"], doc["replayed_from"]) == (30 * 24 * 60 + 1, 0, "2026-10-28T06:00:00Z")
    assert (doc["mode"], doc["requests"]) == ("aggregated", 9)  # 5,000 ticks per histogram request
    assert [(t["at"], t["to"]) for t in doc["transitions"]] == [("2026-11-27T02:13:00Z", "firing"),
                                                               ("2026-11-27T02:23:00Z", "resolved")]
    assert "note" not in doc


def test_past_the_cap_the_oldest_ticks_are_left_out_and_said_first(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST})
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-10-01T00:00:00Z",
                     "--end", "2026-11-27T06:00:00Z")
    assert result.returncode == 0, result.stderr
    first, header = result.stdout.splitlines()[:2]
    total = (datetime(2026, 11, 27, 6, tzinfo=UTC) - datetime(2026, 10, 1, tzinfo=UTC)) // timedelta(minutes=1) + 1
    replayed_from = to_text(datetime(2026, 11, 27, 6, tzinfo=UTC) - timedelta(minutes=MAX_TICKS - 1))
    assert first == (f"note: the range holds {total} ticks at this schedule; the newest {MAX_TICKS} are replayed, "
                     f"from {replayed_from}, and the oldest {total - MAX_TICKS} are left out "
                     "(narrow the range with --start/--end or --last)")
    assert header.startswith(f"rule burst (threshold): {replayed_from} .. 2026-11-27T06:00:00Z, {MAX_TICKS} tick(s)")
    assert "2026-11-27T02:13:00Z team-a: ok -> firing" in result.stdout  # the newest data is never the part left out


def test_ticks_keep_the_newest_when_capped() -> None:
    start, end = DAY, DAY + timedelta(hours=1)
    every = Schedule(every=timedelta(minutes=1))
    assert ticks_for(every, start, end, limit=1000) == ([DAY + timedelta(minutes=m) for m in range(61)], 0)
    assert ticks_for(every, start, end, limit=10) == ([DAY + timedelta(minutes=m) for m in range(51, 61)], 51)
    cron = Schedule(cron="*/5 * * * *", timezone="UTC")
    assert ticks_for(cron, start, end, limit=1000) == ([DAY + timedelta(minutes=m) for m in range(0, 61, 5)], 0)
    assert ticks_for(cron, start, end, limit=3) == ([DAY + timedelta(minutes=m) for m in (50, 55, 60)], 10)
    assert ticks_for(every, end, start) == ([], 0)


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 10**6), span=st.integers(0, 10**5), step=st.integers(1, 3600), limit=st.integers(1, 500))
def test_ticks_are_the_newest_aligned_runs(start: int, span: int, step: int, limit: int) -> None:
    begin, end = DAY + timedelta(seconds=start), DAY + timedelta(seconds=start + span)
    ticks, left_out = ticks_for(Schedule(every=timedelta(seconds=step)), begin, end, limit=limit)
    everything = [t for t in (datetime.fromtimestamp(k * step, UTC) for k in range(
        int(begin.timestamp()) // step - 1, int(end.timestamp()) // step + 2)) if begin <= t <= end]
    assert ticks == everything[len(everything) - len(ticks):] and len(ticks) == min(limit, len(everything))
    assert left_out == len(everything) - len(ticks)


def test_start_and_last_together_are_refused(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"burst": BURST})
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T00:00:00Z", "--last", "1h")
    assert result.returncode == 2 and result.stdout == ""
    assert "--start 2026-11-27T00:00:00Z and --last 1h disagree" in result.stderr and "give --start with --end" in result.stderr
    both = run_cli(root, str(root / "rules" / "burst.yaml"), "--end", "-1h", "--last", "1h")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    empty = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T02:00:00Z", "--end", "2026-11-27T01:00:00Z")
    assert empty.returncode == 2 and "the range 2026-11-27T02:00:00Z .. 2026-11-27T01:00:00Z is empty" in empty.stderr
    bad = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "yesterday")
    assert bad.returncode == 2 and "'yesterday' is not a time: use ISO 8601" in bad.stderr


def test_a_firing_flatline_counts_its_breaching_ticks(tmp_path: Path, bursts: CountingProxy) -> None:
    # team-b stops logging at 04:00: from 04:10 its 10-minute window is empty, while team-a keeps logging.
    root = project(tmp_path, bursts.url, {"quiet": "type: threshold\nwindow: 10m\nthreshold: {below: 1}\ngroup_by: team\n"
                                                    "schedule: {every: 5m}\n"})
    result = run_cli(root, str(root / "rules" / "quiet.yaml"), "--start", "2026-11-27T03:00:00Z", "--end", "2026-11-27T04:30:00Z")
    assert result.returncode == 0, result.stderr
    doc = json.loads(run_cli(root, str(root / "rules" / "quiet.yaml"), "--start", "2026-11-27T03:00:00Z",
                             "--end", "2026-11-27T04:30:00Z", "--format", "json").stdout)
    assert [(t["at"], t["group"], t["to"]) for t in doc["transitions"]] == [("2026-11-27T04:10:00Z", "team-b", "firing")]
    assert doc["breaching_ticks"] == 5  # 04:10 .. 04:30
    assert "min over groups per tick (1 tick(s) per column) vs below 1; 5 tick(s) breach:" in result.stdout
    assert result.stdout.splitlines()[2].endswith("▁" * 5)  # the zero shows while it fires


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=30), st.from_regex(r"-([0-9]{1,15}(ms|s|m|h|d|w)){1,2}", fullmatch=True),
                 st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z"))))
def test_command_line_times_parse_or_say_how(text: str) -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    try:
        moment = parse_time(text, now)
    except ValueError as exc:
        assert "use ISO 8601 (2026-11-28T02:00:00Z) or a time relative to now (-2h" in str(exc)
    else:
        assert moment.tzinfo is not None
        if text.startswith("-"):
            assert moment <= now


def test_text_lists_the_newest_notifications_and_says_how_many_are_left_out(tmp_path: Path, bursts: CountingProxy) -> None:
    # Fires every tick from the start and repeats each minute: more notifications than the text shows.
    root = project(tmp_path, bursts.url, {"noisy": "type: threshold\nwindow: 5m\nthreshold: {above: 0}\ngroup_by: team\n"
                                                    "schedule: {every: 1m}\nrepeat_every: 1m\n"})
    args = (str(root / "rules" / "noisy.yaml"), "--start", "2026-11-27T03:00:00Z", "--end", "2026-11-27T03:30:00Z")
    doc = json.loads(run_cli(root, *args, "--format", "json").stdout)
    total = len(doc["notifications"])
    assert total > 20
    text = run_cli(root, *args).stdout.splitlines()
    at = text.index(f"notifications: {total} (the oldest {total - 20} not shown here; --format json lists all)")
    newest = doc["notifications"][-20:]
    assert text[at + 1:at + 21] == [f"  {n['at']} {n['kind']}: {n['text']}" for n in newest]


def test_each_notification_shows_its_receivers_and_nothing_is_paged(tmp_path: Path, bursts: CountingProxy,
                                                                     pagerduty: Any) -> None:
    extra = (f"receivers:\n  pager: {{type: pagerduty, routing_key: routing-key-for-tests-0001, url: '{pagerduty.url}'}}\n"
             "routes:\n  - {match: {rule: burst}, receivers: [pager], mute_time_intervals: [nights], continue: true}\n"
             "  - {receivers: [console]}\n"
             "time_intervals:\n  nights: {times: ['00:00-02:20']}\n")
    root = project(tmp_path, bursts.url, {"burst": BURST}, extra=extra)
    result = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T00:00:00Z",
                     "--end", "2026-11-27T06:00:00Z", "--format", "json")
    assert result.returncode == 0, result.stderr
    firing, resolved = json.loads(result.stdout)["notifications"]
    assert (firing["receivers"], firing["held"]) == (["console"], ["pager"])  # 02:13: the night mutes the pager
    assert resolved["receivers"] == ["pager", "console"] and "held" not in resolved
    text = run_cli(root, str(root / "rules" / "burst.yaml"), "--start", "2026-11-27T00:00:00Z",
                   "--end", "2026-11-27T06:00:00Z")
    assert "2026-11-27T02:13:00Z firing -> console (held back: pager): [WARNING] FIRING: burst" in text.stdout
    assert pagerduty.received == []  # a dry run never pages


DROPS_OUT = "type: threshold\nquery: 'level:error'\nwindow: 2m\nthreshold: {above: 5}\ngroup_by: team\nschedule: {every: 1m}\n"
RATIO = ("type: ratio\nnumerator: 'level:error'\nwindow: 5m\ngroup_by: team\nmin_denominator: 5\n"
         "threshold: {above: 0.5}\nschedule: {every: 1m}\n")


def test_resolutions_state_the_value_now_zero_when_the_group_dropped_out(tmp_path: Path, bursts: CountingProxy) -> None:
    root = project(tmp_path, bursts.url, {"drops": DROPS_OUT, "ratio": RATIO})
    result = run_cli(root, str(root / "rules" / "drops.yaml"), "--start", "2026-11-27T02:00:00Z",
                     "--end", "2026-11-27T02:40:00Z", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (resolved,) = [t for t in doc["transitions"] if t["to"] == "resolved"]
    assert resolved["value"] == 0  # team-a has no error left in the window: it dropped out of the search
    (note,) = [n for n in doc["notifications"] if n["kind"] == "resolved"]
    assert note["text"].startswith("[OK] RESOLVED: drops [team-a]: events 0 for team=team-a in the last 2m (above 5) now")
    text = run_cli(root, str(root / "rules" / "ratio.yaml"), "--start", "2026-11-27T02:00:00Z",
                   "--end", "2026-11-27T02:40:00Z")
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if " -> " in line and "value=" in line]
    values = [line.split("value=")[1].split(" ")[0] for line in lines]
    assert any(values) and all(len(v.replace(".", "").lstrip("0")) <= 4 for v in values), lines  # rounded as in Slack
    assert "RESOLVED: ratio [team-a]:  (" not in text.stdout  # never an empty resolution
