"""Secrets never leave the process: planted secrets appear in no output, log line, state row or Slack request.

Failure paths from the issue, against real servers: a wrong PostgreSQL
password, an unreachable search host with credentials in its URL, Slack
answering invalid_auth and a 5xx with an HTML body; and validation of a
secret of the wrong type, a malformed DSN, secret file permissions, the
state database's mode, the refresh command's environment.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now
from tests.servers.postgres import LocalPostgres
from tests.servers.slack_api import SlackServer
from watchdog.cli import main
from watchdog.config import load_config
from watchdog.notify.outbox import Outbox
from watchdog.notify.slack import SlackNotifier
from watchdog.problems import InvalidFileError
from watchdog.redact import redact
from watchdog.ruletypes.dms_remediate import Run
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
PG_SECRET = "PLANTED-pg-password-4242"
SEARCH_SECRET = "PLANTED-search-password-77"
SLACK_TOKEN = "xoxb-PLANTED-slack-token-99"
PLANTED = (PG_SECRET, SEARCH_SECRET, SLACK_TOKEN)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)




@pytest.fixture
def password_role(postgres: LocalPostgres) -> str:
    """A role that must give its password (the test cluster trusts every other one)."""
    hba = os.path.join(postgres.datadir, "pg_hba.conf")
    with open(hba) as fh:
        rules = fh.read()
    if "wd_secret" not in rules:
        with open(hba, "w") as fh:
            fh.write("host all wd_secret 127.0.0.1/32 scram-sha-256\n" + rules)
        postgres.psql("do $$ begin create role wd_secret login password 'the-right-password-1'; "
                      "exception when duplicate_object then null; end $$")
        postgres.psql("select pg_reload_conf()")
    return f"host=127.0.0.1 port={postgres.port} dbname=postgres user=wd_secret password={PG_SECRET}"


def leaks(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


def state_bytes(project: Path) -> str:
    """Every byte of the state database and its WAL, as text (a secret in any row or page shows)."""
    out = ""
    for name in ("state.db", "state.db-wal"):
        path = project / name
        if path.exists():
            out += path.read_bytes().decode("latin-1")
    return out


def write_project(tmp_path: Path, dsn: str, slack: SlackServer) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "slack-token").write_text(SLACK_TOKEN + "\n")
    (tmp_path / "slack-token").chmod(0o600)
    (tmp_path / "watchdog.yaml").write_text(textwrap.dedent(f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {{type: postgres, dsn: "{dsn}", connect_timeout: 2s}}
          logs: {{type: search, hosts: ["http://elastic:{SEARCH_SECRET}@127.0.0.1:1"], timeout: 2s}}
        slack: {{token_file: slack-token, channel: "#alerts", base_url: "{slack.base_url}", group_wait: 0s}}
        """))
    (tmp_path / "rules" / "fresh.yaml").write_text(
        "name: fresh\ntype: freshness\nsource: warehouse\nchecks:\n  - {name: t, sql: 'select now()'}\nwarn_after: 1h\n")
    (tmp_path / "rules" / "errors.yaml").write_text(
        "name: errors\ntype: threshold\nsource: logs\nindex: app-logs\nwindow: 5m\nthreshold: {above: 1}\n")
    return tmp_path


