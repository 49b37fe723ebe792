"""Block Kit messages for Slack, cut to Slack's limits.

Limits (Slack's documentation): at most 50 blocks; a header's text at most
150 characters; a section's text at most 3,000; at most 10 fields of at most
2,000 each. The plain ``text`` fallback is what phone notifications show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from watchdog.escape import cut_mrkdwn, mrkdwn, mrkdwn_code, mrkdwn_link, plain_text
from watchdog.notify.actions import alert_menu

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_TEXT = 3000
MAX_LINK = 1000  # a digest line's link longer than this is left out (a line is cut at MAX_SECTION - 40)

SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
KIND_EMOJI = {"resolved": ":white_check_mark:", "recovered": ":white_check_mark:", "error": ":warning:", "action": ":wrench:",
              "explained": ":link:", "explained_resolved": ":white_check_mark:", "link": ":link:"}


def mrkdwn_body(payload: Mapping[str, Any]) -> str:
    """The payload's body as mrkdwn: rendered with escaped data when it was recorded, else escaped here.

    Payloads recorded before bodies carried their mrkdwn form (or built
    without it) are all data, so they are escaped whole.
    """
    body = payload.get("body_mrkdwn")
    if isinstance(body, str) and body:
        return body
    return mrkdwn(str(payload.get("body") or payload.get("text") or ""))


def _field(label: str, value: Any) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut_mrkdwn(f"*{mrkdwn(label)}*\n{mrkdwn(str(value))}", MAX_FIELD),
            "verbatim": True}


def _emoji(payload: Mapping[str, Any]) -> str:
    kind = str(payload.get("kind"))
    return KIND_EMOJI.get(kind) or SEVERITY_EMOJI.get(str(payload.get("severity")), "")


def fallback_text(payload: Mapping[str, Any], mention: str | None = None) -> str:
    """The message's ``text`` (notifications, screen readers): escaped data after the operator's mention."""
    text = payload.get("text_mrkdwn")
    escaped = text if isinstance(text, str) and text else mrkdwn(str(payload.get("text", "")))
    return cut_mrkdwn(f"{mention} {escaped}" if mention else escaped, MAX_TEXT)


def _links(payload: Mapping[str, Any], details: Mapping[str, Any]) -> list[str]:
    """Runbook and dashboards links; a link too long for Slack is left out, never cut."""
    links = []
    if payload.get("runbook_url"):
        links.append(mrkdwn_link(str(payload["runbook_url"]), "Runbook"))
    if details.get("dashboard_url"):
        links.append(mrkdwn_link(str(details["dashboard_url"]), "Open in dashboards"))
    kept: list[str] = []
    for link in links:
        if len(" · ".join([*kept, link])) <= MAX_SECTION:
            kept.append(link)
    return kept


def message_blocks(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blocks of one notification; every piece of data passes through ``watchdog.escape``."""
    header = plain_text(f"{_emoji(payload)} {payload.get('title', '')}".strip())
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut_mrkdwn(header, MAX_HEADER) or " ", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": cut_mrkdwn(mrkdwn_body(payload), MAX_SECTION) or " "}},
    ]
    if payload.get("description") and payload.get("kind") not in ("resolved", "recovered"):
        # (plain text: the rule's own words, never markup)
        blocks.insert(1, {"type": "context", "elements": [
            {"type": "plain_text", "text": cut_mrkdwn(plain_text(str(payload["description"])), MAX_SECTION) or " ",
             "emoji": False}]})
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
        lines = "\n".join(json.dumps(s, default=str, sort_keys=True, ensure_ascii=False) for s in samples)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_code(lines, MAX_SECTION),
                                                   "verbatim": True}})
    links = _links(payload, details)
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    return blocks[:MAX_BLOCKS]


def _sections(lines: list[str], room: int) -> list[dict[str, Any]]:
    """Lines packed into at most ``room`` sections of at most MAX_SECTION characters; the rest counted."""
    sections: list[str] = []
    current = ""
    for index, line in enumerate(lines):
        line = cut_mrkdwn(line, MAX_SECTION - 40)
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


def _entry_line(entry: Mapping[str, Any]) -> str:
    icon = KIND_EMOJI.get(entry["kind"]) or SEVERITY_EMOJI.get(entry["severity"], "")
    where = f" {mrkdwn(str(entry['group']))}:" if entry.get("group") else ":"
    ended = entry["kind"] in ("resolved", "recovered")
    since = f" (since {mrkdwn(str(entry['since']))})" if entry.get("since") and not ended else ""
    link = mrkdwn_link(str(entry["dashboard_url"]), "dashboards") if entry.get("dashboard_url") else ""
    link = f" {link}" if 0 < len(link) <= MAX_LINK else ""  # a link too long is left out, never cut
    return (f"{icon} [{mrkdwn(str(entry['shown']))}] {mrkdwn(str(entry['label']))}{where} "
            f"{mrkdwn(str(entry['summary']))}{since}{link}")


