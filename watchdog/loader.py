"""Rule files: found, parsed, validated, and turned into typed Rule objects.

One bad file never stops the others: ``load_rules`` returns the rules that
are valid together with every problem in the rest. A file with any problem
contributes no rule at all.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from watchdog import schema, templates, yamlfile
from watchdog.config import Config, RuleDefaults, parse_schedule
from watchdog.durations import parse_duration
from watchdog.interpolation import interpolate
from watchdog.lucene import query_problems
from watchdog.problems import Problem, display_path
from watchdog.rule import NotifyTarget, Rule, Severity
from watchdog.ruletypes import COMMON_MESSAGE_FIELDS, RULE_TYPES
from watchdog.ruletypes.base import NO_GRANTS, Grants, OptionsError
from watchdog.textfile import UnreadableFile

logger = logging.getLogger("watchdog.loader")

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadResult:
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # files and directories that failed, by path: the daemon keeps the previous version of their rules running
    failed: set[str] = field(default_factory=set)


# A rules directory is a few hundred files; far more is a mistake (``rules_dir: /``) that would cost minutes of CPU.
MAX_RULES_DIR_FILES = 10_000


@dataclass(frozen=True)
class Found:
    """The rule files under some paths, the directories that could not be listed, and what was refused unread."""

    files: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...] = ()  # (directory, reason)
    refused: tuple[tuple[str, str], ...] = ()  # (file or directory, reason): never opened


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _walk(top: str, unreadable: list[tuple[str, str]], refused: list[tuple[str, str]]) -> list[str]:
    """The rule files under the directory ``top``; links that lead out of it and overfull trees are refused."""
    real_top = os.path.realpath(top)
    files: list[str] = []
    seen = 0

    def failed(exc: OSError) -> None:
        unreadable.append((str(exc.filename), exc.strerror or str(exc)))

    for root, dirs, names in os.walk(top, onerror=failed):  # never follows a link to a directory
        seen += len(names) + len(dirs)
        if seen > MAX_RULES_DIR_FILES:
            refused.append((top, f"the rules directory holds over {MAX_RULES_DIR_FILES:,} files; point rules_dir at "
                                 "a directory that holds only rule files"))
            return []
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(RULE_SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(root, name)
            # A link may point anywhere (a credentials file): its target is never read, nor named.
            if os.path.islink(path) and not _inside(os.path.realpath(path), real_top):
                refused.append((path, f"a symbolic link to a file outside {display_path(top)}; it is not read "
                                      "(copy the rule into the rules directory, or link within it)"))
                continue
            files.append(path)
    return files


def find_rule_files(paths: Iterable[str]) -> Found:
    """Every rule file under ``paths`` (files as given, directories searched recursively), sorted.

    A directory that cannot be listed is returned in ``unreadable`` with the
    system's reason: its rules are not dropped silently. A symbolic link
    that leads out of the directory searched, and a directory holding over
    ``MAX_RULES_DIR_FILES`` files, are returned in ``refused`` and never
    read. Files are only named here, never opened (FIFOs and devices
    included; reading them is ``textfile``'s business).
    """
    files: list[str] = []
    unreadable: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(_walk(path, unreadable, refused))
        else:
            files.append(path)
    return Found(tuple(files), tuple(unreadable), tuple(refused))


def rule_files(paths: Iterable[str]) -> list[str]:
    """Every rule file under ``paths`` that can be found, sorted (see ``find_rule_files``)."""
    return list(find_rule_files(paths).files)


def _check_message(doc: yamlfile.Document, template: str, allowed: frozenset[str], key: str = "message") -> list[Problem]:
    return [Problem.at(doc, (key,), message) for message in templates.problems(template, allowed)]


def _check_sources(doc: yamlfile.Document, data: Mapping[str, Any], source_type: str, config: Config) -> list[Problem]:
    problems = []
    wanted: list[tuple[tuple[str, ...], Any, str]] = [(("source",), data.get("source"), source_type)]
    refresh = data.get("refresh")
    if isinstance(refresh, dict) and "source" in refresh:
        wanted.append((("refresh", "source"), refresh["source"], "postgres"))
    for path, name, kind in wanted:
        if not isinstance(name, str):  # missing, or not a name: the schema says so
            continue
        source = config.sources.get(name)
        if source is None:
            known = ", ".join(sorted(config.sources)) or "none"
            problems.append(Problem.at(doc, path, f"unknown source '{name}' (sources in {config.path}: {known})"))
        elif source.type != kind:
            problems.append(Problem.at(doc, path, f"source '{name}' is of type '{source.type}'; this needs a '{kind}' source"))
    return problems


def _check_files(doc: yamlfile.Document, data: Mapping[str, Any], path: str, config: Config | None) -> list[Problem]:
    """What a rule reaches beyond its own text is granted by the config.

    Files it names stay under the rules directory or a ``rule_file_dirs``
    directory; a refresh command is one of ``rule_commands``, exactly.
    """
    refresh = data.get("refresh")
    if not isinstance(refresh, dict):
        return []
    command = refresh.get("command")
    if isinstance(command, list) and config is not None and tuple(str(a) for a in command) not in config.rule_commands:
        return [Problem.at(doc, ("refresh", "command"), f"a rule may run only the commands listed in 'rule_commands' in "
                                                        f"{display_path(config.path)}, exactly as written there; ask "
                                                        "the operator to add this one")]
    if not isinstance(refresh.get("sql_file"), str):
        return []
    rule_dir = os.path.dirname(os.path.abspath(path))
    roots = [rule_dir] if config is None else [config.rules_dir, *config.rule_file_dirs]
    target = os.path.realpath(os.path.join(rule_dir, refresh["sql_file"]))
    for root in roots:
        root = os.path.realpath(root)
        if os.path.commonpath([root, target]) == root:
            return []
    granted = ", ".join(display_path(r) for r in roots)
    return [Problem.at(doc, ("refresh", "sql_file"), f"a rule may read files only under {granted}; put the file there, "
                                                     "or add its directory to 'rule_file_dirs' in the config")]


def _check_approvals(doc: yamlfile.Document, data: Mapping[str, Any], config: Config) -> list[Problem]:
    """``approve: true`` needs someone to ask: Socket Mode, approvers, and notifications on."""
    slack = config.slack
    if slack is None or not slack.app_token or not slack.token:
        return [Problem.at(doc, ("approve",), f"asking for approval needs Slack buttons: set slack.token (or token_file) "
                                              f"and slack.app_token (or app_token_file) in {config.path} "
                                              "(see the README, Buttons)")]
    if not slack.actions.approvers:
        return [Problem.at(doc, ("approve",), f"asking for approval needs someone who may approve: set "
                                              f"slack.actions.approvers in {config.path}")]
    if data.get("notify") in ([], False):
        return [Problem.at(doc, ("approve",), "approval is asked in Slack; it cannot be combined with notify: []")]
    return []


def _refused_env_hint(config: Config | None) -> str:
    """Why a rule cannot read a variable, and how the operator allows it."""
    if config is None:
        return "rule files read only the variables the config's 'rule_env' lists, and no config was loaded"
    listed = ", ".join(sorted(config.rule_env)) or "none"
    return f"add it to 'rule_env' in {display_path(config.path)} if rules may read it (rule_env now: {listed})"


def parse_rule(doc: yamlfile.Document, path: str, defaults: RuleDefaults, config: Config | None,
               environ: Mapping[str, str]) -> tuple[Rule | None, list[Problem]]:
    """Validate one parsed rule file (read from ``path``) and build its Rule (None when it has problems)."""
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else "not a mapping of keys"
        return None, [Problem.whole_file(doc.filename, f"a rule file must be a mapping of keys; this one is {what}")]
    allowed = config.rule_env if config is not None else frozenset()
    problems = interpolate(doc, environ, allowed, _refused_env_hint(config))
    problems += schema.problems(doc, "rule.schema.json", skip=[p.path for p in problems])  # unset ${VAR}: said once
    data: dict[str, Any] = doc.data
    # Logical checks run on the parts the schema accepted, so every error shows at once.
    flagged = {p.path.split(".")[0].split("[")[0] for p in problems}
    type_name = data.get("type")
    rule_type = RULE_TYPES.get(type_name) if isinstance(type_name, str) else None
    for key in ("message", "resolved_message"):
        if rule_type is not None and isinstance(data.get(key), str) and key not in flagged:
            problems += _check_message(doc, data[key], rule_type.message_fields | COMMON_MESSAGE_FIELDS, key)
    if rule_type is not None and config is not None:
        problems += _check_sources(doc, data, rule_type.source_type, config)
        if data.get("approve") is True:
            problems += _check_approvals(doc, data, config)
    if rule_type is not None:
        problems += _check_files(doc, data, path, config)
    if problems or rule_type is None:
        return None, problems
    try:
        grants = Grants(config.rule_sql_functions, config.rule_refresh) if config is not None else NO_GRANTS
        options = rule_type.parse_options(data, os.path.dirname(os.path.abspath(path)), grants)
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
        runbook_url=data.get("runbook_url"), message=data.get("message"),
        resolved_message=data.get("resolved_message"), enabled=data.get("enabled", True),
        depends_on=tuple(data.get("depends_on", ())),
        depends_on_settle=parse_duration(data["depends_on_settle"]) if "depends_on_settle" in data else None,
        settle=parse_duration(data["settle"]) if "settle" in data else defaults.settle,
    )
    return rule, []


def _load_file(path: str, defaults: RuleDefaults, config: Config | None, environ: Mapping[str, str],
               ) -> tuple[yamlfile.Document | None, Rule | None, list[Problem]]:
    """One rule file read, parsed and validated: its document and rule, or its problems. Never raises."""
    shown = display_path(path)
    try:
        doc = yamlfile.load(path, shown)
        rule, problems = parse_rule(doc, path, defaults, config, environ)
        return doc, rule, problems
    except UnreadableFile as exc:
        return None, None, [Problem(shown, exc.line, exc.column, "", f"cannot read rule file: {exc.message}")]
    except yamlfile.YamlError as exc:
        return None, None, [Problem.from_yaml_error(exc)]
    except Exception as exc:  # a bug of ours: this file is in error, the others still load
        logger.error("unexpected error loading a rule file", exc_info=True, extra={"fields": {"file": shown}})
        return None, None, [Problem.whole_file(shown, f"internal error while loading this file ({type(exc).__name__}); "
                                                      "please report it with the file")]


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 2**63


def load_rules(paths: Iterable[str], config: Config | None = None,
               environ: Mapping[str, str] | None = None, known: Iterable[str] = (), *,
               taken: Mapping[str, str] | None = None, check_queries: bool = False) -> LoadResult:
    """Load every rule file under ``paths``.

    ``config`` (when given) supplies defaults and lets source names be
    checked. Returns the valid rules and the problems of the others. Of
    two files with the same rule name, the one that was there first (the
    older modification time; then the path) keeps the name and the other is
    rejected: a copied example never turns off the rule it was copied from.
    ``known`` names rules that exist besides the ones loaded here (the rest
    of the rules directory, or the rules a daemon keeps running), which
    ``depends_on`` may name. ``taken`` maps the names of the rules directory
    to their files (``watchdog validate`` of single files: a name already
    used there is refused as the daemon would refuse it); ``check_queries``
    parses Lucene query strings (``lucene``), as ``validate`` does.
    """
    environ = os.environ if environ is None else environ
    defaults = config.defaults if config is not None else RuleDefaults()
    result = LoadResult()
    by_name: dict[str, tuple[Rule, yamlfile.Document]] = {}
    duplicates: dict[str, list[tuple[Rule, yamlfile.Document]]] = {}
    found = find_rule_files(paths)
    for directory, reason in found.unreadable:
        result.problems.append(Problem.whole_file(display_path(directory), f"cannot read rules directory: {reason}"))
        result.failed.add(directory)
    for path, reason in found.refused:
        result.problems.append(Problem.whole_file(display_path(path), reason))
        result.failed.add(path)
    for path in found.files:
        result.files.append(path)
        doc, rule, problems = _load_file(path, defaults, config, environ)
        if rule is None or doc is None:
            result.problems.extend(problems)
            result.failed.add(path)
            continue
        if check_queries:
            bad = query_problems(doc)
            if bad:
                result.problems.extend(bad)
                result.failed.add(path)
                continue
        other = (taken or {}).get(rule.name)
        if other is not None and os.path.abspath(other) != os.path.abspath(path):
            result.problems.append(Problem.at(doc, ("name",), f"rule name '{rule.name}' is already used by "
                                                              f"{display_path(other)} in the rules directory; the "
                                                              "daemon runs only one of them: give this rule another name"))
            result.failed.add(path)
            continue
        if rule.name in by_name:
            duplicates.setdefault(rule.name, [by_name[rule.name]]).append((rule, doc))
            continue
        by_name[rule.name] = (rule, doc)
    for name, claims in duplicates.items():
        claims.sort(key=lambda claim: (_mtime(claim[0].path), claim[0].path))
        by_name[name] = claims[0]
        for _, doc in claims[1:]:
            result.problems.append(Problem.at(doc, ("name",), f"rule name '{name}' is already used by {claims[0][1].filename}"
                                                              ", which keeps running; give this rule another name"))
            result.failed.add(doc.filename)
    for name in _check_dependencies(by_name, set(known), result):
        del by_name[name]
    result.rules = [rule for rule, _ in by_name.values()]
    result.problems.sort()
    return result


def _check_dependencies(by_name: Mapping[str, tuple[Rule, yamlfile.Document]], known: set[str],
                        result: LoadResult) -> set[str]:
    """``depends_on`` names rules that exist and makes no cycle (``healed_when.fresh`` counted); returns the bad rules.

    Each problem is added to ``result`` at the entry that causes it, naming
    the rules involved.
    """
    from watchdog.dependencies import Ref, cycles, implied

    names = set(by_name) | known
    bad: set[str] = set()
    for name, (rule, doc) in by_name.items():
        for index, text in enumerate(rule.depends_on):
            upstream = Ref.parse(text).rule
            if upstream == name:
                problem = f"rule {name} cannot depend on itself"
            elif upstream not in names:
                close = difflib.get_close_matches(upstream, sorted(names), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problem = f"rule {name} depends on {upstream}, but no rule is named '{upstream}'{hint}"
            else:
                continue
            result.problems.append(Problem.at(doc, ("depends_on", index), problem))
            bad.add(name)
    graph: dict[str, list[str]] = {name: [Ref.parse(t).rule for t in rule.depends_on]
                                   for name, (rule, _) in by_name.items()}
    for dependent, refs in implied((r.name, r.type, r.options) for r, _ in by_name.values()).items():
        if dependent in graph:
            graph[dependent] += [ref.rule for ref in refs]
    for loop in cycles(graph):
        if len(loop) == 1:
            continue  # (a rule naming itself is reported above)
        shown = " -> ".join(loop + loop[:1])
        for name in loop:
            rule, doc = by_name[name]
            after = loop[(loop.index(name) + 1) % len(loop)]
            entry = next((i for i, t in enumerate(rule.depends_on) if Ref.parse(t).rule == after), None)
            where: tuple[str | int, ...] = ("depends_on", entry) if entry is not None else ("type",)
            how = "" if entry is not None else f" ({after}'s healed_when.fresh names {name}, which depends on it)"
            result.problems.append(Problem.at(doc, where, f"dependency cycle: {shown}{how}; remove one of these "
                                                          "depends_on entries"))
            bad.add(name)
    for name in bad:
        result.failed.add(by_name[name][0].path)
    return bad


def rule_warnings(rules: Iterable[Rule], config: Config | None) -> list[str]:
    """What ``validate`` warns about in valid rules: settings that will likely fail at run time, though valid.

    A ``dms_task`` rule with ``lag:`` on a source whose DMS ``endpoint_url`` is overridden but whose
    ``cloudwatch_endpoint_url`` is not: CloudWatch is then asked at AWS's own address for the region.
    """
    if config is None:
        return []
    warnings: list[str] = []
    for rule in rules:
        source = config.sources.get(rule.source or "")
        if rule.type == "dms_task" and getattr(rule.options, "lag", None) is not None \
                and getattr(source, "endpoint_url", None) and not getattr(source, "cloudwatch_endpoint_url", None):
            warnings.append(f"{display_path(rule.path)}: lag: source '{rule.source}' overrides the DMS endpoint_url but "
                            "sets no cloudwatch_endpoint_url, so CDC latency is read from AWS's own CloudWatch for "
                            "the region, which a private or local DMS usually cannot answer; set "
                            f"sources.{rule.source}.cloudwatch_endpoint_url")
    return warnings