def test_planted_secrets_appear_in_no_output_log_state_row_or_slack_request(
        tmp_path: Path, password_role: str, slack: SlackServer, log_lines: list[str],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    project = write_project(tmp_path, password_role, slack)
    monkeypatch.chdir(project)
    config = load_config("watchdog.yaml")
    clock = Clock(NOW)
    engine = engine_for(config, clock)
    assert config.slack is not None
    outbox = Outbox(engine.store, SlackNotifier(config.slack), clock=clock, quiet_until=engine.quiet_until)
    for _ in range(3):  # wrong password and unreachable host, three times: the rule errors are notified
        clock.now += timedelta(minutes=1)
        applied = evaluate_now(engine)
        assert {a.rule for a in applied if a.error} == {"fresh", "errors"}
    errors = {r: rec.health.last_error for r, rec in engine.store.rule_records().items()}
    assert "password authentication failed" in errors["fresh"]
    assert "http://elastic:***@127.0.0.1:1" in errors["errors"]
    slack.fail_next({"error": "invalid_auth", "method": "chat.postMessage"},
                    {"status": 502, "body": "<html>" + "bad gateway " * 500 + "</html>", "method": "chat.postMessage"})
    outbox.deliver_due()  # invalid_auth: the notifications are kept, Slack is tried again in 5 minutes
    outbox.deliver_due()
    rows = engine.store.db.execute("select last_error from outbox where last_error is not null").fetchall()
    assert any("invalid_auth" in r[0] for r in rows)
    clock.now += timedelta(minutes=15)
    outbox.deliver_due()  # the 502
    rows = engine.store.db.execute("select last_error from outbox where last_error is not null").fetchall()
    notifier_errors = [row["error"] for row in engine.store.notifier_status().values() if row["error"]]
    assert any("bad gateway" in r[0] for r in rows)
    assert all(len(r[0]) < 300 for r in rows) and all(len(e) < 300 for e in notifier_errors)  # the HTML body, cut
    clock.now += timedelta(minutes=15)
    outbox.deliver_due()  # then a success
    posted = slack.calls("chat.postMessage")
    assert posted and any("elastic:***@127.0.0.1:1" in json.dumps(p.body) for p in posted)  # the error, redacted
    for call in slack.calls():
        assert not leaks(json.dumps(call.body)), call.body
    engine.store.close()
    # every command a person would run
    capsys.readouterr()
    main(["status", "-c", "watchdog.yaml"])
    main(["status", "-c", "watchdog.yaml", "--format", "json"])
    main(["validate", "-c", "watchdog.yaml"])
    main(["test-rule", "-c", "watchdog.yaml", "rules/fresh.yaml"])
    main(["test-rule", "-c", "watchdog.yaml", "rules/errors.yaml", "--format", "json"])
    out = capsys.readouterr()
    assert "password authentication failed" in out.out + out.err
    assert not leaks(out.out) and not leaks(out.err), out
    assert log_lines and not [line for line in log_lines if leaks(line)]
    assert not leaks(state_bytes(project))


def test_validate_never_echoes_a_secret_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(textwrap.dedent("""\
        rules_dir: rules
        sources:
          logs: {type: search, hosts: ["http://127.0.0.1:9200"], basic_auth: {username: u, password: 987654321123}}
          warehouse: {type: postgres, dsn: "host=db PLANTED-dsn-secret-55 dbname=w"}
          other: {type: postgres, password: [PLANTED-in-a-list-66]}
        slack: {token: 1234567890123, channel: "#a"}
        """))
    with pytest.raises(InvalidFileError) as info:
        load_config("watchdog.yaml")
    text = "\n".join(str(p) for p in info.value.problems)
    assert "987654321123" not in text and "1234567890123" not in text and "PLANTED-in-a-list-66" not in text
    assert "slack.token: must be a string, not a number ((value hidden: it is a secret))" in text
    main(["validate", "-c", "watchdog.yaml", "--format", "json"])
    out = capsys.readouterr().out
    assert "987654321123" not in out and "1234567890123" not in out
    (tmp_path / "watchdog.yaml").write_text(
        "rules_dir: rules\nsources:\n  warehouse: {type: postgres, dsn: \"host=db PLANTED-dsn-secret-55 dbname=w\"}\n")
    with pytest.raises(InvalidFileError) as info:
        load_config("watchdog.yaml")
    (problem,) = info.value.problems
    assert problem.path == "sources.warehouse.dsn" and "not a valid libpq connection string" in problem.message
    assert "PLANTED" not in problem.message


def test_redaction_patterns() -> None:
    assert redact("cannot reach https://user:hunter2@search:9200/x") == "cannot reach https://user:***@search:9200/x"
    assert redact("host=db password=hunter2 dbname=w") == "host=db password=*** dbname=w"
    assert redact("host=db password='a b\\' c' dbname=w") == "host=db password=*** dbname=w"
    assert redact("https://hc-ping.com/x?token=abc123&x=1") == "https://hc-ping.com/x?token=***&x=1"
    assert redact('{"url": "postgresql://u:p4ss@h/db"}') == '{"url": "postgresql://u:***@h/db"}'
    assert json.loads(redact(json.dumps({"a": "http://u:x\"y@h", "b": 1}))) is not None  # JSON stays JSON


def test_a_secret_file_others_may_read_gives_a_warning_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    token = tmp_path / "slack-token"
    token.write_text("xoxb-a-token-for-the-warning\n")
    token.chmod(0o644)
    (tmp_path / "watchdog.yaml").write_text("rules_dir: rules\nslack: {token_file: slack-token, channel: '#a'}\n")
    config = load_config("watchdog.yaml")
    (warning,) = config.warnings
    assert f"secret file {token} is readable by group and others (mode 0644)" in warning and "chmod 600" in warning
    assert warning.startswith("watchdog.yaml:2: slack.token_file: ")
    assert main(["validate", "-c", "watchdog.yaml"]) == 0
    assert f"warning: watchdog.yaml:2: slack.token_file: secret file {token}" in capsys.readouterr().err
    token.chmod(0o600)
    assert load_config("watchdog.yaml").warnings == ()


def test_the_state_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(str(path))
    store.set_next_run("r", NOW)  # a write, so the WAL and shared-memory files exist
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    store.close()
    path.chmod(0o644)  # made by an older watchdog
    StateStore(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_refresh_command_gets_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "PLANTED-aws-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-planted")
    out = tmp_path / "env.txt"
    Run.run_command(["sh", "-c", f"env > {out}"], 10, episode="ep-1")
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["WATCHDOG_REMEDIATION_EPISODE"] == "ep-1" and "PATH" in env
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SLACK_BOT_TOKEN" not in env


def test_credentials_directory_and_commands_that_read_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The unit's LoadCredential= files, named through $CREDENTIALS_DIRECTORY; status never opens them."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "slack-token").write_text("xoxb-from-a-credential-file\n")
    (credentials / "slack-token").chmod(0o600)
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(
        "rules_dir: rules\nstate_path: state.db\n"
        "slack: {token_file: '${CREDENTIALS_DIRECTORY:-/nonexistent}/slack-token', channel: '#a'}\n")
    config = load_config(str(tmp_path / "watchdog.yaml"), environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.slack is not None and config.slack.token == "xoxb-from-a-credential-file"
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "watchdog.service").read_text()
    assert "LoadCredential=slack-token:" in unit and "EnvironmentFile=-/etc/watchdog/watchdog.env" in unit
    # a shell without the credential (or without the right to read it) can still run status
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["status", "-c", str(tmp_path / "watchdog.yaml")]) == 0
    assert main(["validate", "-c", str(tmp_path / "watchdog.yaml")]) == 1
    assert "cannot read /nonexistent/slack-token" in capsys.readouterr().out


URL_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&()*+,;%"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(alphabet=URL_SAFE, min_size=1, max_size=30), st.text(max_size=40),
       st.sampled_from(["http", "https", "postgresql"]))
def test_a_password_in_a_url_never_survives_redaction(before: str, password: str, after: str, scheme: str) -> None:
    text = f"{before} {scheme}://user:{password}@host:9200/path {after}"
    out = redact(text)
    assert f"user:{password}@" not in out and f"{scheme}://user:***@host:9200/path" in out


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(alphabet=URL_SAFE.replace("&", "").replace("$", ""), min_size=1, max_size=30))
def test_a_dsn_password_never_survives_redaction(before: str, password: str) -> None:
    out = redact(f"{before} host=db password={password} dbname=w")
    assert f"password={password} " not in out and "password=*** dbname=w" in out
