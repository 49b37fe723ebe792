"""Routes and time intervals: the pure routing function, its config checks and ``watchdog routes``."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.cli import main
from watchdog.config import load_config
from watchdog.notify import build_router
from watchdog.notify.routing import AlertFacts, Matcher, Route, Router, parse_route
from watchdog.notify.time_intervals import (
    IntervalSpec,
    TimeInterval,
    parse_days_of_month,
    parse_interval,
    parse_months,
    parse_times,
    parse_weekdays,
)
from watchdog.problems import InvalidFileError

CONFIG = """\
rules_dir: rules
state_path: state.db
sources: {warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=w"}}
slack: {token: xoxb-routing-test-token, channel: "#alerts"}
receivers:
  pager: {type: pagerduty, routing_key: routing-key-for-tests-0001}
  ops-hook: {type: webhook, url: "http://127.0.0.1:9/hook", secret: webhook-secret-for-tests}
  data-mail:
    type: email
    smtp: {host: 127.0.0.1, port: 2525, starttls: false}
    from: watchdog@example.com
    to: [data@example.com]
routes:
  - match: {severity: critical}
    receivers: [pager, slack]
  - match: {labels.team: data}
    receivers: [data-mail, ops-hook, slack]
    active_time_intervals: [business-hours]
time_intervals:
  business-hours: {weekdays: ["monday:friday"], times: ["09:00-18:00"], location: Europe/Berlin}
"""

MONDAY_NOON_BERLIN = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
SUNDAY_NOON_BERLIN = datetime(2026, 12, 6, 11, 0, tzinfo=UTC)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(CONFIG)
    (tmp_path / "rules" / "etl.yaml").write_text(textwrap.dedent("""\
        name: etl-load
        type: freshness
        source: warehouse
        checks: [{name: orders, table: sales.orders, loaded_at: updated_at}]
        warn_after: 2h
        labels: {team: data}
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHDOG_CONFIG", raising=False)
    return tmp_path


def router(routes: list[dict], intervals: dict | None = None, default: str = "slack") -> Router:
    parsed = [parse_route(n, r) for n, r in enumerate(routes, start=1)]
    types = {"slack": "slack", "console": "console", "pager": "pagerduty", "hook": "webhook", "mail": "email"}
    return Router(parsed, {k: parse_interval(k, v) for k, v in (intervals or {}).items()}, types, default)


def test_the_first_match_wins_and_no_match_goes_to_slack() -> None:
    r = router([{"match": {"severity": "critical"}, "receivers": ["pager", "slack"]},
                {"match": {"labels.team": "data"}, "receivers": ["mail"]}])
    now = MONDAY_NOON_BERLIN
    assert r.route(AlertFacts("a", severity="critical", labels={"team": "data"}), now).receivers == ("pager", "slack")
    assert r.route(AlertFacts("a", severity="warning", labels={"team": "data"}), now).receivers == ("mail",)
    nothing = r.route(AlertFacts("a", severity="warning"), now)
    assert nothing.receivers == ("slack",)
    assert nothing.trace[-1] == "no route matched -> slack (the default)"
    assert "labels.team is not set" in nothing.trace[1]


def test_continue_collects_receivers_once() -> None:
    r = router([{"match": {"severity": "critical"}, "receivers": ["pager", "slack"], "continue": True},
                {"match": {"rule": "~etl-.*"}, "receivers": ["mail", "slack"]}])
    routing = r.route(AlertFacts("etl-load", severity="critical"), MONDAY_NOON_BERLIN)
    assert routing.receivers == ("pager", "slack", "mail")
    assert [t.route for t in routing.targets] == [1, 1, 2]


def test_a_regex_matches_the_whole_value() -> None:
    matcher = Matcher.parse("rule", "~etl")
    assert not matcher.matches(AlertFacts("etl-load"))
    assert Matcher.parse("rule", "~etl.*").matches(AlertFacts("etl-load"))
    assert Matcher.parse("type", "freshness").matches(AlertFacts("x", type="freshness"))


def test_a_muted_route_holds_back_and_ends_the_walk() -> None:
    r = router([{"match": {"labels.team": "data"}, "receivers": ["mail", "slack"],
                 "active_time_intervals": ["business-hours"]}],
               {"business-hours": {"weekdays": ["monday:friday"], "times": ["09:00-18:00"], "location": "Europe/Berlin"}})
    facts = AlertFacts("etl-load", labels={"team": "data"})
    assert r.route(facts, MONDAY_NOON_BERLIN).receivers == ("mail", "slack")
    sunday = r.route(facts, SUNDAY_NOON_BERLIN)
    assert sunday.receivers == ()  # not the default either: the route matched
    assert [t.receiver for t in sunday.held] == ["mail", "slack"]
    assert "outside active_time_intervals 'business-hours'" in sunday.trace[0]
    evening = r.route(facts, datetime(2026, 12, 7, 17, 0, tzinfo=UTC))  # 18:00 Berlin: the end is excluded
    assert evening.receivers == ()


def test_mute_intervals_and_a_later_route_that_still_sends() -> None:
    r = router([{"match": {"severity": "critical"}, "receivers": ["pager"], "mute_time_intervals": ["nights"],
                 "continue": True},
                {"receivers": ["slack"]}],
               {"nights": {"times": ["22:00-24:00", "00:00-06:00"]}})
    night = r.route(AlertFacts("a", severity="critical"), datetime(2026, 12, 7, 23, 30, tzinfo=UTC))
    assert night.receivers == ("slack",) and [t.receiver for t in night.held] == ["pager"]
    day = r.route(AlertFacts("a", severity="critical"), datetime(2026, 12, 7, 12, 0, tzinfo=UTC))
    assert day.receivers == ("pager", "slack") and day.held == ()


def test_dry_runs_warnings_steps_and_explained_alerts_never_page() -> None:
    r = router([{"match": {"rule": "~.*"}, "receivers": ["pager", "slack"]}])
    now = MONDAY_NOON_BERLIN
    firing = {"rule": "a", "severity": "critical", "labels": {}}
    assert r.for_payload(firing, "firing", now).receivers == ("pager", "slack")
    assert r.for_payload({**firing, "dry_run": True}, "firing", now).receivers == ("slack",)
    assert r.for_payload({**firing, "page": False}, "firing", now).receivers == ("slack",)
    assert r.for_payload(firing, "action", now).receivers == ("slack",)
    assert r.for_payload(firing, "repeat", now).receivers == ("slack",)
    assert r.for_payload(firing, "resolved", now).receivers == ("pager", "slack")
    assert r.for_payload(firing, "acknowledged", now).receivers == ("pager",)
    assert r.for_payload(firing, "update", now).receivers == ("slack",)
    assert r.for_payload({**firing, "routed": False}, "firing", now).receivers == ("slack",)


def test_time_interval_fields() -> None:
    spec = IntervalSpec(days_of_month=parse_days_of_month(["-1"]), months=parse_months(["february"]))
    assert spec.contains(datetime(2028, 2, 29, 12, tzinfo=UTC))  # a leap year's last day
    assert not spec.contains(datetime(2028, 2, 28, 12, tzinfo=UTC))
    assert parse_weekdays(["monday:friday", "sunday"]) == ((0, 4), (6, 6))
    assert parse_months(["1:3", "december"]) == ((1, 3), (12, 12))
    assert parse_times(["09:00-18:00", "22:00-24:00"]) == ((540, 1080), (1320, 1440))
    for bad in (["18:00-09:00"], ["24:00-24:00"], ["09:60-10:00"]):
        with pytest.raises(ValueError):
            parse_times(bad)
    with pytest.raises(ValueError):
        parse_weekdays(["friday:monday"])
    with pytest.raises(ValueError):
        parse_days_of_month(["32"])


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.integers(0, 23 * 60), st.integers(1, 60), st.sampled_from(["UTC", "Europe/Berlin", "America/New_York",
                                                                     "Asia/Kolkata", "Australia/Lord_Howe"]),
       st.integers(0, 6), st.integers(0, 6))
