"""Rule authors stay inside what the config grants: files under the rules directory, SQL that only reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from watchdog.cli import main
from watchdog.config import load_config
from watchdog.daemon import RuleFiles
from watchdog.loader import MAX_RULES_DIR_FILES, find_rule_files
from watchdog.problems import InvalidFileError

CONFIG = """\
rules_dir: rules
state_path: state.db
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9200"]}
"""

GOOD_RULE = """\
name: app-errors
type: threshold
source: logs
index: "app-logs-*"
window: 5m
threshold: {above: 50}
"""

SECRET = "hunter2-top-secret-value"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watchdog.yaml").write_text(CONFIG)
    (tmp_path / "rules" / "good.yaml").write_text(GOOD_RULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHDOG_CONFIG", raising=False)
    return tmp_path


def test_a_rule_file_linked_to_a_secret_is_refused_and_never_read(project: Path, capsys: pytest.CaptureFixture[str],
                                                                   log_lines: list[str]) -> None:
    secret = project / "credentials.yaml"
    secret.write_text(f"{SECRET}_key: {SECRET}\naws_secret_access_key: {SECRET}\n")
    (project / "rules" / "creds.yaml").symlink_to(secret)
    (project / "rules" / "sub").mkdir()
    (project / "rules" / "sub" / "also.yml").symlink_to("../../credentials.yaml")  # relative, through a subdirectory
    (project / "rules" / "inside.yaml").symlink_to("good.yaml")  # a link within the directory is a rule like any other
    os.chmod(secret, 0)  # were it opened, reading would fail with a different message
    code = main(["validate", "-c", "watchdog.yaml", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert sorted((e["file"], e["message"]) for e in out["errors"]) == [
        ("rules/creds.yaml", "a symbolic link to a file outside rules; it is not read (copy the rule into the rules "
                             "directory, or link within it)"),
        ("rules/inside.yaml", "rule name 'app-errors' is already used by rules/good.yaml, which keeps running; give "
                              "this rule another name"),
        ("rules/sub/also.yml", "a symbolic link to a file outside rules; it is not read (copy the rule into the rules "
                               "directory, or link within it)"),
    ]
    os.chmod(secret, 0o600)
    main(["validate", "-c", "watchdog.yaml"])
    main(["status", "-c", "watchdog.yaml"])
    main(["status", "-c", "watchdog.yaml", "--format", "json"])
    files = RuleFiles(load_config("watchdog.yaml"))
    assert [r.name for r in files.load()] == ["app-errors"]
    shown = capsys.readouterr()
    assert "creds.yaml" in shown.out and "creds.yaml" in "\n".join(log_lines)
    for text in (shown.out, shown.err, "\n".join(log_lines)):
        assert SECRET not in text and "aws_secret" not in text and "credentials.yaml" not in text


def test_rules_dir_at_the_root_is_refused(project: Path) -> None:
    for value in ("/", "/..", "../" * 40):
        (project / "watchdog.yaml").write_text(CONFIG.replace("rules_dir: rules", f"rules_dir: {value}"))
        with pytest.raises(InvalidFileError) as caught:
            load_config("watchdog.yaml")
        (problem,) = caught.value.problems
        assert (problem.line, problem.path) == (1, "rules_dir")
        assert problem.message.startswith("the root directory (/) is refused")
    (project / "watchdog.yaml").write_text(CONFIG + "rule_file_dirs: [sql, /]\n")
    with pytest.raises(InvalidFileError) as caught:
        load_config("watchdog.yaml")
    assert [p.path for p in caught.value.problems] == ["rule_file_dirs[1]"]


def test_an_overfull_rules_dir_is_refused_without_walking_it_all(project: Path, capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    crowd = project / "rules" / "node_modules"
    crowd.mkdir()
    for i in range(MAX_RULES_DIR_FILES + 1):
        (crowd / f"{i}.js").touch()
    found = find_rule_files([str(project / "rules")])
    assert found.files == () and [r for _, r in found.refused] == [
        "the rules directory holds over 10,000 files; point rules_dir at a directory that holds only rule files"]
    assert main(["validate", "-c", "watchdog.yaml"]) == 1
    assert "rules:1:1: the rules directory holds over 10,000 files" in capsys.readouterr().out


def test_a_link_leaving_the_rules_dir_is_noticed_by_the_daemon_and_its_removal_too(project: Path,
                                                                                  log_lines: list[str]) -> None:
    files = RuleFiles(load_config("watchdog.yaml"))
    files.load()
    (project / "rules" / "x.yaml").symlink_to(project / "watchdog.yaml")
    assert files._fingerprint() != files.stamp
    files.load()
    assert any("x.yaml" in line and "symbolic link" in line for line in log_lines)
    assert "sources" not in "\n".join(line for line in log_lines if "x.yaml" in line)  # the target's keys: never
    (project / "rules" / "x.yaml").unlink()
    assert files._fingerprint() != files.stamp


def readme_rule(heading: str) -> str:
    """The first YAML example under a README heading (the examples users copy)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    return section[section.index("```yaml\n") + 8:section.index("```", section.index("```yaml\n") + 8)]


