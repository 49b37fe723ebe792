"""A mutator for rule and config files, and the property every loaded file must satisfy.

Seeds are the example rules in ``rules/``, the demo config and the cases of
``tests/badfiles``; mutations replace values with hostile ones (lists where a
name is expected, tags, aliases, huge numbers and durations, odd crons and
templates), insert hostile lines, shuffle, delete and re-indent lines, and
flip or insert bytes. Used by ``tests/test_fuzz_loading.py`` (a small budget)
and ``bench/fuzz_loading.py`` (at least 10,000 files).

The property (``check_rule_file``, ``check_config_file``): loading returns a
rule or problems that name the file and a line, never raises; and whatever
loads can be scheduled, rendered and put through the lifecycle without an
exception, so nothing accepted can crash the daemon later.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.badfiles import GOOD, REMEDIATE, THRESHOLD
from watchdog import lifecycle, schedule
from watchdog.config import Config, load_config
from watchdog.lifecycle import Kind, Notice
from watchdog.listen import parse_listen
from watchdog.loader import load_rules
from watchdog.notify.render import render
from watchdog.problems import InvalidFileError, display_path
from watchdog.rule import Rule
from watchdog.ruletypes import COMMON_MESSAGE_FIELDS, RULE_TYPES

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
# The example rules' names: a file loaded alone may depend on them (depends_on), as in their rules directory.
EXAMPLE_RULES = tuple(p.stem for p in sorted((REPO / "rules").glob("*.yaml")))

CONFIG_SEED = """\
rules_dir: rules
state_path: state.db
sources:
  logs: {type: search, hosts: ["http://127.0.0.1:9200"], timeout: 10s}
  warehouse: {type: postgres, dsn: "host=127.0.0.1 dbname=warehouse", statement_timeout: 30s, connect_timeout: 5s}
  warehouse_refresh: {type: postgres, dsn: "host=127.0.0.1 dbname=warehouse"}
  aws: {type: dms, region: us-east-1}
defaults:
  schedule: {every: 1m}
  repeat_every: 4h
  for: 0s
