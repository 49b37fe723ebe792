"""The commands an on-call engineer types: one state for shell and service, conventions, silences."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import write_project
from tests.servers.slack_api import SlackServer
from watchdog.cli import EXAMPLES, build_parser, main
from watchdog.config import DEFAULT_STATE_DIR, default_state_path, load_config
from watchdog.silences import MAX_SILENCE, Target, parse_silence_duration, parse_target

REPO = Path(__file__).resolve().parent.parent
WATCHDOG = [sys.executable, "-m", "watchdog"]

FRESH_RULE = """\
    name: fresh
    type: freshness
    source: warehouse
    schedule: {every: 1s}
    checks:
      - {name: ga, sql: "select max(finished_at) from runs where src = 'ga'"}
      - {name: crm, sql: "select max(finished_at) from runs where src = 'crm'"}
    warn_after: 1h
    """


def execute(dsn: str, sql: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WATCHDOG, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# --- 1. one state for the shell and the service ---------------------------------------------------------------


def test_default_state_is_the_service_state_directory(tmp_path: Path) -> None:
    (tmp_path / "watchdog.yaml").write_text("rules_dir: rules\n")
    unit = (REPO / "systemd" / "watchdog.service").read_text()
    (state_directory,) = re.findall(r"^StateDirectory=(\S+)$", unit, re.M)
    assert DEFAULT_STATE_DIR == f"/var/lib/{state_directory}"  # what systemd passes as $STATE_DIRECTORY
    from_shell = load_config(str(tmp_path / "watchdog.yaml"), environ={})
    from_service = load_config(str(tmp_path / "watchdog.yaml"), environ={"STATE_DIRECTORY": f"/var/lib/{state_directory}"})
    assert from_shell.state_path == from_service.state_path == "/var/lib/watchdog/state.db"
    assert default_state_path({"STATE_DIRECTORY": "/srv/a:/srv/b"}) == "/srv/a/state.db"
    (tmp_path / "watchdog.yaml").write_text("rules_dir: rules\nstate_path: ../x/./state.db\n")
    assert load_config(str(tmp_path / "watchdog.yaml"), environ={}).state_path == str(tmp_path.parent / "x" / "state.db")


def test_read_only_commands_never_create_a_state_file(tmp_path: Path) -> None:
    write_project(tmp_path, "rules_dir: rules\nstate_path: state/state.db\n", {})
    text = cli("status", "-c", str(tmp_path / "watchdog.yaml"), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == f"state: {tmp_path}/state/state.db (no such file yet: the daemon has not run with this state_path)"
    doc = json.loads(cli("status", "-c", str(tmp_path / "watchdog.yaml"), "--format", "json").stdout)
    assert (doc["state_path"], doc["state_exists"]) == (f"{tmp_path}/state/state.db", False)
    assert cli("unsilence", "1", "-c", str(tmp_path / "watchdog.yaml")).returncode == 1
    assert not (tmp_path / "state").exists() and sorted(os.listdir(tmp_path)) == ["rules", "watchdog.yaml"]


UNSET_DURATIONS = """\
    rules_dir: rules
    state_path: state.db
    sources:
      logs: {type: search, hosts: ["${ES_URL}"], timeout: "${SEARCH_TIMEOUT}"}
      warehouse: {type: postgres, dsn: "${WAREHOUSE_DSN}", connect_timeout: "${PG_CONNECT}", statement_timeout: "${PG_STATEMENT}"}
    slack: {token: "${SLACK_TOKEN}", channel: "#alerts", group_wait: "${GROUP_WAIT}"}
    """
UNSET_NAMES = ("ES_URL", "SEARCH_TIMEOUT", "WAREHOUSE_DSN", "PG_CONNECT", "PG_STATEMENT", "SLACK_TOKEN", "GROUP_WAIT")


def write_unset_project(directory: Path) -> str:
    (directory / "rules").mkdir(exist_ok=True)
    (directory / "watchdog.yaml").write_text(textwrap.dedent(UNSET_DURATIONS))
    (directory / "rules" / "fresh.yaml").write_text(textwrap.dedent(FRESH_RULE))
    return str(directory / "watchdog.yaml")


def test_status_and_silences_need_no_duration_of_a_source_from_the_service_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: an unset ${VAR} as a source's (or Slack's) duration made status and silence fail from a plain
    shell (its typed parse raised); run and validate still say where it is unset."""
    config = write_unset_project(tmp_path)
    for name in UNSET_NAMES:
        monkeypatch.delenv(name, raising=False)
    assert main(["status", "-c", config]) == 0
    assert main(["silence", "fresh", "--for", "1h", "-c", config]) == 0
    assert main(["unsilence", "1", "-c", config]) == 0
    capsys.readouterr()
    assert main(["validate", "-c", config]) == 1
    said = capsys.readouterr().out
    assert f"{config}:4:" in said and f"{config}:6:" in said
    for key, name in (("sources.logs.timeout", "SEARCH_TIMEOUT"), ("sources.warehouse.connect_timeout", "PG_CONNECT"),
                      ("slack.group_wait", "GROUP_WAIT")):
        assert f"{key}: environment variable '{name}' is not set" in said
    with pytest.raises(SystemExit) as run:
        main(["run", "--once", "-c", config])
    assert run.value.code == 2 and "sources.logs.timeout: environment variable 'SEARCH_TIMEOUT' is not set" in capsys.readouterr().err