def _samples_block(samples: list[Any]) -> dict[str, Any]:
    lines = "\n".join(json.dumps(s, default=str, sort_keys=True, ensure_ascii=False) for s in samples)
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_code(lines, MAX_SECTION), "verbatim": True}}


def menu_section(line: str, episode: str) -> dict[str, Any]:
    """One alert's line with its own menu: Acknowledge and Silence, acting on that alert alone."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut_mrkdwn(line, MAX_SECTION) or " "},
            "accessory": alert_menu(episode)}


def digest_layout(payload: Mapping[str, Any], *, menus: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The blocks of a digest (see ``notify.digest``), and the menus that did not fit.

    Per rule: its count and one line per notification; with ``menus`` each
    firing alert's line carries its Acknowledge and Silence menu, while
    Slack's 50-block limit allows; the alerts left over are returned as
    ``{"line", "episode"}`` (for replies in the digest's thread). A digest of
    few notifications (``payload["samples"]``) shows their example events.
    """
    emoji = SEVERITY_EMOJI.get(str(payload.get("severity")), "") if payload.get("shown") not in ("OK", "DRY RUN") \
        else KIND_EMOJI["resolved"] if payload.get("shown") == "OK" else ""
    header = plain_text(f"{emoji} [{payload.get('shown')}] {payload.get('title', '')}".strip())
    # (line, episode for a menu, example events)
    rows: list[tuple[str, str, list[Any]]] = []
    for block in payload.get("rules") or ():
        counts = ", ".join(f"{n} {k}" for k, n in (block.get("severities") or {}).items())
        runbook = f" · {mrkdwn_link(str(block['runbook_url']), 'Runbook')}" if block.get("runbook_url") else ""
        rows.append((f"*{mrkdwn(str(block['rule']))}* ({block['count']}: {mrkdwn(counts)}){runbook}", "", []))
        for entry in block.get("entries") or ():
            samples = list(entry.get("samples") or []) if payload.get("samples") else []
            rows.append((_entry_line(entry), str(entry.get("episode") or "") if menus else "", samples))
        if block.get("more"):
            rows.append((f"… and {block['more']} more of {mrkdwn(str(block['rule']))}", "", []))
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": cut_mrkdwn(header, MAX_HEADER) or " ",
                                                                  "emoji": True}}]
    if not any(episode or samples for _, episode, samples in rows):
        blocks.extend(_sections([line for line, _, _ in rows], MAX_BLOCKS - 1))
        return blocks[:MAX_BLOCKS], []
    leftover: list[dict[str, str]] = []
    packed: list[str] = []
    for index, (line, episode, samples) in enumerate(rows):
        needed = 1 + bool(packed) + bool(samples)
        if len(blocks) + needed > MAX_BLOCKS - 1:  # (one block kept for what is left)
            rest = packed + [r[0] for r in rows[index:]]
            leftover += [{"line": r[0], "episode": r[1]} for r in rows[index:] if r[1]]
            blocks.extend(_sections(rest, MAX_BLOCKS - len(blocks)))
            return blocks[:MAX_BLOCKS], leftover
        if not (episode or samples):
            packed.append(line)
            continue
        if packed:
            blocks.extend(_sections(packed, 1))
            packed = []
        blocks.append(menu_section(line, episode) if episode
                      else {"type": "section", "text": {"type": "mrkdwn", "text": cut_mrkdwn(line, MAX_SECTION) or " "}})
        if samples:
            blocks.append(_samples_block(samples))
    if packed:
        blocks.extend(_sections(packed, MAX_BLOCKS - len(blocks)))
    return blocks[:MAX_BLOCKS], leftover


def digest_blocks(payload: Mapping[str, Any], *, menus: bool = False) -> list[dict[str, Any]]:
    """The blocks of a digest (see ``digest_layout``)."""
    return digest_layout(payload, menus=menus)[0]


def menu_blocks(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A reply in a digest's thread: the alerts whose menus did not fit in the digest, one section each."""
    return [menu_section(str(e.get("line") or ""), str(e.get("episode") or "")) for e in entries][:MAX_BLOCKS]


def resolved_first_message(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first message of a thread, rewritten once the alert resolved."""
    resolved = dict(payload)
    title = str(payload.get("title", "")).replace("RESOLVED", "RESOLVED", 1)
    resolved["title"] = title
    now = f"\nNow: {payload['resolution_mrkdwn']}" if payload.get("resolution_mrkdwn") else ""
    resolved["body_mrkdwn"] = (f"~{mrkdwn(str(payload.get('summary', '')))}~{now}\n"
                               f"Resolved at {mrkdwn(str(payload.get('at')))} (firing since {mrkdwn(str(payload.get('since')))}).")
    return message_blocks(resolved)