def test_an_interval_agrees_with_the_local_clock(moment: datetime, start: int, length: int, zone: str,
                                                 day_a: int, day_b: int) -> None:
    """Against a model: the moment read in the zone, its weekday and minute compared by hand."""
    end = min(start + length, 24 * 60)
    first, last = sorted((day_a, day_b))
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    interval = parse_interval("x", {"weekdays": [f"{days[first]}:{days[last]}"], "times": [text], "location": zone})
    local = moment.astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    assert interval.contains(moment) == (first <= local.weekday() <= last and start <= minute < end)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["rule", "type", "severity", "labels.team", "labels.env"]),
                       st.text(max_size=8), max_size=3),
       st.text(max_size=8), st.sampled_from(["info", "warning", "critical"]),
       st.dictionaries(st.sampled_from(["team", "env"]), st.text(max_size=8), max_size=2))
def test_routing_is_total_and_matches_exactly(match: dict, rule: str, severity: str, labels: dict) -> None:
    """Any values route without raising; a matcher matches exactly its value (or its regex, whole); the default
    answers otherwise."""
    if any(v.startswith("~") and not _compiles(v[1:]) for v in match.values()):
        with pytest.raises(ValueError):
            router([{"match": match, "receivers": ["mail"]}])
        return
    r = router([{"match": match, "receivers": ["mail"]}])
    facts = AlertFacts(rule, type="threshold", severity=severity, labels=labels)

    def fits(key: str, wanted: str) -> bool:
        value = facts.get(key)
        if value is None:
            return False
        return re.fullmatch(wanted[1:], value) is not None if wanted.startswith("~") else value == wanted

    expected = all(fits(k, v) for k, v in match.items())
    assert r.route(facts, MONDAY_NOON_BERLIN).receivers == (("mail",) if expected else ("slack",))


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@given(st.text(max_size=8))
def test_a_regex_that_does_not_compile_is_a_value_error(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error:
        with pytest.raises(ValueError):
            Matcher.parse("rule", "~" + pattern)
    else:
        assert Matcher.parse("rule", "~" + pattern).pattern is not None


def test_config_builds_the_router(project: Path) -> None:
    config = load_config("watchdog.yaml")
    r = build_router(config)
    assert r.route(AlertFacts("x", severity="critical"), MONDAY_NOON_BERLIN).receivers == ("pager", "slack")
    assert r.default == "slack"
    assert config.routes[1] == Route(number=2, receivers=("data-mail", "ops-hook", "slack"),
                                     matchers=(Matcher("labels.team", "data"),),
                                     active_time_intervals=("business-hours",))
    assert isinstance(config.time_intervals["business-hours"], TimeInterval)
    assert "routing-key-for-tests-0001" not in repr(config)


def test_validate_names_unknown_receivers_and_intervals(project: Path) -> None:
    (project / "watchdog.yaml").write_text(CONFIG.replace("[pager, slack]", "[pagr, slack]")
                                           .replace("[business-hours]", "[business-hour]")
                                           .replace('{severity: critical}', '{severity: critical, rule: "~(x"}'))
    with pytest.raises(InvalidFileError) as caught:
        load_config("watchdog.yaml")
    messages = {(p.line, p.path): p.message for p in caught.value.problems}
    assert messages[(15, "routes[0].receivers[0]")].startswith("unknown receiver 'pagr' (the receivers are console, ")
    assert messages[(18, "routes[1].active_time_intervals[0]")] == (
        "unknown time interval 'business-hour' (time_intervals: business-hours)")
    assert "is not a regular expression" in messages[(14, "routes[0].match.rule")]


def test_slack_needs_its_block(project: Path) -> None:
    (project / "watchdog.yaml").write_text(CONFIG.replace('slack: {token: xoxb-routing-test-token, channel: "#alerts"}\n', ""))
    with pytest.raises(InvalidFileError) as caught:
        load_config("watchdog.yaml")
    assert any(p.message == "receiver 'slack' needs the slack block (or name console)" for p in caught.value.problems)


def test_routes_command(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "-c", "watchdog.yaml", "--rule", "etl-load", "--severity", "critical"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "pager, slack"
    assert out[1] == "  route 1 (match severity=critical): matched -> pager, slack"
    # the rule's own labels route it (team: data), at a moment inside business hours, then outside
    assert main(["routes", "-c", "watchdog.yaml", "--rule", "etl-load", "--at", "2026-12-07T11:00:00Z", "--format", "json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["receivers"] == ["data-mail", "ops-hook", "slack"] and answer["type"] == "freshness"
    assert main(["routes", "-c", "watchdog.yaml", "--rule", "etl-load", "--at", "2026-12-06T11:00:00Z"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["(none)", "held back at 2026-12-06T11:00:00Z: data-mail, ops-hook, slack"]
    assert main(["routes", "-c", "watchdog.yaml", "--rule", "other", "--label", "team"]) == 2


def test_routes_needs_no_secret_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = CONFIG.replace("routing_key: routing-key-for-tests-0001", "routing_key_file: /nonexistent/pd-key")
    (project / "watchdog.yaml").write_text(config)
    assert main(["routes", "-c", "watchdog.yaml", "--rule", "x", "--severity", "critical"]) == 0
    assert capsys.readouterr().out.startswith("pager, slack")


def test_every_moment_of_a_week_is_inside_exactly_one_of_two_complementary_intervals() -> None:
    work = parse_interval("w", {"weekdays": ["monday:friday"], "times": ["09:00-18:00"], "location": "Europe/Berlin"})
    rest = [parse_interval("a", {"weekdays": ["saturday:sunday"], "location": "Europe/Berlin"}),
            parse_interval("b", {"weekdays": ["monday:friday"], "times": ["00:00-09:00", "18:00-24:00"],
                                 "location": "Europe/Berlin"})]
    moment = datetime(2026, 3, 23, tzinfo=UTC)  # a week across the change to summer time
    while moment < datetime(2026, 3, 31, tzinfo=UTC):
        assert work.contains(moment) != any(i.contains(moment) for i in rest)
        moment += timedelta(minutes=15)


def test_the_readme_example_validates_and_routes_as_it_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Paging and routing"):]
    start = section.index("```yaml\n") + 8
    example = section[start:section.index("```", start)]
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text("rules_dir: rules\nstate_path: state.db\n"
                                            "slack: {token: xoxb-readme-example, channel: '#alerts'}\n" + example)
    config = load_config(str(tmp_path / "watchdog.yaml"), {}, secrets=False)
    assert set(config.receivers) == {"pager", "ops-hook", "data-mail"}
    assert main(["routes", "-c", str(tmp_path / "watchdog.yaml"), "--rule", "app-error-rate", "--severity", "critical"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pager, slack\n  route 1 (match severity=critical): matched -> pager, slack")
