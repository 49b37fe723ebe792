"""Rule files: found, parsed, validated, and turned into typed Rule objects.

One bad file never stops the others: ``load_rules`` returns the rules that
are valid together with every problem in the rest. A file with any problem
contributes no rule at all.
"""

from __future__ import annotations

import difflib
import os
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from croniter import croniter

from watchdog import schema, yamlfile
from watchdog.config import Config, RuleDefaults, parse_schedule
from watchdog.durations import parse_duration
from watchdog.interpolation import interpolate
from watchdog.problems import Problem, display_path
from watchdog.rule import NotifyTarget, Rule, Severity
from watchdog.ruletypes import COMMON_MESSAGE_FIELDS, RULE_TYPES
from watchdog.ruletypes.base import OptionsError
from watchdog.ruletypes.options import timezone

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadResult:
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # files that failed, by path: the daemon keeps their previous version running
    failed: set[str] = field(default_factory=set)


def rule_files(paths: Iterable[str]) -> list[str]:
    """Every rule file under ``paths`` (files as given, directories searched recursively), sorted."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in sorted(files)
                             if f.endswith(RULE_SUFFIXES) and not f.startswith("."))
        else:
            found.append(path)
    return found


def _check_message(doc: yamlfile.Document, template: str, allowed: frozenset[str]) -> list[Problem]:
    try:
        names = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        return [Problem.at(doc, ("message",), f"bad template: {exc} (write {{{{ and }}}} for literal braces)")]
    problems = []
    for name in sorted(names - allowed):
        close = difflib.get_close_matches(name, sorted(allowed), n=1)
        hint = f" (did you mean '{{{close[0]}}}'?)" if close else f" (known: {', '.join(sorted(allowed))})"
        problems.append(Problem.at(doc, ("message",), f"unknown placeholder '{{{name}}}'{hint}"))
    return problems


def _check_schedule(doc: yamlfile.Document, raw: Mapping[str, Any], base: tuple[str, ...]) -> list[Problem]:
    problems = []
    if "cron" in raw and not croniter.is_valid(raw["cron"]):
        problems.append(Problem.at(doc, base + ("cron",), f"'{raw['cron']}' is not a valid cron expression "
                                   "(five fields: minute hour day-of-month month day-of-week)"))
    if "timezone" in raw:
        try:
            timezone(raw["timezone"], base + ("timezone",))
        except OptionsError as exc:
            problems.append(Problem.at(doc, exc.path, exc.message))
    if "every" in raw and parse_duration(raw["every"]).total_seconds() < 1:
        problems.append(Problem.at(doc, base + ("every",), "every must be at least 1s"))
    return problems


def _check_sources(doc: yamlfile.Document, data: Mapping[str, Any], source_type: str, config: Config) -> list[Problem]:
    problems = []
    wanted: list[tuple[tuple[str, ...], Any, str]] = [(("source",), data.get("source"), source_type)]
    refresh = data.get("refresh")
    if isinstance(refresh, dict) and "source" in refresh:
        wanted.append((("refresh", "source"), refresh["source"], "postgres"))
    for path, name, kind in wanted:
        if name is None:
            continue
        source = config.sources.get(name)
        if source is None:
            known = ", ".join(sorted(config.sources)) or "none"
            problems.append(Problem.at(doc, path, f"unknown source '{name}' (sources in {config.path}: {known})"))
        elif source.type != kind:
            problems.append(Problem.at(doc, path, f"source '{name}' is of type '{source.type}'; this needs a '{kind}' source"))
    return problems


def parse_rule(doc: yamlfile.Document, path: str, defaults: RuleDefaults, config: Config | None,
               environ: Mapping[str, str]) -> tuple[Rule | None, list[Problem]]:
    """Validate one parsed rule file (read from ``path``) and build its Rule (None when it has problems)."""
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else "not a mapping of keys"
        return None, [Problem.whole_file(doc.filename, f"a rule file must be a mapping of keys; this one is {what}")]
    problems = interpolate(doc, environ)
    problems += schema.problems(doc, "rule.schema.json")
    data: dict[str, Any] = doc.data
    # Logical checks run on the parts the schema accepted, so every error shows at once.
    flagged = {p.path.split(".")[0].split("[")[0] for p in problems}
    rule_type = RULE_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if isinstance(data.get("schedule"), dict) and "schedule" not in flagged:
        problems += _check_schedule(doc, data["schedule"], ("schedule",))
    if rule_type is not None and isinstance(data.get("message"), str) and "message" not in flagged:
        problems += _check_message(doc, data["message"], rule_type.message_fields | COMMON_MESSAGE_FIELDS)
    if rule_type is not None and config is not None:
        problems += _check_sources(doc, data, rule_type.source_type, config)
    if problems or rule_type is None:
        return None, problems
    try:
        options = rule_type.parse_options(data, os.path.dirname(os.path.abspath(path)))
    except OptionsError as exc:
        return None, [Problem.at(doc, exc.path, exc.message)]
    notify_raw = data.get("notify", {})
    if notify_raw in ([], False):
        notify = NotifyTarget(enabled=False)
    else:
        slack = notify_raw.get("slack") or {}
        notify = NotifyTarget(channel=slack.get("channel"), mention=slack.get("mention"))
    rule = Rule(
        name=data["name"], type=data["type"], path=os.path.abspath(path), options=options,
        description=data.get("description", ""),
        schedule=parse_schedule(data["schedule"]) if "schedule" in data else defaults.schedule,
        severity=Severity(data["severity"]) if "severity" in data else defaults.severity,
        for_=parse_duration(data["for"]) if "for" in data else defaults.for_,
        keep_firing_for=parse_duration(data["keep_firing_for"]) if "keep_firing_for" in data else timedelta(0),
        repeat_every=parse_duration(data["repeat_every"]) if "repeat_every" in data else defaults.repeat_every,
        notify=notify,
        labels={str(k): str(v) for k, v in data.get("labels", {}).items()},
        runbook_url=data.get("runbook_url"), message=data.get("message"), enabled=data.get("enabled", True),
    )
    return rule, []


def load_rules(paths: Iterable[str], config: Config | None = None,
               environ: Mapping[str, str] | None = None) -> LoadResult:
    """Load every rule file under ``paths``.

    ``config`` (when given) supplies defaults and lets source names be
    checked. Returns the valid rules and the problems of the others;
    two files with the same rule name are both rejected.
    """
    environ = os.environ if environ is None else environ
    defaults = config.defaults if config is not None else RuleDefaults()
    result = LoadResult()
    by_name: dict[str, tuple[Rule, yamlfile.Document]] = {}
    duplicates: dict[str, list[yamlfile.Document]] = {}
    for path in rule_files(paths):
        result.files.append(path)
        try:
            doc = yamlfile.load(path, display_path(path))
        except OSError as exc:
            result.problems.append(Problem.whole_file(display_path(path), f"cannot read rule file: {exc.strerror}"))
            result.failed.add(path)
            continue
        except yamlfile.YamlError as exc:
            result.problems.append(Problem.from_yaml_error(exc))
            result.failed.add(path)
            continue
        rule, problems = parse_rule(doc, path, defaults, config, environ)
        if rule is None:
            result.problems.extend(problems)
            result.failed.add(path)
            continue
        if rule.name in by_name:
            duplicates.setdefault(rule.name, [by_name[rule.name][1]]).append(doc)
            continue
        by_name[rule.name] = (rule, doc)
    for name, docs in duplicates.items():
        del by_name[name]
        for doc in docs:
            others = ", ".join(d.filename for d in docs if d is not doc)
            result.problems.append(Problem.at(doc, ("name",), f"rule name '{name}' is also used in {others}"))
            result.failed.add(doc.filename)
    result.rules = [rule for rule, _ in by_name.values()]
    result.problems.sort()
    return result