REPO = Path(__file__).resolve().parent.parent


def test_the_readme_sql_examples_validate_and_run(tmp_path: Path, pg_db: str) -> None:
    from demo.data import WAREHOUSE_SQL
    from tests.helpers import Clock, engine_for, evaluate_now, write_project
    from tests.test_freshness import execute, host_now

    execute(pg_db, WAREHOUSE_SQL)
    execute(pg_db, "alter table analytics.dim_users add column email text; create schema raw; create table "
                   'raw.events (tenant text, received_at timestamptz); create schema "Sales"; create table '
                   '"Sales"."Orders.v2" (updated_at timestamptz, created_at timestamptz, status text); create table '
                   "etl.sources (name text, enabled bool)")
    rules = {"volume": readme_rule("### sql_value: numbers from the warehouse"),
             "fresh": readme_rule("### freshness: warehouse staleness")}
    config = write_project(tmp_path, f"rules_dir: rules\nstate_path: state.db\nsources:\n"
                                     f"  warehouse: {{type: postgres, dsn: '{pg_db}'}}\n", rules)
    engine = engine_for(config, Clock(host_now()))  # validates: no problem in either
    evaluate_now(engine)
    summaries = [s.summary for groups in engine.store.groups().values() for s in groups.values()]
    assert summaries and not [s for s in summaries if "could not check" in s], summaries
    engine.store.close()


PROBES = {  # the issue's probes, as a rule author would write them
    "ts_stat": "select word, ndoc from ts_stat('select to_tsvector(x) from t')",
    "ts_rewrite": "select ts_rewrite('a'::tsquery, 'select q, r from t')::text, 1",
    "query_to_xml": "select query_to_xml('select * from t', true, true, '')::text, 1",
    "database_to_xml": "select 'x', length(database_to_xml(true, true, '')::text)",
    "pg_terminate_backend": "select 'x', count(pg_terminate_backend(pid)) from pg_stat_activity",
    "pg_advisory_lock": "select 'x', count(*) from (select pg_advisory_lock(2003071590)) l",
    "analytics.cleanup": "select 'x', analytics.cleanup()",  # a function of the warehouse that writes
}


def test_each_probe_is_refused_at_validate_naming_the_function(project: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    (project / "watchdog.yaml").write_text(CONFIG + "  warehouse: {type: postgres, dsn: 'host=127.0.0.1 port=9'}\n")
    for name in PROBES:  # each refused on its own (a rule stops at its first problem)
        (project / "rules" / "probe.yaml").write_text(f"name: probe\ntype: sql_value\nsource: warehouse\n"
                                                      f"threshold: {{above: 0}}\nchecks:\n"
                                                      f"  - {{name: c, sql: \"{PROBES[name]}\"}}\n")
        assert main(["validate", "-c", "watchdog.yaml", "--format", "json"]) == 1
        (error,) = json.loads(capsys.readouterr().out)["errors"]
        assert error["path"] == "checks[0].sql" and f"function {name}()" in error["message"], error


UNLISTED = ["drop table analytics.victim", "copy (select 1) to program 'id'",
            "do $$ begin create table pwned (i int); end $$", "call analytics.refresh(); drop table analytics.victim"]


@pytest.mark.parametrize("sql", UNLISTED)
def test_an_unlisted_refresh_is_refused_at_validate(project: Path, capsys: pytest.CaptureFixture[str], sql: str) -> None:
    (project / "watchdog.yaml").write_text(CONFIG + "  warehouse: {type: postgres, dsn: 'host=127.0.0.1 port=9'}\n"
                                           "  aws: {type: dms, region: us-east-1}\n"
                                           "rule_refresh_sql: ['call analytics.refresh()']\n")
    (project / "rules" / "fix.yaml").write_text(f"name: fix\ntype: dms_remediate\nsource: aws\n"
                                                f"refresh: {{source: warehouse, sql: \"{sql.replace('$', '$$')}\"}}\n")
    assert main(["validate", "-c", "watchdog.yaml", "--format", "json"]) == 1
    (error,) = json.loads(capsys.readouterr().out)["errors"]
    assert error["path"] == "refresh.sql" and "'rule_refresh_sql'" in error["message"]
    (project / "rules" / "fix.yaml").write_text("name: fix\ntype: dms_remediate\nsource: aws\n"
                                                "refresh: {source: warehouse, sql: 'CALL analytics.refresh() -- x'}\n")
    assert main(["validate", "-c", "watchdog.yaml", "--format", "json"]) == 0  # the listed one, as written anywhere


def role_project(project: Path, dsn: str) -> None:
    (project / "watchdog.yaml").write_text(CONFIG + f"  warehouse: {{type: postgres, dsn: '{dsn}', connect_timeout: 3s}}\n")
    (project / "rules" / "volume.yaml").write_text("name: volume\ntype: sql_value\nsource: warehouse\n"
                                                   "threshold: {above: 100}\nchecks: [{name: n, sql: 'select 1'}]\n")


def validate_warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["validate", "-c", "watchdog.yaml", "--format", "json"]) == 0  # a risk, not an invalid file
    return list(json.loads(capsys.readouterr().out)["warnings"])


