"""``watchdog status``, ``silence`` and ``unsilence``: reading and editing the state store."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from watchdog.config import Config
from watchdog.durations import format_duration, parse_duration
from watchdog.loader import load_rules
from watchdog.state import StateStore
from watchdog.times import to_text


def _now() -> datetime:
    return datetime.now(UTC)


def status_document(config: Config, store: StateStore, now: datetime) -> dict[str, Any]:
    """The ``status --format json`` document (see DESIGN.md)."""
    loaded = load_rules([config.rules_dir], config)
    records = store.rule_records()
    groups = store.groups()
    rules = []
    names = [r.name for r in loaded.rules] + sorted(set(records) - {r.name for r in loaded.rules})
    types = {r.name: r.type for r in loaded.rules}
    for name in names:
        record = records.get(name)
        entry: dict[str, Any] = {
            "name": name, "type": types.get(name), "last_run": to_text(record.last_run) if record else None,
            "next_run": to_text(record.next_run) if record else None,
            "last_error": record.health.last_error if record else None,
            "consecutive_errors": record.health.errors if record else 0,
            "groups": [{"group": g, "state": s.state.value, "severity": s.severity.value, "since": to_text(s.since),
                        "value": s.value, "summary": s.summary}
                       for g, s in sorted(groups.get(name, {}).items())],
        }
        if record and record.facts:
            entry["facts"] = record.facts
        if name not in types:
            entry["removed"] = True
        rules.append(entry)
    return {
        "rules": rules,
        "silences": [{"id": str(s.id), "rule": s.rule, "group": s.group, "until": to_text(s.until), "reason": s.reason}
                     for s in store.silences(now)],
        "notifiers": store.notifier_status(),
        "outbox_pending": store.outbox_depth(),
        "invalid_files": [p.to_dict() for p in loaded.problems],
    }


def _age(moment: str | None, now: datetime) -> str:
    if not moment:
        return "never"
    delta = now - datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return f"{format_duration(delta)} ago" if delta.total_seconds() >= 0 else f"in {format_duration(-delta)}"


def _print_text(doc: dict[str, Any], now: datetime) -> None:
    for rule in doc["rules"]:
        line = f"{rule['name']} ({rule['type'] or 'removed'}): last run {_age(rule['last_run'], now)}, next {_age(rule['next_run'], now)}"
        print(line)
        if rule["last_error"]:
            print(f"  error ({rule['consecutive_errors']}x): {rule['last_error']}")
        for g in rule["groups"]:
            label = g["group"] or "(all)"
            print(f"  {label}: {g['state']} {g['severity']} since {_age(g['since'], now)}: {g['summary']}")
        for check in rule.get("facts", {}).get("checks", []):
            loaded = check.get("last_loaded") or "never"
            print(f"  check {check['name']}: last load {loaded} ({check.get('age') or 'never loaded'})")
    if doc["silences"]:
        print("silences:")
        for s in doc["silences"]:
            target = s["rule"] + (f":{s['group']}" if s["group"] is not None else "")
            print(f"  [{s['id']}] {target} until {s['until']} {s['reason']}")
    for name, st in doc["notifiers"].items():
        if not st["ok"]:
            print(f"notifier {name}: failing since {st['at']}: {st['error']}")
    if doc["outbox_pending"]:
        print(f"outbox: {doc['outbox_pending']} notification(s) waiting")
    for problem in doc["invalid_files"]:
        print(f"invalid: {problem['file']}:{problem['line']}: {problem['path']}: {problem['message']}")


def show_status(config: Config, fmt: str = "text") -> int:
    store = StateStore(config.state_path)
    try:
        now = _now()
        doc = status_document(config, store, now)
    finally:
        store.close()
    if fmt == "json":
        print(json.dumps(doc, indent=2, default=str))
    else:
        _print_text(doc, now)
    return 0


def add_silence(config: Config, target: str, duration: str, reason: str) -> int:
    rule, _, group = target.partition(":")
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        print(f"watchdog silence: {exc}", file=sys.stderr)
        return 2
    known = {r.name for r in load_rules([config.rules_dir], config).rules}
    if rule not in known:
        print(f"watchdog silence: unknown rule '{rule}'", file=sys.stderr)
        return 1
    store = StateStore(config.state_path)
    try:
        now = _now()
        silence_id = store.add_silence(rule, group if ":" in target else None, now + length, reason, now)
    finally:
        store.close()
    print(f"silence {silence_id}: {target} for {format_duration(length)} (until {to_text(now + length)})")
    return 0


def remove_silence(config: Config, silence_id: str) -> int:
    store = StateStore(config.state_path)
    try:
        removed = silence_id.isdigit() and store.remove_silence(int(silence_id))
    finally:
        store.close()
    if not removed:
        print(f"watchdog unsilence: no silence with id {silence_id}", file=sys.stderr)
        return 1
    print(f"silence {silence_id} removed")
    return 0
