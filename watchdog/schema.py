"""Validation of YAML documents against ``schemas/*.schema.json``.

The schema files are the one source of truth for keys; this module turns
jsonschema's errors into Problems with line, column, key path and, for a
misspelled key, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from watchdog import durations, listen, schedule
from watchdog.durations import DURATION_PATTERN
from watchdog.problems import Problem, format_path
from watchdog.yamlfile import Document, Path

SCHEMA_FILES = ("rule.schema.json", "config.schema.json")
_TYPE_NAMES = {
    "string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "object": "a mapping", "array": "a list", "null": "null",
}


# Keys people write from habit (ElastAlert, other tools, plain English) and the key that does that job here;
# offered when difflib finds nothing close, and only when that key is valid where the unknown one stands.
KEY_ALIASES = {
    "critical_after": "error_after", "crit_after": "error_after", "fail_after": "error_after",
    "warning_after": "warn_after", "stale_after": "warn_after",
    "timeframe": "window", "time_window": "window", "period": "window",
    "realert": "repeat_every", "renotify": "repeat_every", "repeat": "repeat_every",
    "query_key": "group_by", "groupby": "group_by", "group": "group_by",
    "num_events": "threshold", "limit": "threshold", "min_count": "threshold", "max_count": "threshold",
    "interval": "schedule", "every": "schedule", "cron": "schedule", "run_every": "schedule",
    "alert": "notify", "alerts": "notify", "slack": "notify", "channel": "notify",
    "level": "severity", "priority": "severity",
    "tables": "checks", "table": "checks",
    "runbook": "runbook_url", "link": "runbook_url",
    "disabled": "enabled", "is_enabled": "enabled",
}


def nearest_key(key: str, allowed: Iterable[str]) -> str | None:
    """The valid key ``key`` was most likely meant to be, or None."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return close[0]
    alias = KEY_ALIASES.get(key.lower())
    return alias if alias in allowed else None


def flow(value: Any) -> str:
    """``value`` as a user would write it inline in YAML: ``{above: 50}``."""
    return str(yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False)).strip().removesuffix("...").strip()


def _python_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _checked(check: Any) -> Any:
    """A jsonschema keyword that runs ``check(value, instance)`` on strings and reports the message it returns."""
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if isinstance(instance, str) and value is not False:
            problem = check(value, instance)
            if problem is not None:
                yield ValidationError(problem)
    return keyword


def _listen_problem(_: Any, text: str) -> str | None:
    try:
        listen.parse_listen(text)
    except ValueError as exc:
        return str(exc)
    return None


# Checks JSON Schema cannot express, named in the schema files so the files still say
# everything that is checked: editors ignore these keywords, watchdog runs the code.
KEYWORDS = {
    "x-min-duration": _checked(lambda minimum, text: durations.bounds_problem(text, minimum=minimum)),
    "x-max-duration": _checked(lambda maximum, text: durations.bounds_problem(text, maximum=maximum)),
    "x-cron": _checked(lambda _, text: schedule.cron_problem(text)),
    "x-timezone": _checked(lambda _, text: schedule.timezone_problem(text)),
    "x-listen": _checked(_listen_problem),
}
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, KEYWORDS)  # type: ignore[no-untyped-call]