@settings(max_examples=20, deadline=None)
@given(unset=st.sets(st.sampled_from(UNSET_NAMES)))
def test_any_set_of_unset_variables_leaves_the_state_commands_a_config(unset: set[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        write_unset_project(Path(directory))
        environ = {"ES_URL": "http://es:9200", "SEARCH_TIMEOUT": "7s", "WAREHOUSE_DSN": "host=db", "PG_CONNECT": "3s",
                   "PG_STATEMENT": "9s", "SLACK_TOKEN": "xoxb-1", "GROUP_WAIT": "4s"}
        config = load_config(str(Path(directory) / "watchdog.yaml"), {k: v for k, v in environ.items() if k not in unset},
                             secrets=False)
        timeout = config.sources["logs"].timeout  # type: ignore[union-attr]
        assert (timeout == timedelta(seconds=7)) == ("SEARCH_TIMEOUT" not in unset)
        assert config.slack is not None and (config.slack.group_wait == timedelta(seconds=4)) == ("GROUP_WAIT" not in unset)


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """``watchdog ARGS`` as an unprivileged user, with a Python that user can run (the venv's may live under /root)."""
    python = "/usr/bin/python3"
    if os.getuid() != 0 or not shutil.which("setpriv") or not os.path.exists(python):
        pytest.skip("needs root, setpriv and a system Python to drop privileges")
    site = next(Path(REPO / ".venv" / "lib").glob("python3.*/site-packages"))
    probe = subprocess.run([python, "-c", f"import sys; print(sys.version_info[:2] == {tuple(sys.version_info[:2])})"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != "True":
        pytest.skip("the system Python is not the venv's version")
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env",
                           f"PYTHONPATH={REPO}:{site}", python, "-m", "watchdog", *args],
                          cwd="/", capture_output=True, text=True, timeout=60)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any user may read (pytest's tmp_path lies under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="watchdog-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_state_the_user_cannot_read_is_not_called_missing(open_dir: Path) -> None:
    tmp_path = open_dir
    write_project(tmp_path, "rules_dir: rules\nstate_path: state/state.db\nsources:\n  warehouse: {type: postgres, dsn: 'host=x'}\n",
                  {"fresh": FRESH_RULE})
    (tmp_path / "state").mkdir(mode=0o750)  # as StateDirectoryMode=0750, owned by the service user
    (tmp_path / "state" / "state.db").touch(mode=0o600)
    config = str(tmp_path / "watchdog.yaml")
    hidden = as_nobody("status", "-c", config)
    assert hidden.returncode == 2 and "no such file" not in hidden.stdout + hidden.stderr
    assert hidden.stderr == (f"watchdog status: cannot look into {tmp_path}/state (permission denied): "
                             "run it as the service's user, e.g. sudo -u watchdog watchdog ...\n")
    (tmp_path / "state").chmod(0o755)
    for command in (["silence", "fresh", "--for", "1h"], ["unsilence", "1"], ["status"]):
        result = as_nobody(*command, "-c", config)
        assert result.returncode == 2 and f"cannot read and write {tmp_path}/state/state.db (permission denied)" in result.stderr


@pytest.fixture
def namespace() -> Iterator[int]:
    """A private mount namespace with an empty /var/lib, so the test can be a standard install without touching the host's."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter (util-linux)")
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               "mount -t tmpfs tmpfs /var/lib && echo ready && exec sleep 600"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    if holder.stdout.readline().strip() != "ready":
        holder.kill()
        pytest.skip(f"cannot make a mount namespace here: {holder.communicate(timeout=10)[1].strip()}")
    yield holder.pid
    holder.kill()
    holder.wait(10)


def inside(pid: int, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """``command`` run in the namespace of ``pid``, without STATE_DIRECTORY unless ``env`` sets it."""
    return ["nsenter", f"--target={pid}", "--mount", "--", "env", "-u", "STATE_DIRECTORY",
            *[f"{k}={v}" for k, v in (env or {}).items()], *command]


def test_a_silence_typed_in_a_shell_reaches_the_running_service(tmp_path: Path, pg_db: str, slack: SlackServer,
                                                                 namespace: int) -> None:
    execute(pg_db, "create table runs (src text, finished_at timestamptz)")
    execute(pg_db, "insert into runs values ('ga', now()), ('crm', now())")
    write_project(tmp_path, f"""\
        rules_dir: rules
        sources:
          warehouse: {{type: postgres, dsn: "{pg_db}"}}
        slack: {{token: xoxb-test, channel: "#alerts", base_url: "{slack.base_url}"}}
        """, {"fresh": FRESH_RULE})
    config = str(tmp_path / "watchdog.yaml")
    # The service, as systemd starts it: StateDirectory=watchdog gives $STATE_DIRECTORY=/var/lib/watchdog.
    subprocess.run(inside(namespace, "mkdir", "/var/lib/watchdog"), check=True)
    service = subprocess.Popen(inside(namespace, *WATCHDOG, "run", "-c", config, env={"STATE_DIRECTORY": "/var/lib/watchdog"}),
                               cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shell_dir = tmp_path / "home"
    shell_dir.mkdir()

    def shell(*args: str) -> subprocess.CompletedProcess[str]:  # an engineer's shell: no STATE_DIRECTORY, no flags
        return subprocess.run(inside(namespace, *WATCHDOG, *args), cwd=shell_dir, capture_output=True, text=True, timeout=60)

    def status() -> dict:
        result = shell("-c", config, "status", "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    try:
        state = Path(f"/proc/{namespace}/root/var/lib/watchdog/state.db")
        wait_for(lambda: state.exists() and status()["rules"][0]["last_run"], what="the service's first run")
        silenced = shell("silence", "fresh:ga", "--for", "1h", "--reason", "vendor outage", "-c", config)
        assert silenced.returncode == 0, silenced.stderr
        first, *rest = silenced.stdout.splitlines()
        assert re.fullmatch(r"silence 1: fresh:ga for 1h \(until .*\): vendor outage", first)
        assert rest == ["state: /var/lib/watchdog/state.db", "  silenced fresh:ga now ok"]

        execute(pg_db, "update runs set finished_at = now() - interval '3 hours'")  # both checks go stale
        wait_for(lambda: {g["group"]: g["state"] for g in status()["rules"][0]["groups"]} == {"ga": "firing", "crm": "firing"},
                 what="both checks firing")
        wait_for(lambda: slack.calls("chat.postMessage"), what="the crm alert")
        time.sleep(2)  # two more evaluations: time for a wrongly unsilenced ga to be posted
        texts = [r.body["text"] for r in slack.calls("chat.postMessage")]
        assert texts and all("[crm]" in t for t in texts), texts

        text = shell("status", "-c", config)
        assert text.stdout.splitlines()[0] == "state: /var/lib/watchdog/state.db"
        assert re.search(r"^  ga: firing warning since .* \[silenced: 1\]", text.stdout, re.M), text.stdout
        assert re.search(r"^  crm: firing warning since [^\[]*$", text.stdout, re.M), text.stdout
        assert os.listdir(shell_dir) == []  # no stray ./watchdog-state.db
    finally:
        service.terminate()
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err


# --- 3. command-line conventions ---------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\nsources:\n  warehouse: {type: postgres, dsn: 'host=127.0.0.1'}\n",
                  {"fresh": FRESH_RULE})
    return tmp_path


def test_global_options_before_or_after_the_command(project: Path) -> None:
    config = str(project / "watchdog.yaml")
    assert cli("-c", config, "validate").returncode == 0
    assert cli("validate", "-c", config).returncode == 0
    assert cli("--config", config, "status", "--format", "json").returncode == 0
    after = build_parser().parse_args(["-c", "before.yaml", "status", "-c", "after.yaml"])
    assert after.config == "after.yaml"  # the nearer one wins, as with git -C
    assert build_parser().parse_args(["-c", "before.yaml", "status"]).config == "before.yaml"


def test_bare_command_lists_the_commands() -> None:
    result = cli()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: watchdog [-c CONFIG] COMMAND [ARGS]\n\ncommands:\n")
    for command in ("run", "validate", "test-rule", "status", "silence", "unsilence"):
        assert re.search(rf"^  {command} +\S", result.stderr, re.M), command


def test_every_argument_has_help_and_every_command_examples() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"run", "validate", "test-rule", "status", "silence", "unsilence", "routes", "state"}
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        result = cli(name, "--help", env={"COLUMNS": "120"})
        assert result.returncode == 0 and "examples:\n  watchdog " in result.stdout, name
        assert all(f"  {example}\n" in result.stdout and name in example for example in EXAMPLES[name][-1:]), name
    unsilence = cli("unsilence", "--help", env={"COLUMNS": "200"}).stdout
    assert "as `watchdog status` lists it" in unsilence


@pytest.mark.parametrize("command", [["status"], ["validate"], ["status", "--format", "json"]])
def test_a_closed_pipe_ends_quietly(project: Path, command: list[str]) -> None:
    # Output well past a pipe's 64 KiB buffer, so the writer is still writing when the reader (`| head -1`) leaves:
    # every rule file has an unknown key, which `validate` and `status` both report, one line each.
    broken = textwrap.dedent(FRESH_RULE) + "abov: 1\n"
    for i in range(1200):
        (project / "rules" / f"r{i}.yaml").write_text(broken.replace("name: fresh", f"name: fresh-{i}"))
    proc = subprocess.Popen([*WATCHDOG, *command, "-c", str(project / "watchdog.yaml")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a writer stopped by a closed pipe


def test_silence_checks_its_target_and_duration(project: Path) -> None:
    config = str(project / "watchdog.yaml")
    unknown = cli("silence", "nope", "--for", "1h", "-c", config)
    assert unknown.returncode == 1 and "no rule 'nope' in" in unknown.stderr and "(rules: fresh)" in unknown.stderr
    for bad, message in (("0s", "longer than 0s"), ("31d", "at most 30d"), ("soon", "is not a duration")):
        result = cli("silence", "fresh", "--for", bad, "-c", config)
        assert result.returncode == 2 and message in result.stderr, (bad, result.stderr)
    assert "names no group" in cli("silence", "fresh:", "--for", "1h", "-c", config).stderr
    assert not (project / "state.db").exists()
    later = cli("silence", "fresh:hubspot", "--for", "2h", "-c", config)
    assert later.returncode == 0
    assert "note: rule 'fresh' has no group 'hubspot' in the state (groups now: none yet)" in later.stderr
    assert later.stdout.splitlines()[1] == f"state: {project}/state.db (created: the daemon has not run with this state_path yet)"
    whole = cli("silence", "fresh", "--for", "90m", "-c", config)
    assert whole.stdout.startswith("silence 2: fresh for 1h30m (until ")
    assert "applies to every group it reports" in whole.stdout
    doc = json.loads(cli("status", "--format", "json", "-c", config).stdout)
    assert [(s["id"], s["group"]) for s in doc["silences"]] == [("1", "hubspot"), ("2", None)]
    gone = cli("unsilence", "7", "-c", config)
    assert gone.returncode == 1 and "`watchdog status` lists the silences with their IDs" in gone.stderr
    assert cli("unsilence", "99999999999999999999999", "-c", config).returncode == 1
    word = cli("unsilence", "abc", "-c", config)
    assert word.returncode == 1 and "'abc' is not a silence ID (IDs are numbers)" in word.stderr


def test_readme_silence_examples_run(tmp_path: Path) -> None:
    write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\nsources:\n  warehouse: {type: postgres, dsn: 'host=127.0.0.1'}\n",
                  {"warehouse-freshness": FRESH_RULE.replace("name: fresh", "name: warehouse-freshness"),
                   "app-error-rate": FRESH_RULE.replace("name: fresh", "name: app-error-rate")})
    readme = (REPO / "README.md").read_text()
    lines = [line.split("  #")[0].strip() for line in readme.splitlines()
             if re.match(r"(sudo -u watchdog /opt/watchdog/bin/)?watchdog (un)?silence ", line)]
    assert len(lines) >= 3, lines
    for line in lines:
        args = shlex.split(line.replace("/etc/watchdog/watchdog.yaml", "watchdog.yaml"))
        args = args[args.index("/opt/watchdog/bin/watchdog") + 1:] if "sudo" in args else args[1:]
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 0, (line, result.stderr)


# --- properties of what users type ---------------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True)


@settings(max_examples=80, deadline=None)
@given(rule=names, group=st.one_of(st.none(), st.text(min_size=1, max_size=30)))
def test_targets_round_trip(rule: str, group: str | None) -> None:
    target = Target(rule, group)
    assert parse_target(str(target)) == target


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_target_text_parses_or_says_why(text: str) -> None:
    try:
        target = parse_target(text)
    except ValueError as exc:
        assert "RULE" in str(exc)
    else:
        assert re.fullmatch(r"[a-z0-9_-]+", target.rule) and target.group != ""


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=20), st.from_regex(r"([0-9]{1,12}(ms|s|m|h|d|w)){1,3}", fullmatch=True)))
def test_silence_durations_are_bounded_or_refused(text: str) -> None:
    try:
        length = parse_silence_duration(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert timedelta(0) < length <= MAX_SILENCE

    assert parse_silence_duration("30d") == MAX_SILENCE


def test_status_text_names_watchdogs_own_alerts_and_rules_not_yet_run(tmp_path: Path, capsys) -> None:
    from tests.helpers import write_project
    from watchdog.engine import SELF_RULE, Engine
    from watchdog.state import StateStore
    from watchdog.status import show_status

    config = write_project(tmp_path, "rules_dir: rules\nstate_path: state.db\nsources:\n  w: {type: postgres, dsn: 'host=x'}\n",
                           {"fresh": "name: fresh\ntype: freshness\nsource: w\nchecks: [{name: c, table: t, loaded_at: at}]\n"
                                     "warn_after: 1h\n",
                            "tabbed": "name: tabbed\ntype: freshness\n\tsource: w\n"})
    store = StateStore(config.state_path)
    Engine([], store, None).report_invalid_files({"rules/tabbed.yaml": "3:1: a tab"})
    store.close()
    assert show_status(config) == 0
    out = capsys.readouterr().out
    assert f"{SELF_RULE}: watchdog's own alerts\n" in out and "(removed)" not in out
    assert "fresh (freshness): last run never, next when the daemon runs" in out
    assert "rules/tabbed.yaml:3: a tab in the indentation" in out and ": :" not in out


def test_status_and_silence_work_from_a_shell_without_the_services_variables(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "fresh.yaml").write_text(textwrap.dedent(FRESH_RULE))
    (tmp_path / "watchdog.yaml").write_text(textwrap.dedent("""\
        rules_dir: rules
        state_path: state.db
        sources:
          warehouse: {type: postgres, dsn: "${WAREHOUSE_DSN}", password_file: "${SECRETS}/pg"}
          logs: {type: search, hosts: ["${SEARCH_URL}"], api_key: "${SEARCH_KEY}"}
        slack: {token: "${SLACK_BOT_TOKEN}", channel: "#alerts"}
        self_monitoring: {heartbeat_url: "${HEARTBEAT_URL}"}
        """))
    shell = {k: v for k, v in os.environ.items() if k not in ("WAREHOUSE_DSN", "SEARCH_URL", "SEARCH_KEY",
                                                              "SLACK_BOT_TOKEN", "HEARTBEAT_URL", "SECRETS")}
    config = str(tmp_path / "watchdog.yaml")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*WATCHDOG, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=shell)

    status = run("status", "-c", config, "--format", "json")
    assert status.returncode == 0, status.stderr
    assert [r["name"] for r in json.loads(status.stdout)["rules"]] == ["fresh"]
    silenced = run("silence", "fresh:ga", "--for", "1h", "--reason", "vendor outage", "-c", config)
    assert silenced.returncode == 0, silenced.stderr
    assert run("unsilence", "1", "-c", config).returncode == 0
    validated = run("validate", "-c", config)  # (the daemon and validate still need every variable)
    assert validated.returncode != 0 and "SLACK_BOT_TOKEN" in validated.stdout + validated.stderr
