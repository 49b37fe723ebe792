"""Search rules (threshold, flatline, metric) against osmem-server, through both client libraries."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch, helpers
from osmem_server import OsmemServer

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers.search import CountingProxy, compat_node_class
from watchdog.config import SearchSource as SearchConfig
from watchdog.ruletypes.search import expand_index
from watchdog.sources.search import SearchSource

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
MAPPINGS = {"properties": {"@timestamp": {"type": "date"}, "team": {"type": "keyword"}, "level": {"type": "keyword"},
                           "service": {"type": "keyword"}, "duration_ms": {"type": "long"}, "message": {"type": "text"}}}


def load(url: str, events: list[dict[str, Any]]) -> None:
    """Index events into daily indices app-logs-YYYY.MM.DD (created with keyword mappings when new)."""
    client = OpenSearch(hosts=[url])
    days = {e["@timestamp"][:10].replace("-", ".") for e in events}
    for day in days:
        if not client.indices.exists(index=f"app-logs-{day}"):
            client.indices.create(index=f"app-logs-{day}", body={"mappings": MAPPINGS})
    actions = [{"_index": f"app-logs-{e['@timestamp'][:10].replace('-', '.')}", "_source": e} for e in events]
    helpers.bulk(client, actions, refresh=True)
    client.close()


def event(minutes_ago: float, team: str = "team-a", level: str = "error", duration: int = 100, service: str = "api") -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"@timestamp": at.isoformat().replace("+00:00", "Z"), "team": team, "level": level, "service": service,
            "duration_ms": duration, "message": f"userId=u1 team={team} event=login error=Timeout"}


def project(tmp_path: Path, url: str, rules: dict[str, str], extra: str = "") -> Any:
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          logs: {{type: search, hosts: ["{url}"], timeout: 5s, dashboards_url: "https://dash.example.com/_dashboards"{extra}}}
        """, rules)


def rule(name: str, body: str) -> str:
    return f"name: {name}\nsource: logs\nindex: 'app-logs-%Y.%m.%d'\n{body}"


def firing(engine: Any, name: str) -> dict[str, Any]:
    return {g: s.value for g, s in engine.store.groups().get(name, {}).items() if s.state.value == "firing"}


@pytest.fixture
def logs(search: CountingProxy) -> CountingProxy:
    events = [event(m, "team-a") for m in range(1, 31)]  # 30 errors in the last 30 min
    events += [event(m, "team-b") for m in range(1, 4)]  # 3
    events += [event(m, "team-c", level="info") for m in range(1, 10)]
    events += [event(60 * 24 + 30, "team-a")]  # yesterday, outside every window
    events += [event(m, "team-a", level="info", duration=d) for m, d in ((2, 900), (3, 1100), (4, 50))]
    load(search.url, events)
    search.reset()
    return search


def test_threshold_above_grouped_and_ungrouped(tmp_path: Path, logs: CountingProxy) -> None:
    config = project(tmp_path, logs.url, {
        "grouped": rule("grouped", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 10}\ngroup_by: team\nsample: 2\n"
                        "sample_fields: [team, message]\nmessage: '{count} errors in {window} for {group}'\n"),
        "total": rule("total", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 32}\n"),
        "quiet": rule("quiet", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 100}\n"),
    })
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert firing(engine, "grouped") == {"team-a": 30}
    assert firing(engine, "total") == {"": 33}
    assert firing(engine, "quiet") == {}
    assert logs.counts["POST /_msearch"] == 2  # one for the three rules, one for the example events
    payload = engine.store.db.execute("select payload from outbox where rule = 'grouped'").fetchone()[0]
    assert "30 errors in 30m for team-a" in payload and "userId=u1 team=team-a" in payload
    assert "https://dash.example.com/_dashboards/app/discover#/?_g=(time:(from:'2026-11-28T05:30:00Z'" in payload