def test_validate_names_a_superuser_or_a_writing_role_with_the_fix(project: Path, pg_db: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_freshness import execute

    role_project(project, pg_db)  # the test cluster's owner: a superuser
    (warning,) = validate_warnings(capsys)
    assert warning.startswith("postgres source 'warehouse': role '") and "' is a superuser" in warning
    assert "GRANT pg_read_all_data TO watchdog_reader" in warning and "The warehouse role" in warning
    database = pg_db.split("dbname=")[1].split()[0]
    execute(pg_db, f"create schema analytics; create table analytics.t (i int); create schema etl; "
                   f"drop role if exists wd_writer; drop role if exists wd_reader; "
                   f"create role wd_writer login; grant usage on schema analytics, etl to wd_writer; "
                   f"grant select, insert on analytics.t to wd_writer; grant create on schema etl to wd_writer; "
                   f"create role wd_reader login; grant pg_read_all_data to wd_reader; "
                   f'grant connect on database "{database}" to wd_writer, wd_reader')
    owner = pg_db.split("user=")[1].split()[0]
    role_project(project, pg_db.replace(f"user={owner}", "user=wd_writer"))
    (warning,) = validate_warnings(capsys)
    assert "role 'wd_writer' can write schema(s) analytics, etl" in warning and "pg_read_all_data" in warning
    role_project(project, pg_db.replace(f"user={owner}", "user=wd_reader"))
    assert validate_warnings(capsys) == []  # only reads: nothing to say
    role_project(project, "host=127.0.0.1 port=9 dbname=x password=hunter2secret")  # cannot be asked: said, not hidden
    (warning,) = validate_warnings(capsys)
    assert warning.startswith("postgres source 'warehouse': could not check what its role may do") and "hunter2" not in warning
    execute(pg_db, "drop owned by wd_writer; drop owned by wd_reader; drop role wd_writer; drop role wd_reader")


def test_the_daemon_logs_the_role_warning_at_start(project: Path, pg_db: str, capfd: pytest.CaptureFixture[str]) -> None:
    from watchdog.daemon import run

    role_project(project, pg_db)
    (project / "rules" / "good.yaml").unlink()  # (no search server here)
    assert run(load_config("watchdog.yaml"), once=True) == 0
    lines = capfd.readouterr().err.splitlines()
    assert any('msg="warehouse role"' in line and "is a superuser" in line for line in lines), lines


def test_a_sql_file_linked_out_of_the_granted_directories_is_refused_unread(project: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    secret = project / "credentials.sql"
    secret.write_text(f"select '{SECRET}'")
    (project / "sql").mkdir()
    (project / "sql" / "refresh.sql").symlink_to(secret)  # inside a granted directory, pointing out of it
    (project / "watchdog.yaml").write_text(CONFIG + "  warehouse: {type: postgres, dsn: 'host=127.0.0.1 port=9'}\n"
                                           "  aws: {type: dms, region: us-east-1}\nrule_file_dirs: [sql]\n")
    (project / "rules" / "fix.yaml").write_text("name: fix\ntype: dms_remediate\nsource: aws\n"
                                                "refresh: {source: warehouse, sql_file: ../sql/refresh.sql}\n")
    assert main(["validate", "-c", "watchdog.yaml", "--format", "json"]) == 1
    out = capsys.readouterr().out
    (error,) = json.loads(out)["errors"]
    assert error["path"] == "refresh.sql_file" and error["message"].startswith("a rule may read files only under")
    assert SECRET not in out
