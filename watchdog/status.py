"""``watchdog status``, ``silence`` and ``unsilence``: reading and editing the state store."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from watchdog.config import Config
from watchdog.dependencies import Explanation
from watchdog.durations import format_duration
from watchdog.engine import SELF_RULE
from watchdog.escape import terminal
from watchdog.loader import load_rules
from watchdog.notify.render import format_value
from watchdog.silences import parse_silence_duration, parse_target
from watchdog.state import StateStore
from watchdog.state_actions import Ack
from watchdog.state_db import StoreError
from watchdog.storage import open_store
from watchdog.times import to_text


def _now() -> datetime:
    return datetime.now(UTC)


def status_document(config: Config, store: StateStore, now: datetime) -> dict[str, Any]:
    """The ``status --format json`` document (see DESIGN.md)."""
    loaded = load_rules([config.rules_dir], config)
    records = store.rule_records()
    groups = store.groups()
    silences = store.silences(now)
    explanations = store.explanations()
    rules = []
    names = [r.name for r in loaded.rules] + sorted(set(records) - {r.name for r in loaded.rules})
    types = {r.name: r.type for r in loaded.rules}
    sources = {r.name: r.source for r in loaded.rules}
    for name in names:
        record = records.get(name)
        acks = store.acks(name)
        entry: dict[str, Any] = {
            "name": name, "type": types.get(name), "last_run": to_text(record.last_run) if record else None,
            "next_run": to_text(record.next_run) if record else None,
            "last_error": record.health.last_error if record else None,
            "consecutive_errors": record.health.errors if record else 0,
            "groups": [{"group": g, "state": s.state.value, "severity": s.severity.value, "since": to_text(s.since),
                        "value": s.value, "summary": s.summary,
                        # keep_firing_for: firing, but its condition has been false since then
                        "clear_since": to_text(s.clear_since),
                        "silenced": next((str(x.id) for x in silences if x.covers(name, g, now, s.episode)), None),
                        "acknowledged": _ack(acks.get(g), s.episode),
                        "explained_by": _explained(explanations.get(name, {}).get(g))}
                       for g, s in sorted(groups.get(name, {}).items())],
        }
        source = sources.get(name)
        if record and record.health.errors and source and groups.get(SELF_RULE, {}).get(f"source {source}"):
            # (its error joined the alert of its source, which does not answer: see README, depends_on)
            entry["error_explained_by"] = f"{SELF_RULE} [source {source}]"
        if record and record.facts:
            entry["facts"] = record.facts
        if name not in types:
            entry["removed"] = True
        rules.append(entry)
    doc: dict[str, Any] = {
        "state_path": config.state.where,
        "rules": rules,
        "silences": [{"id": str(s.id), "rule": s.rule, "group": s.group, "until": to_text(s.until), "reason": s.reason,
                      "until_resolved": s.episode is not None, "by": s.created_by or None}
                     for s in silences],
        "notifiers": store.notifier_status(),
        "failed_notifications": store.failed_notifications(),
        "outbox_pending": store.outbox_depth(),
        "invalid_files": [p.to_dict() for p in loaded.problems],
    }
    if config.state.shared:
        doc["ha"] = ha_document(store)
    return doc


def ha_document(store: StateStore) -> dict[str, Any]:
    """Who leads a shared state (None: nobody holds an unexpired lease), and every instance with its last renewal."""
    lease = store.lease()
    leader = lease.holder if lease is not None and lease.remaining > 0 else None
    return {"leader": leader, "epoch": lease.epoch if lease is not None else 0,
            "lease_remaining_seconds": round(lease.remaining, 3) if lease is not None else None,
            "instances": [{"instance": i.instance, "leader": i.instance == leader, "started": to_text(i.started),
                           "last_renewal": to_text(i.last_seen), "seconds_ago": round(i.seen_ago, 3)}
                          for i in store.instances()]}


def _explained(explanation: Explanation | None) -> dict[str, Any] | None:
    """What explains a dependent alert (``depends_on``): the upstream alert, and how things stand."""
    if explanation is None:
        return None
    return {"alert": explanation.name, "rule": explanation.rule, "group": explanation.group,
            "phase": explanation.phase.value, "since": to_text(explanation.since),
            "upstream_resolved_at": to_text(explanation.resolved_at)}


EXPLAINED_TEXT = {"explained": "explained by {alert}", "settling": "explained by {alert}, which recovered (settling)",
                  "linked": "fired before {alert}"}


def _ack(ack: Ack | None, episode: str) -> dict[str, Any] | None:
    """Who acknowledged the group's current episode in Slack, and when."""
    if ack is None or ack.episode != episode:
        return None
    return {"by": ack.by, "at": to_text(ack.at), "severity": ack.severity.value}