self_monitoring: {channel: "#ops", heartbeat_every: 1m}
metrics: {listen: "127.0.0.1:9464"}
workers: 4
rule_timeout: 60s
rule_refresh_sql: ["call analytics.refresh()", "select 1"]
rule_sql_functions: [analytics.*]
"""

HOSTILE_VALUES = (
    "[x]", "{a: 1}", "[]", "{}", "~", "null", "true", "no", '""', "''", "0", "-1", "1e400", ".nan", "-.inf", ".inf",
    "9" * 60, "9" * 5000, "0x" + "f" * 50, "1:30:00", "2026-01-01", "2026-01-01T00:00:00Z",
    "!!python/object/apply:os.system ['true']", "!foo x", "!!str 5", "! x", "!!binary aGk=", "!!set {a}",
    "&a [*a]", "*nowhere", "&b x", "0s", "0ms", "1ms", "999999999999d", "100000000d", "9" * 300 + "s", "1w1d1h1m1s1ms",
    "'0 0 31 2 *'", "'0 0 30 2 *'", "'0 0 0 * * * 2030'", "'* * * * * *'", "'@reboot'", "'@daily'", "'H * * * *'",
    "'*/0 * * * *'", "'60 * * * *'", "'0 0 29 2 *'", "'{count:>999999999}'", "'{description.__class__}'",
    "'{labels[team]}'", "'{0}'", "'{}'", "'{value!r}'", "'{value:{group}}'", "'{value:.99f}'", "'{count:,}'", "'{'",
    "'}'", "'[::1]:19466'", "'localhost:99999'", "'[::1]:9464'", "'::1:80'", "'0.0.0.0:0'", "Europe/Berlin",
    "America", "'../../etc/passwd'", "/dev/zero", "/etc/passwd", "'${HOME}'", "'${NOPE}'", "'$${X}'",
    "'a\\u0000b'", "\"\\x07\"", "'x' ", "| \n  block\n", "> \n  folded\n", "- a\n- b", "a: b: c",
    "[" * 40 + "]" * 40, "[" * 2000 + "]" * 2000,
)

HOSTILE_LINES = (
    "<<: 5", "<<: [1, 2]", "<<: {extra: 1}", "? [a, b]\n: 1", "? {a: 1}\n: 2", "&k key: v", "*k : v", "---", "...",
    "%YAML 1.1", "%TAG ! tag:x,2000:", "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8)),
    's: &s "' + "$$" * 50_000 + '"\nt: [' + ", ".join(["*s"] * 100) + "]",
    "deep: " + "[" * 60 + "]" * 60, "labels: {a: [1]}", "labels: {a: {b: c}}", "notify: [slack]", "notify: []",
    "notify: {slack: {channel: [x]}}", "message: '{count:>99999}'", "checks: [[]]", "checks: [{name: [x]}]",
    "\tname: x", "name: x\n name: y", "\ufeffname: bom", "\x00", "\x85", "\u2028", "name: \U0001f600",
    "schedule: {every: 1s, cron: '* * * * *'}", "schedule: {timezone: Mars/Olympus}", "schedule: []",
    "threshold: {above: {warning: .nan}}", "threshold: {above: -1e308, below: 1e308}", "window: 0s",
    "restart: {within: 0s, max_attempts: 0}", "refresh: {source: warehouse, sql_file: /dev/zero}",
    "refresh: {source: warehouse, sql_file: /nonexistent}", "token_file: /dev/zero", "password_file: /proc/self/mem",
    "metrics: {listen: '[::1]:19466'}", "metrics: {listen: 'localhost:99999'}", "defaults: {schedule: {every: 0s}}",
    "workers: 0", "workers: 1e9", "rule_timeout: 0s", "sources: {x: {type: [search]}}", "rules_dir: /dev/null",
)

BYTES = (b"\xe9", b"\xff", b"\x00", b"\xc3", b"\xef\xbb\xbf", b"\t", b"\r", b"\n", b"'", b'"', b"{", b"[", b"&", b"*",
         b"!", b"%", b"@", b"`", b"|", b">", b"#", b":", b"-", b"?", b"\\")


def seeds() -> list[str]:
    """The texts mutations start from: real rules, the bad-file templates, the config."""
    texts = [p.read_text() for p in sorted((REPO / "rules").glob("*.yaml"))]
    texts += [GOOD.format(name="seed"), THRESHOLD.format(name="seed", above=5),
              REMEDIATE.format(name="seed", within="6h", refresh="sql: select 1", timeout="30m")]
    return texts


def mutate(rng: random.Random, text: str) -> bytes:
    """``text`` after 1-4 random mutations, as bytes (some mutations are not UTF-8)."""
    lines = text.splitlines()
    data: bytes | None = None
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(9)
        if data is not None:
            kind = 8  # once bytes were touched, stay at the byte level
        if kind == 0 and lines:  # a value replaced
            i = rng.randrange(len(lines))
            key, sep, _ = lines[i].partition(":")
            if sep:
                lines[i] = f"{key}: {rng.choice(HOSTILE_VALUES)}"
        elif kind == 1:  # a hostile line
            lines.insert(rng.randint(0, len(lines)), rng.choice(HOSTILE_LINES))
        elif kind == 2 and lines:
            del lines[rng.randrange(len(lines))]
        elif kind == 3 and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif kind == 4 and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 5 and lines:
            i = rng.randrange(len(lines))
            lines[i] = rng.choice(("", " ", "  ", "\t", "- ")) + lines[i]
        elif kind == 6 and lines:  # a key swapped for another known one
            i = rng.randrange(len(lines))
            key, sep, rest = lines[i].partition(":")
            if sep:
                indent = key[: len(key) - len(key.lstrip())]
                lines[i] = f"{indent}{rng.choice(KNOWN_KEYS)}:{rest}"
        elif kind == 7 and lines:  # a value nested or listed
            i = rng.randrange(len(lines))
            key, sep, rest = lines[i].partition(":")
            if sep and rest.strip():
                lines[i] = f"{key}: {rng.choice(('[', '{x: ', '[[', '&z '))}{rest.strip()}{rng.choice((']', '}', ']]', ''))}"
        else:
            data = data if data is not None else ("\n".join(lines) + "\n").encode()
            pos = rng.randint(0, len(data))
            choice = rng.randrange(4)
            if choice == 0:
                data = data[:pos] + rng.choice(BYTES) + data[pos:]
            elif choice == 1 and data:
                pos = min(pos, len(data) - 1)
                data = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1:]
            elif choice == 2:
                data = data[:pos]
            else:
                data = data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[pos:]
    return data if data is not None else ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def _known_keys() -> tuple[str, ...]:
    from watchdog.schema import load_schema

    keys: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for name, sub in value.items():
                if name == "properties" and isinstance(sub, dict):
                    keys.update(sub)
                walk(sub)
        elif isinstance(value, list):
            for sub in value:
                walk(sub)

    walk(load_schema("rule.schema.json"))
    walk(load_schema("config.schema.json"))
    return tuple(sorted(keys))


KNOWN_KEYS = _known_keys()


def exercise(rule: Rule) -> None:
    """Use a loaded rule the way the daemon will: schedule, lifecycle arithmetic, rendering. Raises on a bug."""
    first = schedule.first_run(rule.name, rule.schedule, NOW, None)
    schedule.following_run(rule.name, rule.schedule, first, first + timedelta(seconds=1))
    policy = lifecycle.Policy.of(rule)
    assert NOW + policy.for_ + policy.repeat_every + policy.keep_firing_for > NOW - timedelta(days=1)
    options = rule.options
    for name in ("window", "delay", "warn_after", "error_after"):
        value = getattr(options, name, None)
        if isinstance(value, timedelta):
            assert NOW - value - value <= NOW
    fields = {name: "x" for name in RULE_TYPES[rule.type].message_fields | COMMON_MESSAGE_FIELDS}
    fields.update(count=12345, value=1.5, threshold=10)
    for kind in (Kind.FIRING, Kind.REPEAT, Kind.RESOLVED):
        notice = Notice(kind=kind, group="g", at=NOW, severity=rule.severity, value=1.5, summary="s", episode="e",
                        details=fields, since=NOW)
        payload = render(rule, notice)
        assert len(payload["text"]) < 100_000, len(payload["text"])


def check_rule_file(path: str, config: Config | None) -> str:
    """Load the rule file at ``path`` and check the property; returns "rule" or "problems". Raises on a bug."""
    result = load_rules([path], config, environ={"HOME": "/root"}, known=EXAMPLE_RULES)
    assert bool(result.rules) != bool(result.problems), (result.rules, result.problems)
    for problem in result.problems:
        shown = display_path(path)  # the file, or a file under it when it is a directory
        assert problem.file in (shown, path) or problem.file.startswith((shown + os.sep, path + os.sep)), problem
        assert problem.line >= 1 and problem.column >= 1, problem
        assert problem.message and len(problem.message) < 2000, problem
    for rule in result.rules:
        exercise(rule)
    return "rule" if result.rules else "problems"


def check_config_file(path: str) -> str:
    """Load the config file at ``path`` and check the property; returns "config" or "problems". Raises on a bug."""
    try:
        config = load_config(path, environ={"HOME": "/root"})
    except InvalidFileError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == display_path(path) and problem.line >= 1, problem
        return "problems"
    if config.metrics_listen is not None:
        parse_listen(config.metrics_listen)
    schedule.first_run("x", config.defaults.schedule, NOW, None)
    assert config.rule_timeout.total_seconds() >= 1 and config.defaults.repeat_every.total_seconds() >= 60
    return "config"


def config_for_rules(directory: str) -> Config:
    """A config whose sources the seeds name, for loading mutated rules with source checks."""
    path = os.path.join(directory, "watchdog.yaml")
    with open(path, "w") as fh:
        fh.write(CONFIG_SEED)
    return load_config(path, environ={})