def test_flatline_below_with_and_without_groups(tmp_path: Path, logs: CountingProxy) -> None:
    config = project(tmp_path, logs.url, {
        "dead": rule("dead", "type: threshold\nquery: 'service:billing'\nwindow: 10m\nthreshold: {below: 1}\n"),
        "alive": rule("alive", "type: threshold\nquery: 'service:api'\nwindow: 10m\nthreshold: {below: 1}\n"),
        "per-team": rule("per-team", "type: threshold\nwindow: 10m\nthreshold: {below: 1}\ngroup_by: team\n"),
    })
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert firing(engine, "dead") == {"": 0} and firing(engine, "alive") == {}
    assert firing(engine, "per-team") == {}
    clock.now = NOW + timedelta(minutes=5)  # team-b's last event is now 8 min old: still within 10m
    evaluate_now(engine)
    assert firing(engine, "per-team") == {}
    load(logs.url, [event(-10, "team-a"), event(-10, "team-c")])
    clock.now = NOW + timedelta(minutes=12)  # team-b has gone quiet; team-a and team-c still log
    evaluate_now(engine)
    assert firing(engine, "per-team") == {"team-b": 0}
    summary = engine.store.groups()["per-team"]["team-b"].summary
    assert summary == "events 0 for team=team-b in the last 10m (below 1)"


def test_flatline_finds_a_quiet_group_on_the_first_run(tmp_path: Path, logs: CountingProxy) -> None:
    load(logs.url, [event(m, "team-d", service="billing") for m in (25, 30, 40)])  # billing stopped 25 min ago
    config = project(tmp_path, logs.url, {
        "quiet-service": rule("quiet-service", "type: threshold\nwindow: 10m\nthreshold: {below: 1}\ngroup_by: service\n")})
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    assert firing(engine, "quiet-service") == {"billing": 0}


def test_metric_percentile_and_avg(tmp_path: Path, logs: CountingProxy) -> None:
    config = project(tmp_path, logs.url, {
        "p95": rule("p95", "type: metric\nquery: 'level:info AND team:team-a'\nwindow: 10m\n"
                    "metric: {percentile: {field: duration_ms, percent: 95}}\nthreshold: {above: 800}\n"),
        "avg": rule("avg", "type: metric\nwindow: 10m\nmetric: {avg: duration_ms}\nthreshold: {above: 150}\ngroup_by: team\n"),
        "max-low": rule("max-low", "type: metric\nwindow: 10m\nmetric: {max: duration_ms}\nthreshold: {below: 200}\ngroup_by: team\n"),
    })
    engine = engine_for(config, Clock(NOW))
    evaluate_now(engine)
    (p95,) = firing(engine, "p95").values()
    assert 900 <= p95 <= 1100
    assert set(firing(engine, "avg")) == {"team-a"}
    assert firing(engine, "max-low") == {"team-b": 100.0, "team-c": 100.0}


def test_only_the_indices_of_the_window_are_searched() -> None:
    start = datetime(2026, 11, 27, 23, 50, tzinfo=UTC)
    assert expand_index("app-logs-%Y.%m.%d", start, start + timedelta(minutes=20)) == ("app-logs-2026.11.27,app-logs-2026.11.28", True)
    assert expand_index("app-logs-*", start, start) == ("app-logs-*", False)
    assert expand_index("logs-%Y.%m.%d", start, start + timedelta(days=365))[0] == "logs-*.*.*"
    assert expand_index("logs-%Y.%m.%d-%H", start, start + timedelta(minutes=20))[0] == "logs-2026.11.27-23,logs-2026.11.28-00"


def test_date_pattern_searches_across_midnight(tmp_path: Path, search: CountingProxy) -> None:
    load(search.url, [event(m) for m in (370, 365, 355)])  # 23:50, 23:55 yesterday and 00:05 today
    config = project(tmp_path, search.url, {
        "night": rule("night", "type: threshold\nwindow: 30m\nthreshold: {above: 2}\n")})
    clock = Clock(NOW - timedelta(minutes=350))
    engine = engine_for(config, clock)
    evaluate_now(engine)
    assert firing(engine, "night") == {"": 3}


def test_many_rules_go_out_in_one_msearch_per_chunk(tmp_path: Path, logs: CountingProxy) -> None:
    # (each its own window: searches of different time ranges are not packed, see test_packing)
    rules = {f"r{i}": rule(f"r{i}", f"type: threshold\nquery: 'level:error'\nwindow: {30 + i}m\n"
                                    f"threshold: {{above: {1000 + i}}}\n") for i in range(150)}
    engine = engine_for(project(tmp_path, logs.url, rules), Clock(NOW))
    assert len(set(engine.next_run.values())) == 1  # rules on one source share a schedule phase, so they come due together
    evaluate_now(engine)
    assert logs.counts["POST /_msearch"] == 2  # 150 searches in chunks of 100
    assert logs.total() == 3  # plus GET / to detect the flavor