def _age(moment: str | None, now: datetime) -> str:
    if not moment:
        return "never"
    delta = now - datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return f"{format_duration(delta)} ago" if delta.total_seconds() >= 0 else f"in {format_duration(-delta)}"


def _print(line: str) -> None:
    """One line of text output; data in it cannot add lines or terminal control sequences."""
    print(terminal(line))


def _print_text(doc: dict[str, Any], now: datetime, note: str) -> None:
    _print(f"state: {doc['state_path']}{note}")
    if "ha" in doc:
        ha = doc["ha"]
        _print(f"leader: {ha['leader'] or 'none (no instance holds the lease)'} (epoch {ha['epoch']})")
        for i in ha["instances"]:
            _print(f"  instance {i['instance']}: {'leader' if i['leader'] else 'standby'}, last renewal "
                   f"{i['seconds_ago']:.0f}s ago")
    for rule in doc["rules"]:
        if rule["name"] == SELF_RULE:  # not a rule file: watchdog's own alerts (invalid files, silent sources, storage)
            line = f"{SELF_RULE}: watchdog's own alerts"
        else:
            next_run = _age(rule["next_run"], now) if rule["next_run"] else "when the daemon runs"
            line = (f"{rule['name']} ({rule['type'] or 'removed'}): last run {_age(rule['last_run'], now)}, "
                    f"next {next_run}")
        _print(line)
        if rule["last_error"]:
            joined = f" [explained by {rule['error_explained_by']}]" if rule.get("error_explained_by") else ""
            _print(f"  error ({rule['consecutive_errors']}x){joined}: {rule['last_error']}")
        for g in rule["groups"]:
            label = g["group"] or "(all)"
            muted = f" [silenced: {g['silenced']}]" if g["silenced"] else ""
            if g.get("acknowledged"):
                muted += f" [acknowledged by {g['acknowledged']['by']}]"
            clearing = f" (condition false since {_age(g['clear_since'], now)}, keep_firing_for)" if g.get("clear_since") else ""
            if g.get("explained_by"):
                muted += f" [{EXPLAINED_TEXT[g['explained_by']['phase']].format(alert=g['explained_by']['alert'])}]"
            _print(f"  {label}: {g['state']} {g['severity']} since {_age(g['since'], now)}{clearing}{muted}: {g['summary']}")
        for fact in rule.get("facts", {}).get("values", []):  # sql_value: every value read, ok ones included
            value = "no value" if fact.get("value") is None else format_value(fact["value"])
            reason = f" ({fact['status']}: {fact['reason']})" if fact.get("reason") else ""
            reason += f" ({fact['learned']})" if fact.get("learned") else ""
            _print(f"  value {fact.get('group') or fact.get('check')}: {value}{reason}")
        for check in rule.get("facts", {}).get("checks", []):
            loaded = check.get("last_loaded") or "never"
            status = check.get("status") or ("fresh" if check.get("age") else "never loaded")
            age = f", {check['age']} old" if check.get("age") else ""
            error = f": {check['error']}" if check.get("error") else ""
            learned = f" ({check['learned']})" if check.get("learned") else ""
            _print(f"  check {check['name']}: {status}{learned}{error}; last load {loaded}{age}")
    if doc["silences"]:
        _print("silences (remove one with `watchdog unsilence ID`):")
        for s in doc["silences"]:
            target = s["rule"] + (f":{s['group']}" if s["group"] is not None else "")
            until = "this episode resolves" if s["until_resolved"] else s["until"]
            _print(f"  [{s['id']}] {target} until {until} {s['reason']}")
    for name, st in doc["notifiers"].items():
        if st.get("refused"):
            _print(f"notifier {name}: REFUSES watchdog's credentials since {st['at']}: {st['error']}; every "
                   "notification is kept and goes out once the credentials are fixed (see the config) and accepted")
        elif not st["ok"]:
            _print(f"notifier {name}: failing since {st['at']}: {st['error']}")
    if doc["failed_notifications"]:
        _print("failed notifications (not sent, never retried; hide them with `watchdog status --ack-failed`):")
        for f in doc["failed_notifications"]:
            target = f["rule"] + (f" [{f['grp']}]" if f["grp"] else "")
            to = f" to {f['receiver']}" if f.get("receiver") else ""
            _print(f"  [{f['id']}] {f['kind']}{to} {target} at {f['created']} after {f['attempts']} attempt(s): {f['last_error']}")
    if doc["outbox_pending"]:
        _print(f"outbox: {doc['outbox_pending']} notification(s) waiting")
    for problem in doc["invalid_files"]:
        where = f"{problem['path']}: " if problem["path"] else ""
        _print(f"invalid: {problem['file']}:{problem['line']}: {where}{problem['message']}")


