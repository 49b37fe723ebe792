"""Grouping: notifications bound for one destination within the group wait become one digest message.

A digest lists its notifications most severe first, gathered under their
rule with counts per rule and each notification's own severity; a rule with
many groups lists the first ``MAX_LINES_PER_RULE`` and counts the rest
("and N more"). Pure: stored payloads in, one payload out; the notifier
renders it (and escapes the data in it) for its sink.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

MAX_ENTRIES = 100  # notifications in one digest message; more make further messages
MAX_LINES_PER_RULE = 10  # groups listed under one rule; the others are counted
MAX_SUMMARY = 200  # characters of a notification's text in its digest line
MAX_WITH_SAMPLES = 10  # a digest of at most this many notifications shows each one's example events

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
SETTLED = frozenset({"resolved", "recovered", "explained_resolved"})  # notifications that say a problem is over
KIND_LABEL = {
    "firing": "FIRING", "repeat": "STILL FIRING", "severity": "SEVERITY CHANGED", "resolved": "RESOLVED",
    "error": "RULE ERROR", "recovered": "RULE RECOVERED", "action": "REMEDIATION STEP",
    "explained": "ALSO AFFECTED", "explained_resolved": "BACK TO NORMAL", "link": "UPSTREAM FIRING",
}


def shown_severity(payload: Mapping[str, Any]) -> str:
    """What a notification's header says: OK for an end, DRY RUN for a rehearsal, else its severity."""
    if str(payload.get("kind")) in SETTLED:
        return "OK"
    if payload.get("dry_run"):
        return "DRY RUN"
    return str(payload.get("severity") or "warning").upper()


def _order(payload: Mapping[str, Any]) -> tuple[int, int, str, str]:
    settled = 1 if str(payload.get("kind")) in SETTLED else 0
    return settled, SEVERITY_RANK.get(str(payload.get("severity")), 1), str(payload.get("rule")), str(payload.get("group"))


def pages(payload: Mapping[str, Any]) -> bool:
    """Whether a notification may page (mention): a critical problem announced, never a dry run or an end."""
    return (payload.get("severity") == "critical" and str(payload.get("kind")) in ("firing", "severity")
            and not payload.get("dry_run"))


def is_step(payload: Mapping[str, Any]) -> bool:
    """Whether a notification is a remediation step (never an alert: a digest counts steps apart)."""
    return bool(payload.get("step")) or str(payload.get("kind")) in ("action", "approval")


def _entry(payload: Mapping[str, Any]) -> dict[str, Any]:
    details = payload.get("details") or {}
    summary = str(payload.get("body") or payload.get("summary") or "")
    groups = payload.get("groups")
    if payload.get("explained_by") and isinstance(groups, list):  # explained alerts: which ones, by what
        names = ", ".join(str(g.get("group") or "") for g in groups if isinstance(g, Mapping))
        summary = f"{names} ({'after' if payload.get('kind') == 'explained_resolved' else 'explained by'} " \
                  f"{(payload.get('explained_by') or {}).get('alert')})"
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1] + "…"
    # Acknowledge and Silence act on one firing alert (its episode); remediation steps and ends offer none.
    actionable = (str(payload.get("kind")) == "firing" and not is_step(payload) and payload.get("actions", True)
                  and not payload.get("groups") and not payload.get("dry_run"))
    return {
        "episode": str(payload.get("episode") or "") if actionable else "",
        "samples": list(details.get("samples") or []),
        "group": str(payload.get("group") or ""), "kind": str(payload.get("kind")),
        "label": KIND_LABEL.get(str(payload.get("kind")), str(payload.get("kind")).upper()),
        "severity": str(payload.get("severity") or "warning"), "shown": shown_severity(payload),
        "summary": summary, "since": payload.get("since"), "dashboard_url": details.get("dashboard_url"),
    }


def digest(payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One payload announcing ``payloads`` (at least two), most severe first, grouped by rule."""
    ordered = sorted(payloads, key=_order)
    rules: dict[str, dict[str, Any]] = {}
    for payload in ordered:
        name = str(payload.get("rule"))
        block = rules.setdefault(name, {"rule": name, "count": 0, "severities": Counter(), "entries": [], "more": 0,
                                        "runbook_url": payload.get("runbook_url")})
        block["count"] += 1
        block["severities"]["step" if is_step(payload) else shown_severity(payload).lower()] += 1
        if len(block["entries"]) < MAX_LINES_PER_RULE:
            block["entries"].append(_entry(payload))
        else:
            block["more"] += 1
    steps = [p for p in ordered if is_step(p)]
    problems = [p for p in ordered if str(p.get("kind")) not in SETTLED and not is_step(p)]
    real = [p for p in problems if not p.get("dry_run")]
    if real:
        severity = min((str(p.get("severity")) for p in real), key=lambda s: SEVERITY_RANK.get(s, 1))
        shown = severity.upper()
    elif steps and not problems:
        severity = min((str(p.get("severity")) for p in steps), key=lambda s: SEVERITY_RANK.get(s, 1))
        shown = "REMEDIATION"
    else:
        severity = "info"
        shown = "DRY RUN" if problems else "OK"
    counts = Counter(shown_severity(p).lower() for p in problems)
    parts = []
    if problems:
        breakdown = ", ".join(f"{counts[k]} {k}" for k in ("critical", "warning", "info", "dry run") if counts[k])
        parts.append(f"{len(problems)} alert{'s' if len(problems) > 1 else ''} firing: {breakdown}")
    if steps:
        parts.append(f"{len(steps)} remediation step{'s' if len(steps) > 1 else ''}")
    if len(ordered) > len(problems) + len(steps):
        parts.append(f"{len(ordered) - len(problems) - len(steps)} resolved")
    title = "; ".join(parts)
    names = [f"{name} ({block['count']})" if block["count"] > 1 else name for name, block in rules.items()]
    mention = next((p.get("mention") for p in ordered if pages(p) and p.get("mention")), None)
    return {
        "kind": "digest", "rule": next(iter(rules)) if len(rules) == 1 else "", "group": "", "severity": severity,
        "shown": shown, "title": title, "text": f"[{shown}] {title}: " + ", ".join(names),
        "rules": [{**block, "severities": dict(block["severities"])} for block in rules.values()],
        "count": len(ordered), "pages": any(pages(p) for p in ordered), "mention": mention,
        "samples": len(ordered) <= MAX_WITH_SAMPLES,
        "channel": ordered[0].get("channel"),
    }