@pytest.mark.parametrize(("body", "message"), [
    ("index: nope\ntype: threshold\nwindow: 5m\nthreshold: {above: 1}\n", "no such index [nope]"),
    ("index: 'app-logs-*'\ntype: threshold\nquery: 'level:(error'\nwindow: 5m\nthreshold: {above: 1}\n", "level:(error"),
])
def test_errors_carry_the_servers_reason(tmp_path: Path, logs: CountingProxy, body: str, message: str) -> None:
    config = project(tmp_path, logs.url, {"bad": f"name: bad\nsource: logs\n{body}",
                                          "good": rule("good", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 1}\n")})
    engine = engine_for(config, Clock(NOW))
    applied = {a.rule: a for a in evaluate_now(engine)}
    assert applied["bad"].error and message in applied["bad"].error
    assert applied["good"].error is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_stopped_mid_run_and_started_again(tmp_path: Path) -> None:
    port = free_port()
    server = OsmemServer.start(japanese=False, addr=f"127.0.0.1:{port}")
    try:
        load(server.url, [event(1)])
        config = project(tmp_path, server.url, {"r": rule("r", "type: threshold\nwindow: 5m\nthreshold: {above: 0}\n")})
        engine = engine_for(config, Clock(NOW))
        assert evaluate_now(engine)[0].error is None
        server.close()
        (down,) = evaluate_now(engine)
        assert down.error and down.error.startswith("search failed:")
        server = OsmemServer.start(japanese=False, addr=f"127.0.0.1:{port}")
        load(server.url, [event(1), event(2)])
        (up,) = evaluate_now(engine)
        assert up.error is None and firing(engine, "r") == {"": 2}
    finally:
        server.close()


def test_elasticsearch_client_path(tmp_path: Path, logs: CountingProxy) -> None:
    """The elasticsearch-py client (used for Elasticsearch 7.14+), through a node class that speaks plain JSON."""
    config = project(tmp_path, logs.url, {}, extra=", flavor: elasticsearch")
    source_config = config.sources["logs"]
    assert isinstance(source_config, SearchConfig)
    source = SearchSource(source_config, node_class=compat_node_class())
    from watchdog import yamlfile
    from watchdog.loader import parse_rule
    from watchdog.ruletypes.search import evaluate

    doc = yamlfile.parse(rule("es", "type: threshold\nquery: 'level:error'\nwindow: 30m\nthreshold: {above: 10}\ngroup_by: team\n"), "es.yaml")
    parsed, problems = parse_rule(doc, str(tmp_path / "es.yaml"), config.defaults, config, {})
    assert parsed is not None, problems
    from watchdog.ruletypes.base import EvalContext

    result = evaluate([parsed], source, EvalContext(now=NOW))
    assert source.flavor == "elasticsearch"
    evaluation = result["es"]
    assert not isinstance(evaluation, Exception), evaluation
    assert [(f.group, f.value) for f in evaluation.findings] == [("team-a", 30)]
    source.close()


def test_a_cycles_msearch_calls_go_out_at_once(tmp_path: Path, search: CountingProxy) -> None:
    """250 rules are three _msearch calls: sent together (a slow cluster holds each 1 s), not one after another."""
    load(search.url, [event(1), event(2)])
    # (each its own window: searches of one time range would be packed into a few, see test_packing)
    rules = {f"r{i}": rule(f"r{i}", f"type: threshold\nquery: 'level:error'\nwindow: {30 + i}m\nthreshold: {{above: 1}}\n"
                                     "sample: 0\n") for i in range(250)}
    config = write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          logs: {{type: search, hosts: ["{search.url}"], timeout: 50s}}
        """, rules)  # a loaded machine may take seconds to answer: no timeout of the test's making
    engine = engine_for(config, Clock(NOW))
    search.reset()
    search.delay = 1.0
    applied = evaluate_now(engine, timeout=120)
    assert len(applied) == 250 and not any(a.error for a in applied)
    assert search.counts["POST /_msearch"] == 3 and search.peak_in_flight == 3
