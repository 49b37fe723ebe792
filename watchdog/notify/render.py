"""Turning a lifecycle notice into the payload stored in the outbox.

Rendering happens when the notification is recorded, so a restart can
deliver it without the rule (which may have changed or gone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from watchdog import templates
from watchdog.durations import format_age
from watchdog.escape import mrkdwn
from watchdog.lifecycle import Kind, Notice
from watchdog.rule import Rule, Severity
from watchdog.times import to_text

KIND_LABEL = {
    Kind.FIRING: "FIRING", Kind.REPEAT: "STILL FIRING", Kind.SEVERITY: "SEVERITY CHANGED", Kind.RESOLVED: "RESOLVED",
    Kind.ERROR: "RULE ERROR", Kind.RECOVERED: "RULE RECOVERED",
}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_template(template: str, fields: Mapping[str, Any], escape: Callable[[str], str] | None = None) -> str:
    """``template`` with ``{field}`` placeholders filled; unknown ones are left as written (see ``templates``).

    The template is the rule author's markup; each field value is data and,
    given ``escape`` (e.g. ``escape.mrkdwn``), passes through it, so no value
    can add markup to the result.
    """
    return templates.render(template, fields, lambda v: format_value(v) if isinstance(v, float) else str(v),
                            escape=escape)


STEP_LABEL = {"firing": "REMEDIATION", "action": "REMEDIATION STEP", "resolved": "REMEDIATED",
              "approval": "APPROVAL NEEDED"}


def render_step(rule: Rule, group: str, kind: str, text: str, severity: str, at: datetime,
                since: datetime | None, detail: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """The outbox payload for one remediation step (see ``ruletypes.base.Step``).

    A dry run's steps never page: their header says DRY RUN, not a severity.
    """
    where = f"{rule.name} [{group}]" if group else rule.name
    title = f"{STEP_LABEL.get(kind, kind.upper())}: {where}"
    if dry_run:
        title = f"DRY RUN {title}"
    shown = "OK" if kind == "resolved" else severity.upper()
    if kind == "resolved" and since is not None:
        text = f"{text} (resolved after {format_age(at - since)})"
    return {
        "rule": rule.name, "type": rule.type, "group": group, "kind": kind, "severity": severity, "title": title,
        "text": f"[{shown}] {title}: {text}", "body": text, "value": detail.get("status"), "summary": text,
        "body_mrkdwn": mrkdwn(text), "text_mrkdwn": mrkdwn(f"[{shown}] {title}: {text}"),
        "description": rule.description, "runbook_url": rule.runbook_url, "labels": dict(rule.labels),
        "at": to_text(at), "since": to_text(since), "details": dict(detail), "dry_run": dry_run,
        "channel": rule.notify.channel, "mention": rule.notify.mention, "step": True,
    }


ENDED = (Kind.RESOLVED, Kind.RECOVERED)


def render(rule: Rule, notice: Notice) -> dict[str, Any]:
    """The outbox payload for ``notice`` of ``rule``.

    Firing notifications use the rule's ``message`` template, resolutions its
    ``resolved_message`` (else the rule type's resolved text, which states the
    present); both see ``{state}`` (``firing`` or ``resolved``). A resolution
    ends with how long the alert lasted.
    """
    ended = notice.kind in ENDED
    fields: dict[str, Any] = {
        "rule": rule.name, "group": notice.group, "value": notice.value, "severity": notice.severity.value,
        "description": rule.description, "summary": notice.summary, "labels": rule.labels,
        "state": "resolved" if ended else "firing", **notice.details,
    }
    body = notice.summary
    body_mrkdwn = mrkdwn(body)
    if rule.message and notice.kind in (Kind.FIRING, Kind.REPEAT, Kind.SEVERITY):
        body = render_template(rule.message, fields)
        body_mrkdwn = render_template(rule.message, fields, mrkdwn)
    elif rule.resolved_message and notice.kind is Kind.RESOLVED:
        body = render_template(rule.resolved_message, fields)
        body_mrkdwn = render_template(rule.resolved_message, fields, mrkdwn)
    if notice.kind is Kind.RESOLVED and notice.since is not None:
        lasted = f" (resolved after {format_age(notice.at - notice.since)})"
        body, body_mrkdwn = body + lasted, body_mrkdwn + mrkdwn(lasted)
    where = f"{rule.name} [{notice.group}]" if notice.group else rule.name
    title = f"{KIND_LABEL[notice.kind]}: {where}"
    severity = "OK" if ended else notice.severity.value.upper()
    prefix = f"[{severity}] {title}: "
    return {
        "rule": rule.name, "type": rule.type, "group": notice.group, "kind": notice.kind.value,
        "severity": notice.severity.value, "title": title, "text": prefix + body, "body": body, "value": notice.value,
        # the same, as Slack mrkdwn: the author's template is markup, every value in it escaped data
        "body_mrkdwn": body_mrkdwn, "text_mrkdwn": mrkdwn(prefix) + body_mrkdwn,
        "summary": notice.summary, "description": rule.description, "runbook_url": rule.runbook_url,
        "labels": dict(rule.labels), "at": to_text(notice.at), "since": to_text(notice.since),
        "details": {k: (to_text(v) if isinstance(v, datetime) else v) for k, v in notice.details.items()},
        "channel": rule.notify.channel, "mention": rule.notify.mention,
    }


# Kinds of the notifications of explained alerts (see ``dependencies``): replies in the upstream's thread, or a
# link in the alert's own. None of them pages, and receivers that page (PagerDuty) skip them.
EXPLAINED_KINDS = frozenset({"explained", "explained_resolved", "link"})


def render_explained(rule: Rule, kind: str, notices: list[Notice], upstream: str, upstream_thread: str,
                     channel: str | None) -> dict[str, Any]:
    """One payload for the alerts of ``rule`` that ``upstream`` explains, posted in its thread.

    ``kind`` is ``explained`` ("also affected: ...", for alerts that fire or
    change severity) or ``explained_resolved`` (closed quietly, one line).
    Each group's summary is data: escaped in the mrkdwn form, never markup.
    """
    ended = kind == "explained_resolved"
    lines: list[tuple[str, str]] = []  # (plain, mrkdwn)
    for notice in notices:
        where = f"{rule.name} [{notice.group}]" if notice.group else rule.name
        text = notice.summary
        if ended and notice.since is not None:
            text += f" (resolved after {format_age(notice.at - notice.since)})"
        elif not ended and notice.kind is Kind.SEVERITY:
            text = f"now {notice.severity.value}: {text}"
        lines.append((f"{where}: {text}", f"*{mrkdwn(where)}*: {mrkdwn(text)}"))
    head = f"back to normal after {upstream}" if ended else f"also affected, explained by {upstream}"
    title = f"{'BACK TO NORMAL' if ended else 'ALSO AFFECTED'}: {rule.name}"
    severity = max((n.severity for n in notices), key=lambda s: s.rank, default=Severity.WARNING).value
    shown = "OK" if ended else severity.upper()
    body = "; ".join(plain for plain, _ in lines)
    body_mrkdwn = "\n".join(marked for _, marked in lines)
    first = notices[0]
    return {
        "rule": rule.name, "group": first.group if len(notices) == 1 else "", "kind": kind, "severity": severity,
        "title": title, "text": f"[{shown}] {head}: {body}", "body": body, "body_mrkdwn": body_mrkdwn,
        "text_mrkdwn": mrkdwn(f"[{shown}] {head}: ") + body_mrkdwn, "summary": body,
        "value": first.value if len(notices) == 1 else None, "description": "", "runbook_url": rule.runbook_url,
        "labels": dict(rule.labels), "at": to_text(first.at), "since": to_text(first.since) if not ended else None,
        "details": {}, "channel": channel, "mention": None, "page": False,
        "explained_by": {"alert": upstream, "episode": upstream_thread},
        "groups": [{"group": n.group, "severity": n.severity.value, "value": n.value, "summary": n.summary,
                    "since": to_text(n.since)} for n in notices],
    }


def render_link(rule: Rule, notice: Notice, upstream: str, upstream_thread: str) -> dict[str, Any]:
    """A reply in an alert's own thread: ``upstream``, which it may depend on, fired after it (a link to its thread).

    The outbox adds the upstream thread's address (``link``) when it sends it.
    """
    where = f"{rule.name} [{notice.group}]" if notice.group else rule.name
    text = f"{upstream} fired after this alert and may explain it: see its thread"
    return {
        "rule": rule.name, "group": notice.group, "kind": "link", "severity": notice.severity.value,
        "title": f"UPSTREAM FIRING: {where}", "text": f"[{notice.severity.value.upper()}] {where}: {text}",
        "body": text, "body_mrkdwn": mrkdwn(text), "text_mrkdwn": mrkdwn(f"[{notice.severity.value.upper()}] {where}: {text}"),
        "summary": text, "value": notice.value, "description": "", "runbook_url": None, "labels": dict(rule.labels),
        "at": to_text(notice.at), "since": to_text(notice.since), "details": {}, "channel": rule.notify.channel,
        "mention": None, "page": False, "link_episode": upstream_thread, "explained_by": {"alert": upstream, "episode": upstream_thread},
        "actions": False,
    }