def state_access_problem(path: str) -> str | None:
    """Why this user cannot use the state file at ``path``, or None when it can (or may create it).

    The service's state directory is 0750 and its files 0600: another user
    cannot even see whether the file exists, which must not read as "the
    daemon never ran". SQLite needs write access to read a WAL database.
    """
    directory = os.path.dirname(os.path.abspath(path))
    hint = "run it as the service's user, e.g. sudo -u watchdog watchdog ..."
    if os.path.isdir(directory) and not os.access(directory, os.R_OK | os.X_OK):
        return f"cannot look into {directory} (permission denied): {hint}"
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot read and write {path} (permission denied): {hint}"
    return None


def _open_existing(config: Config) -> StateStore | None:
    """The state store when its file exists; None otherwise (a command that only reads never creates one).
    A PostgreSQL state is opened (created if need be); raises StoreError when it cannot be."""
    if config.state.type != "sqlite":
        return open_store(config.state)
    return StateStore(config.state_path) if os.path.exists(config.state_path) else None


def _access_problem(config: Config) -> str | None:
    return state_access_problem(config.state_path) if config.state.type == "sqlite" else None


def show_status(config: Config, fmt: str = "text", ack_failed: bool = False) -> int:
    """Print every rule's state from the state file at ``config.state_path``; returns the exit code (0, or 2 when
    the state file cannot be read).

    ``ack_failed`` first acknowledges the notifications that failed for good, so they are no longer listed.
    """
    problem = _access_problem(config)
    if problem:
        print(f"watchdog status: {problem}", file=sys.stderr)
        return 2
    try:
        store = _open_existing(config)
    except StoreError as exc:
        print(f"watchdog status: cannot open the state database {config.state.where}: {exc}", file=sys.stderr)
        return 2
    if store is not None and ack_failed:
        print(f"acknowledged {store.acknowledge_failed()} failed notification(s)", file=sys.stderr)
    note = "" if store else " (no such file yet: the daemon has not run with this state_path)"
    # An empty in-memory store gives the same document (rules from their files, no state) without a file.
    reader = store or StateStore(":memory:")
    try:
        now = _now()
        doc = status_document(config, reader, now)
    finally:
        reader.close()
    if fmt == "json":
        doc["state_exists"] = store is not None
        print(json.dumps(doc, indent=2, default=str))
    else:
        _print_text(doc, now, note)
    return 0