def _shown(value: Any) -> str:
    """``repr(value)``, cut short: a message quotes a value, it does not repeat a megabyte of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema file ``name`` (e.g. ``rule.schema.json``)."""
    text = resources.files("watchdog").joinpath("schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _registry() -> Registry:
    # The schema files have no remote $id: a reference such as "rule.schema.json#/$defs/schedule" is relative to
    # the referring file, so editors and plain validators resolve it next to it, offline. Here, by file name.
    resources_ = [(name, Resource.from_contents(load_schema(name))) for name in SCHEMA_FILES]
    registry: Registry = Registry().with_resources(resources_)
    return registry


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A compiled validator for the schema file ``name``; built once per process."""
    compiled: jsonschema.protocols.Validator = _Validator(load_schema(name), registry=_registry())
    return compiled


@functools.cache
def _flat_validator(name: str, branch: int) -> jsonschema.protocols.Validator:
    """A validator for the schema ``name`` with if/then branch ``branch`` merged in.

    The schema file keeps type-specific keys in ``allOf`` if/then branches
    (closed by ``unevaluatedProperties``), which editors understand but which
    is slow to validate. For an instance whose branch is known, the merged
    form (``additionalProperties: false``) gives the same verdict about five
    times faster; it is derived here, never written down twice.
    """
    schema = load_schema(name)
    then = schema["allOf"][branch]["then"]
    if "$ref" in then:
        then = schema["$defs"][then["$ref"].rsplit("/", 1)[-1]]
    flat = {k: v for k, v in schema.items() if k not in ("allOf", "unevaluatedProperties")}
    flat["properties"] = {**schema["properties"], **then.get("properties", {})}
    flat["required"] = sorted(set(schema.get("required", [])) | set(then.get("required", [])))
    flat["additionalProperties"] = False
    flat["x-other-keys"] = sorted(
        {k for i, sub in enumerate(schema["allOf"]) if i != branch for k in _then(schema, sub).get("properties", {})}
        - set(flat["properties"]))
    compiled: jsonschema.protocols.Validator = _Validator(flat, registry=_registry())
    return compiled


def _then(schema: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    then: dict[str, Any] = sub.get("then", {})
    if "$ref" in then:
        then = schema["$defs"][then["$ref"].rsplit("/", 1)[-1]]
    return then


def _branch_for(name: str, instance: Any) -> int | None:
    """The index of the top-level if/then branch that applies to ``instance``, when the schema has such branches."""
    schema = load_schema(name)
    if "unevaluatedProperties" not in schema or not isinstance(instance, dict):
        return None
    v = validator(name)
    for index, sub in enumerate(schema.get("allOf", [])):
        if "if" in sub and "then" in sub and v.evolve(schema=sub["if"]).is_valid(instance):
            return index
    return None


class _Explainer:
    def __init__(self, doc: Document, v: jsonschema.protocols.Validator, schema_name: str):
        self.doc = doc
        self.v = v
        self.schema_name = schema_name

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, dict) and "$ref" in schema:
            return _registry().resolver(base_uri=self.schema_name).lookup(schema["$ref"]).contents
        return schema

    def _branch_properties(self, schema: Mapping[str, Any], instance: Any) -> tuple[set[str], set[str]]:
        """Keys the if/then branches accept for ``instance``, and keys of the other branches."""
        matching: set[str] = set()
        others: set[str] = set()
        for sub in schema.get("allOf", []):
            if "if" not in sub or "then" not in sub:
                continue
            props = set(self._resolve(sub["then"]).get("properties", {}))
            if self.v.evolve(schema=sub["if"]).is_valid(instance):
                matching |= props
            else:
                others |= props
        return matching, others - matching

    def unknown_keys(self, error: ValidationError) -> Iterator[Problem]:
        schema = error.schema if isinstance(error.schema, dict) else {}
        instance = error.instance if isinstance(error.instance, dict) else {}
        allowed = set(schema.get("properties", {}))
        others: set[str] = set()
        if error.validator == "unevaluatedProperties":
            matching, others = self._branch_properties(schema, instance)
            allowed |= matching
        elif "x-other-keys" in schema and not error.absolute_path:
            others = set(schema["x-other-keys"])
        path = tuple(error.absolute_path)
        kind = instance.get("type") if isinstance(instance.get("type"), str) else None
        for key in instance:
            if key in allowed:
                continue
            if key in others and kind:
                message = f"key '{key}' is not used by type '{kind}'"
            else:
                near = nearest_key(str(key), allowed)
                hint = f" (did you mean '{near}'?)" if near else ""
                message = f"unknown key '{key}'{hint}"
            yield Problem.at(self.doc, path + (key,), message, key=True)

    def explain(self, error: ValidationError) -> Iterator[Problem]:
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            yield from self.unknown_keys(error)
            return
        path: Path = tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        value = error.instance
        if error.validator == "required":
            present = value if isinstance(value, dict) else {}
            for key in list(error.validator_value):  # type: ignore[arg-type]
                if key not in present:
                    yield Problem.at(self.doc, path, f"missing required key '{key}'")
            return
        if error.validator == "oneOf" and isinstance(value, dict) and all(
                isinstance(b, dict) and set(b) == {"required"} for b in schema.get("oneOf", [])):
            # A choice of keys ({above} or {below}): say which mistake it is, both given or none.
            choices = [str(b["required"][0]) for b in schema["oneOf"]]
            given = [c for c in choices if c in value]
            if len(given) > 1:
                message = schema.get("x-error") or f"give only one of {', '.join(repr(c) for c in given)}"
            else:
                message = f"give {' or '.join(repr(c) for c in choices)}" + _examples(schema)
            yield Problem.at(self.doc, path, message)
            return
        if "x-error" in schema and error.validator not in ("type", *KEYWORDS):
            yield Problem.at(self.doc, path, schema["x-error"].replace("{value}", _shown(value)))
            return
        if error.validator == "type":
            expected: Any = error.validator_value
            names = [expected] if isinstance(expected, str) else list(expected)
            wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
            if schema.get("pattern") == DURATION_PATTERN and isinstance(value, (int, float)) and not isinstance(value, bool):
                # A bare number for a timeout is seconds far more often than minutes.
                seconds = bool(path) and "timeout" in str(path[-1])
                unit = f"{value}{'s' if seconds else 'm'}" if isinstance(value, int) and value > 0 else "30s, 5m, 2h"
                message = f"{_shown(value)} has no unit: add a unit: {unit} (durations are like 30s, 5m, 2h, 1d, 1h30m)"
            else:
                message = f"must be {wanted}, not {_python_type_name(value)} ({_shown(value)})" + _examples(schema)
        elif error.validator == "enum" and path == ("type",) and "type" in load_schema(self.schema_name).get("required", []):
            options = [str(o) for o in list(error.validator_value)]  # type: ignore[arg-type]
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = (f"unknown type {_shown(value)}{hint}: the types are {', '.join(options)}" if isinstance(value, str)
                       else f"{_shown(value)} is not one of the types: {', '.join(options)}")
        elif error.validator == "enum":
            options = [str(o) for o in list(error.validator_value)]  # type: ignore[arg-type]
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"{_shown(value)} is not one of: {', '.join(options)}{hint}"
        elif error.validator == "const":
            message = f"must be {error.validator_value!r}"
        elif error.validator == "pattern":
            message = f"{_shown(value)} does not match {error.validator_value}"
        else:
            message = error.message
        yield Problem.at(self.doc, path, message)


def _examples(schema: Mapping[str, Any]) -> str:
    """``: e.g. {above: 50} or {below: 1}`` from the schema's first examples, or nothing."""
    examples = [flow(e) for e in list(schema.get("examples", []))[:2]]
    return f": e.g. {' or '.join(examples)}" if examples else ""


def _root_causes(errors: list[ValidationError]) -> list[ValidationError]:
    """One error per mistake: the ones that explain the rest.

    A value of the wrong type also fails every other keyword at its path
    (``threshold: "fifty"`` is neither ``{above}`` nor ``{below}``): only the
    type error stays. An unknown ``type`` makes every key look out of place:
    only the type error stays, not one line per key.
    """
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in typed]
    if any(tuple(e.absolute_path) == ("type",) and e.validator in ("enum", "const") for e in errors):
        errors = [e for e in errors if not (not e.absolute_path and e.validator in (
            "additionalProperties", "unevaluatedProperties", "required", "oneOf", "anyOf", "allOf"))]
    return errors


