"""Malformed rule and config files: each one is a clear problem with file and line, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.badfiles import BAD_FILES, BadFile, good
from watchdog.cli import main
from watchdog.config import load_config
from watchdog.loader import load_rules
from watchdog.problems import InvalidFileError

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
rules_dir: rules
state_path: state.db
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9"]}
  warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=warehouse"}
  aws: {type: dms, region: us-east-1}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(CONFIG)
    (tmp_path / "rules" / "good.yaml").write_text(good("good"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHDOG_CONFIG", raising=False)
    return tmp_path


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["validate", "-c", "watchdog.yaml", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.key for b in BAD_FILES])
def test_each_bad_rule_file_is_one_problem_with_file_and_line(project: Path, capsys: pytest.CaptureFixture[str],
                                                              bad: BadFile) -> None:
    if bad.needs_permissions and os.geteuid() == 0:
        pytest.skip("root reads any file; test_unreadable_file_and_directory_are_problems covers it without that privilege")
    path = project / "rules" / f"{bad.key}.yaml"
    bad.make(path, bad.key)
    started = time.monotonic()
    code, out = validate(capsys)
    assert time.monotonic() - started < 5
    assert code == 1 and out["valid"] is False and out["rules"] == 1  # the good rule still loads
    assert {e["file"] for e in out["errors"]} == {f"rules/{bad.key}.yaml"}
    error = out["errors"][0]  # sorted by line; an unknown type also makes its keys unknown
    assert error["line"] == bad.line, error
    assert bad.says in error["message"], error
    bad.fix(path, bad.key)
    code, out = validate(capsys)
    assert code == 0 and out["rules"] == 2, out


def test_a_good_merge_key_and_aliases_still_load(project: Path) -> None:
    text = textwrap.dedent("""\
        name: merged
        <<: {type: freshness, source: warehouse}
        checks: &checks
          - {name: ga, sql: "select 1"}
        warn_after: 1h
        labels: {team: data}
        """)
    (project / "rules" / "merged.yaml").write_text(text)
    result = load_rules([str(project / "rules")])
    assert not result.problems, result.problems
    assert {r.name for r in result.rules} == {"good", "merged"}


def test_yaml_values_are_plain_data(project: Path) -> None:
    (project / "rules" / "dates.yaml").write_text(good("dates") + "description: 2026-01-01\nlabels: {on: yes}\n")
    result = load_rules([str(project / "rules")])
    assert not result.problems, result.problems
    rule = next(r for r in result.rules if r.name == "dates")
    assert rule.description == "2026-01-01"  # a string as written, not a date object
    assert rule.labels == {"on": "True"}


@pytest.mark.parametrize("extra, says", [
    ("defaults: {schedule: {every: 0s}}", "at least 1s"),
    ("defaults: {repeat_every: 0s}", "at least 1m"),
    ("defaults: {schedule: {cron: '0 0 30 2 *'}}", "never fires"),
    ("rule_timeout: 0s", "at least 1s"),
    ("rule_timeout: 99999999999999999999999d", "at most 400d"),
    ("metrics: {listen: 'localhost:99999'}", "from 1 to 65535"),
    ("metrics: {listen: '::1:9464'}", "in brackets"),
    ("metrics: {listen: '300.1.1.1:9464'}", "not an IP address"),
    ("metrics: {listen: 'example.com:9464'}", "not an IP address"),
    ("slack: {token_file: secret, channel: '#a'}", "not UTF-8 text: byte 0xff at line 1"),
    ("slack: {token_file: /dev/zero, channel: '#a'}", "character device"),
    ("slack: {token_file: pipe, channel: '#a'}", "FIFO"),
    ("  tls: {type: search, hosts: ['https://h'], ca_certs: /dev/zero}", "character device"),
    ("description: caf\udce9", "not UTF-8 text: byte 0xe9 at line 7"),
])
def test_bad_config_values_are_problems(project: Path, extra: str, says: str) -> None:
    (project / "secret").write_bytes(b"\xff\xfe")
    os.mkfifo(project / "pipe")
    (project / "watchdog.yaml").write_bytes(CONFIG.encode() + extra.encode("utf-8", "surrogateescape") + b"\n")
    with pytest.raises(InvalidFileError) as caught:
        load_config("watchdog.yaml")
    messages = [str(p) for p in caught.value.problems]
    assert any(says in m for m in messages), messages
    assert all(m.startswith("watchdog.yaml:") for m in messages), messages


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", "localhost:1", "0.0.0.0:65535"])
def test_listen_addresses_that_bind_are_accepted(project: Path, listen: str) -> None:
    (project / "watchdog.yaml").write_text(CONFIG + f"metrics: {{listen: '{listen}'}}\n")
    assert load_config("watchdog.yaml").metrics_listen == listen


@pytest.mark.parametrize("template, says", [
    ("{value!r}", "conversions"),
    ("{0}", "not a plain name"),
    ("{}", "not a plain name"),
    ("{labels[team]}", "not a plain name"),
    ("{value:{group}}", "the format must be a short one"),
    ("{value:.100f}", "the format must be a short one"),
    ("{value", "bad template"),
])
def test_templates_allow_only_plain_names_and_short_formats(project: Path, template: str, says: str) -> None:
    (project / "rules" / "t.yaml").write_text(good("t") + f"message: {json.dumps(template)}\n")
    result = load_rules([str(project / "rules")])
    assert [p.line for p in result.problems] == [8]
    assert says in result.problems[0].message


def test_short_formats_render(project: Path) -> None:
    from watchdog.notify.render import render_template

    assert render_template("{value:>8.2f}|{group:<4}|{count:,}", {"value": 3.14159, "group": "a", "count": 12345}) \
        == "    3.14|a   |12,345"
    assert render_template("{value:.2f}", {"value": "text"}) == "text"  # a format that does not suit: the plain value
    assert render_template("{missing} {value}", {"value": 1}) == "{missing} 1"


def without_dac_override() -> list[str]:
    """A command prefix under which file permissions apply, even to root (tests often run as root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def test_unreadable_file_and_directory_are_problems(project: Path) -> None:
    sub = project / "rules" / "team"
    sub.mkdir()
    (sub / "held.yaml").write_text(good("held"))
    (project / "rules" / "secret.yaml").write_text(good("secret"))
    (project / "rules" / "secret.yaml").chmod(0)
    sub.chmod(0)
    try:
        run = subprocess.run([*without_dac_override(), sys.executable, "-m", "watchdog", "validate", "-c", "watchdog.yaml",
                              "--format", "json"], cwd=project, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        sub.chmod(0o755)
    out = json.loads(run.stdout)
    assert run.returncode == 1 and out["valid"] is False, run.stderr
    assert [(e["file"], e["line"]) for e in out["errors"]] == [("rules/secret.yaml", 1), ("rules/team", 1)]
    assert "cannot read rule file: Permission denied" in out["errors"][0]["message"]
    assert "cannot read rules directory: Permission denied" in out["errors"][1]["message"]
