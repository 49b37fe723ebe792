"""Validation messages: one per mistake, each naming the fix, at the line that needs it; schemas that resolve offline."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from watchdog import yamlfile
from watchdog.config import load_config
from watchdog.loader import load_rules
from watchdog.problems import InvalidFileError

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "watchdog" / "schemas"

CONFIG = """\
rules_dir: rules
state_path: state.db
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9200"]}
  warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=warehouse"}
rule_env: [RUNBOOK_BASE]
"""

SEARCH = """\
name: r
type: threshold
source: logs
index: "app-*"
window: 5m
"""


TYPES = ", ".join(json.loads((SCHEMAS / "rule.schema.json").read_text())["properties"]["type"]["enum"])


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[tuple[int, int, str, str]]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "watchdog.yaml").write_text(CONFIG)
    (tmp_path / "rules" / "r.yaml").write_text(textwrap.dedent(text))
    config = load_config(str(tmp_path / "watchdog.yaml"), environ={})
    result = load_rules([str(tmp_path / "rules" / "r.yaml")], config, environ=environ or {})
    assert not result.rules
    return [(p.line, p.column, p.path, p.message) for p in result.problems]


def test_a_tab_in_the_indentation_says_tab(tmp_path: Path) -> None:
    assert problems(tmp_path, SEARCH + "threshold:\n\tabove: 5\n") == [
        (7, 1, "", "a tab in the indentation: YAML indents with spaces only (replace the tab with spaces)")]


def test_an_unclosed_quote_is_reported_where_it_opened(tmp_path: Path) -> None:
    text = 'name: r\ntype: threshold\nsource: logs\nindex: "app-*"\nwindow: 5m\nquery: "level:error\nthreshold: {above: 5}\ngroup_by: team\n'
    assert problems(tmp_path, text) == [
        (6, 8, "", 'the quote (") opened here is never closed: add the closing " (the file ends inside it)')]
    assert problems(tmp_path, text.replace('"level:error', "'level:error"))[0][:2] == (6, 8)


@pytest.mark.parametrize("value, shown", [('"fifty"', "a string ('fifty')"), ("[50]", "a list ([50])")])
def test_a_wrong_type_is_the_one_message(tmp_path: Path, value: str, shown: str) -> None:
    assert problems(tmp_path, SEARCH + f"threshold: {value}\n") == [
        (6, 12, "threshold", f"must be a mapping, not {shown}: e.g. {{above: 50}} or {{below: 1}}")]


def test_above_and_below_mistakes_say_which(tmp_path: Path) -> None:
    assert problems(tmp_path, SEARCH + "threshold: {above: 5, below: 1}\n")[0][3] == (
        "give either 'above' or 'below', not both (use two rules for a band)")
    assert problems(tmp_path, SEARCH + "threshold: {}\n") == [
        (6, 12, "threshold", "give 'above' or 'below': e.g. {above: 50} or {below: 1}")]


def test_an_unknown_type_lists_the_types_once(tmp_path: Path) -> None:
    text = SEARCH.replace("threshold", "frequency") + "threshold: {above: 5}\nquery: x\ngroup_by: team\nnum_events: 5\ntimeframe: 5m\n"
    assert problems(tmp_path, text) == [
        (2, 7, "type", f"unknown type 'frequency': the types are {TYPES}")]
    assert TYPES.startswith("threshold, metric")
    assert problems(tmp_path, SEARCH.replace("type: threshold", "type: treshold") + "threshold: {above: 5}\n")[0][3] == (
        f"unknown type 'treshold' (did you mean 'threshold'?): the types are {TYPES}")


def test_a_number_without_a_unit_says_add_a_unit(tmp_path: Path) -> None:
    assert problems(tmp_path, SEARCH.replace("window: 5m", "window: 5") + "threshold: {above: 5}\n") == [
        (5, 9, "window", "5 has no unit: add a unit: 5m (durations are like 30s, 5m, 2h, 1d, 1h30m)")]


def test_a_timeout_without_a_unit_suggests_seconds(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("rules_dir: .\nrule_timeout: 60\n")
    with pytest.raises(InvalidFileError) as raised:
        load_config(str(tmp_path / "c.yaml"), environ={})
    (problem,) = raised.value.problems
    assert problem.message == "60 has no unit: add a unit: 60s (durations are like 30s, 5m, 2h, 1d, 1h30m)"


def test_the_nearest_key_is_suggested(tmp_path: Path) -> None:
    text = """\
        name: r
        type: freshness
        source: warehouse
        checks:
          - {name: a, table: x.y, loaded_at: t}
        warn_after: 1h
        critical_after: 2h
        """
    assert problems(tmp_path, text) == [(7, 1, "critical_after", "unknown key 'critical_after' (did you mean 'error_after'?)")]
    assert problems(tmp_path, SEARCH + "threshold: {above: 5}\ntimeframe: 5m\n")[0][3] == "unknown key 'timeframe' (did you mean 'window'?)"
    assert problems(tmp_path, SEARCH + "threshold: {above: 5}\nxyzzy: 1\n")[0][3] == "unknown key 'xyzzy'"


def test_an_unset_variable_is_said_once(tmp_path: Path) -> None:
    assert problems(tmp_path, SEARCH + "threshold: {above: 5}\nrunbook_url: ${RUNBOOK_BASE}/x\n") == [
        (7, 14, "runbook_url", "environment variable 'RUNBOOK_BASE' is not set: set it for watchdog "
                               "(e.g. in /etc/watchdog/watchdog.env), or give a default: ${RUNBOOK_BASE:-value}")]
    (tmp_path / "c.yaml").write_text("rules_dir: rules\nslack: {webhook_url: '${HOOK}'}\n")
    with pytest.raises(InvalidFileError) as raised:
        load_config(str(tmp_path / "c.yaml"), environ={})
    assert [p.message.split(":")[0] for p in raised.value.problems] == ["environment variable 'HOOK' is not set"]


# --- schemas for editors and plain validators ---------------------------------------------------------------------


def test_schemas_resolve_locally_with_a_plain_validator(tmp_path: Path) -> None:
    """What an editor does: load the schema from its file, resolve relative $refs next to it, never the network."""
    fetched: list[str] = []

    def retrieve(uri: str) -> Resource:
        fetched.append(uri)
        if not uri.startswith("file://"):
            raise NoSuchResource(ref=uri)
        return Resource.from_contents(json.loads(Path(uri.removeprefix("file://")).read_text()))

    for name in ("config.schema.json", "rule.schema.json"):
        text = (SCHEMAS / name).read_text()
        assert "https://" not in "".join(line for line in text.splitlines() if '"$ref"' in line or '"$id"' in line)
        schema = json.loads(text)
        assert "$id" not in schema  # a remote $id would make relative references remote
        schema["$id"] = (SCHEMAS / name).as_uri()  # where the editor found the file
        validator = jsonschema.Draft202012Validator(schema, registry=Registry(retrieve=retrieve))
        instance = yaml.safe_load(CONFIG + "defaults: {schedule: {every: 1m}, severity: warning}\n") \
            if name.startswith("config") else yaml.safe_load((REPO / "rules" / "app-error-rate.yaml").read_text())
        assert list(validator.iter_errors(instance)) == []
        bad = {**instance, "defaults": {"schedule": {"every": 5}}} if name.startswith("config") else {**instance, "window": 5}
        assert list(validator.iter_errors(bad)), name  # the cross-file reference is followed, not skipped
    assert fetched and all(uri.startswith("file://") for uri in fetched)


# --- any text: a document or a syntax error with a position ------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from(["name: r", "\tabove: 5", "  - x", 'q: "open', "q: 'open", "a: {b: 1", "k: v", "\t", ": :"]),
                max_size=8))
def test_any_text_parses_or_says_where(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    try:
        yamlfile.parse(text, "r.yaml")
    except yamlfile.YamlError as exc:
        assert 1 <= exc.position.line <= len(lines) + 1 and exc.message
        if "tab in the indentation" in exc.message:
            assert "\t" in text.splitlines()[exc.position.line - 1]
        if "never closed" in exc.message:
            assert text.splitlines()[exc.position.line - 1][exc.position.column - 1] in "'\""