def problems(doc: Document, schema_name: str, skip: Iterable[str] = ()) -> list[Problem]:
    """Every schema problem in ``doc``, sorted by position.

    ``skip`` names key paths (as Problem.path gives them) already reported,
    e.g. a value whose ``${VARIABLE}`` is not set: their raw text is not
    checked against the schema too.
    """
    instance: Any = doc.data
    branch = _branch_for(schema_name, instance)
    v = validator(schema_name) if branch is None else _flat_validator(schema_name, branch)
    explainer = _Explainer(doc, v, schema_name)
    skipped = set(skip)
    errors = [e for e in _root_causes(list(v.iter_errors(instance)))
              if not skipped or format_path(tuple(e.absolute_path)) not in skipped]
    found: list[Problem] = []
    for error in errors:
        found.extend(explainer.explain(error))
    secrets = _secret_values(instance)
    if secrets:
        found = [_hide(p, secrets) for p in found]
    return _tidy(found)


# Keys whose values are secrets (config): a message about a bad value never shows it.
SECRET_KEYS = frozenset({"token", "app_token", "webhook_url", "password", "api_key", "dsn", "heartbeat_url", "basic_auth"})
HIDDEN = "(value hidden: it is a secret)"


def _secret_values(data: Any) -> list[Any]:
    """Every value under a secret key anywhere in ``data`` (and, for a mapping or list, the scalars in it)."""
    found: list[Any] = []

    def scalars(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                scalars(item)
        elif isinstance(value, list):
            for item in value:
                scalars(item)
        elif value is not None and not isinstance(value, bool):
            found.append(value)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in SECRET_KEYS:
                    scalars(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found


def _hide(problem: Problem, secrets: list[Any]) -> Problem:
    """``problem`` with every secret value (as repr, and as text when not tiny) taken out of its message."""
    message = problem.message
    for value in sorted(secrets, key=lambda v: len(str(v)), reverse=True):
        message = message.replace(repr(value), HIDDEN)
        if len(str(value)) >= 3:
            message = message.replace(str(value), HIDDEN)
    return problem if message == problem.message else dataclasses.replace(problem, message=message)


def _tidy(found: Iterable[Problem]) -> list[Problem]:
    """Drop duplicates and the generic 'give one of' noise next to an unknown key."""
    unique = sorted(set(found), key=lambda p: (p.line, p.column, p.path, p.message))
    unknown_parents = {p.path.rsplit(".", 1)[0] if "." in p.path else "" for p in unique if p.message.startswith("unknown key")}
    return [p for p in unique if not (p.message.startswith("give ") and p.path in unknown_parents)]
