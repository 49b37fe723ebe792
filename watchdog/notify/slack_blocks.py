"""Block Kit messages for Slack, cut to Slack's limits.

Limits (Slack's documentation): at most 50 blocks; a header's text at most
150 characters; a section's text at most 3,000; at most 10 fields of at most
2,000 each. The plain ``text`` fallback is what phone notifications show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_TEXT = 3000

SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
KIND_EMOJI = {"resolved": ":white_check_mark:", "recovered": ":white_check_mark:", "error": ":warning:", "action": ":wrench:"}


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: Any) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cut(f"*{label}*\n{value}", MAX_FIELD)}


def _emoji(payload: Mapping[str, Any]) -> str:
    kind = str(payload.get("kind"))
    return KIND_EMOJI.get(kind) or SEVERITY_EMOJI.get(str(payload.get("severity")), "")


def fallback_text(payload: Mapping[str, Any], mention: str | None = None) -> str:
    text = str(payload.get("text", ""))
    return cut(f"{mention} {text}" if mention else text, MAX_TEXT)


def message_blocks(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blocks of one notification."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(f"{_emoji(payload)} {payload.get('title', '')}".strip(), MAX_HEADER),
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": cut(str(payload.get("body") or payload.get("text") or " "), MAX_SECTION)}},
    ]
    details = payload.get("details") or {}
    fields = [_field("Rule", payload.get("rule"))]
    if payload.get("group"):
        fields.append(_field("Group", payload["group"]))
    fields.append(_field("Severity", payload.get("severity")))
    if payload.get("value") is not None:
        threshold = details.get("threshold")
        fields.append(_field("Value", f"{payload['value']}" + (f" ({threshold})" if threshold else "")))
    if details.get("window"):
        fields.append(_field("Window", details["window"]))
    if payload.get("since"):
        fields.append(_field("Since", payload["since"]))
    for label, value in (payload.get("labels") or {}).items():
        fields.append(_field(str(label), value))
    blocks.append({"type": "section", "fields": fields[:MAX_FIELDS]})
    samples = details.get("samples")
    if samples:
        lines = "\n".join(json.dumps(s, default=str, sort_keys=True) for s in samples)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "```" + cut(lines, MAX_SECTION - 6) + "```"}})
    links = []
    if payload.get("runbook_url"):
        links.append(f"<{payload['runbook_url']}|Runbook>")
    if details.get("dashboard_url"):
        links.append(f"<{details['dashboard_url']}|Open in dashboards>")
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(" · ".join(links), MAX_SECTION)}]})
    return blocks[:MAX_BLOCKS]


def mrkdwn(value: Any) -> str:
    """Data as mrkdwn text: Slack's three control characters escaped, so data never becomes markup."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sections(lines: list[str], room: int) -> list[dict[str, Any]]:
    """Lines packed into at most ``room`` sections of at most MAX_SECTION characters; the rest counted."""
    sections: list[str] = []
    current = ""
    for index, line in enumerate(lines):
        line = cut(line, MAX_SECTION - 40)
        if current and len(current) + 1 + len(line) > MAX_SECTION - 40:
            if len(sections) + 1 >= room:
                current += f"\n… and {len(lines) - index} more line(s)"
                break
            sections.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    sections.append(current or " ")
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}} for text in sections]


def digest_blocks(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blocks of a digest (see ``notify.digest``): per rule, its count and one line per notification."""
    emoji = SEVERITY_EMOJI.get(str(payload.get("severity")), "") if payload.get("shown") not in ("OK", "DRY RUN") \
        else KIND_EMOJI["resolved"] if payload.get("shown") == "OK" else ""
    header = f"{emoji} [{payload.get('shown')}] {payload.get('title', '')}".strip()
    lines: list[str] = []
    for block in payload.get("rules") or ():
        counts = ", ".join(f"{n} {k}" for k, n in (block.get("severities") or {}).items())
        runbook = f" · <{block['runbook_url']}|Runbook>" if block.get("runbook_url") else ""
        lines.append(f"*{mrkdwn(block['rule'])}* ({block['count']}: {counts}){runbook}")
        for entry in block.get("entries") or ():
            icon = KIND_EMOJI.get(entry["kind"]) or SEVERITY_EMOJI.get(entry["severity"], "")
            where = f" {mrkdwn(entry['group'])}:" if entry.get("group") else ":"
            since = f" (since {entry['since']})" if entry.get("since") and entry["kind"] not in ("resolved", "recovered") else ""
            link = f" <{entry['dashboard_url']}|dashboards>" if entry.get("dashboard_url") else ""
            lines.append(f"{icon} [{entry['shown']}] {entry['label']}{where} {mrkdwn(entry['summary'])}{since}{link}")
        if block.get("more"):
            lines.append(f"… and {block['more']} more of {mrkdwn(block['rule'])}")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": cut(header, MAX_HEADER), "emoji": True}}]
    blocks.extend(_sections(lines, MAX_BLOCKS - 1))
    return blocks[:MAX_BLOCKS]


def resolved_first_message(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first message of a thread, rewritten once the alert resolved."""
    resolved = dict(payload)
    title = str(payload.get("title", "")).replace("RESOLVED", "RESOLVED", 1)
    resolved["title"] = title
    resolved["body"] = f"~{payload.get('summary', '')}~\nResolved at {payload.get('at')} (firing since {payload.get('since')})."
    return message_blocks(resolved)