def reported_groups(facts: Mapping[str, Any]) -> set[str]:
    """The groups a rule's last evaluation reported, ok ones included (the state keeps only the others)."""
    found: set[str] = set(facts.get("observed", ()))
    found |= {str(c["name"]) for c in facts.get("checks", ()) if isinstance(c, Mapping) and "name" in c}
    tasks = facts.get("tasks", {})
    found |= {str(t) for t in tasks} if isinstance(tasks, Mapping) else set()
    return found


def add_silence(config: Config, target_text: str, duration: str, reason: str) -> int:
    """Record a silence for ``RULE`` or ``RULE:GROUP`` in the state the daemon reads; returns the exit code.

    The rule must be one of the config's rules; a group the state does not
    know yet is accepted (it may appear later) with a note saying so.
    """
    try:
        target = parse_target(target_text)
        length = parse_silence_duration(duration)
    except ValueError as exc:
        print(f"watchdog silence: {exc}", file=sys.stderr)
        return 2
    loaded = load_rules([config.rules_dir], config)
    known = {r.name for r in loaded.rules}
    if target.rule not in known:
        hint = ", ".join(sorted(known)) or "none"
        print(f"watchdog silence: no rule '{target.rule}' in {config.rules_dir} (rules: {hint})", file=sys.stderr)
        return 1
    problem = _access_problem(config)
    if problem:
        print(f"watchdog silence: {problem}", file=sys.stderr)
        return 2
    existed = config.state.type != "sqlite" or os.path.exists(config.state_path)
    try:
        store = open_store(config.state)
    except StoreError as exc:
        print(f"watchdog silence: cannot open the state database {config.state.where}: {exc}", file=sys.stderr)
        return 2
    try:
        now = _now()
        groups = {g: s.state.value for g, s in store.groups(target.rule).get(target.rule, {}).items()}
        record = store.rule_record(target.rule)
        for group in reported_groups(record.facts if record else {}):
            groups.setdefault(group, "ok")
        silence_id = store.add_silence(target.rule, target.group, now + length, reason, now)
    finally:
        store.close()
    print(f"silence {silence_id}: {target} for {format_duration(length)} (until {to_text(now + length)})"
          + (f": {reason}" if reason else ""))
    print(f"state: {config.state.where}" + ("" if existed else " (created: the daemon has not run with this state_path yet)"))
    covered = sorted(g for g in groups if target.group in (None, g))
    for group in covered:
        print(f"  silenced {target.rule}:{group or '(all)'} now {groups[group]}")
    if target.group is not None and target.group not in groups:
        known_groups = ", ".join(sorted(g or "(all)" for g in groups)) or "none yet"
        print(f"note: rule '{target.rule}' has no group '{target.group}' in the state (groups now: {known_groups}); "
              "the silence applies if it appears", file=sys.stderr)
    elif not covered:
        print(f"  {target.rule} has no groups in the state yet; the silence applies to every group it reports")
    return 0


def remove_silence(config: Config, silence_id: str) -> int:
    """Remove the silence with ``silence_id`` (as ``watchdog status`` lists it); returns 0, or 1 when there is none."""
    problem = _access_problem(config)
    if problem:
        print(f"watchdog unsilence: {problem}", file=sys.stderr)
        return 2
    if config.state.type == "sqlite" and not os.path.exists(config.state_path):
        print(f"watchdog unsilence: no state file at {config.state_path}, so no silence {silence_id}", file=sys.stderr)
        return 1
    try:
        store = open_store(config.state)
    except StoreError as exc:
        print(f"watchdog unsilence: cannot open the state database {config.state.where}: {exc}", file=sys.stderr)
        return 2
    try:
        removed = silence_id.isdigit() and len(silence_id) < 19 and store.remove_silence(int(silence_id))
    finally:
        store.close()
    if not removed:
        what = f"no silence with ID {silence_id}" if silence_id.isdigit() else f"'{silence_id}' is not a silence ID (IDs are numbers)"
        print(f"watchdog unsilence: {what} in {config.state.where} "
              "(`watchdog status` lists the silences with their IDs)", file=sys.stderr)
        return 1
    print(f"silence {silence_id} removed (state: {config.state.where})")
    return 0
