"""Slack's buttons, pure: the buttons an alert offers, what a click asks for, and who may do it.

A click arrives from Slack (through Socket Mode) as untrusted JSON. ``parse_click``
turns any payload into a ``Click`` or None, never an exception; every field it
keeps is checked against a strict pattern, so a user id can be written back as
a mention and a value can be looked up, and nothing else from the payload is
ever shown. The I/O (the connection, the state, the answers) is in
``watchdog.notify.socket_mode``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

PREFIX = "watchdog:"
ACK = "watchdog:ack"
SILENCE_1H = "watchdog:silence:1h"
SILENCE_4H = "watchdog:silence:4h"
SILENCE_RESOLVED = "watchdog:silence:resolved"
UNSILENCE = "watchdog:unsilence"
APPROVE = "watchdog:approve"
DECLINE = "watchdog:decline"
MENU = "watchdog:menu"  # one alert's overflow menu in a digest: the option's value is "ACTION EPISODE"

SILENCE_FOR: Mapping[str, timedelta] = {SILENCE_1H: timedelta(hours=1), SILENCE_4H: timedelta(hours=4)}
# "Until resolved" is a silence of the current episode; it still ends after this long, like any silence.
UNTIL_RESOLVED_LIMIT = timedelta(days=30)
ALERT_ACTIONS = frozenset({ACK, SILENCE_1H, SILENCE_4H, SILENCE_RESOLVED})
APPROVAL_ACTIONS = frozenset({APPROVE, DECLINE})
ACTIONS = ALERT_ACTIONS | APPROVAL_ACTIONS | {UNSILENCE}

USER_ID = re.compile(r"[UW][A-Z0-9]{2,30}")
GROUP_ID = re.compile(r"S[A-Z0-9]{2,30}")
EPISODE = re.compile(r"[0-9a-f]{8,64}")
SILENCE_ID = re.compile(r"[0-9]{1,18}")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,30}")
TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


@dataclass(frozen=True)
class Click:
    """One button click, every field validated."""

    action: str  # one of ACTIONS
    value: str  # an episode id, or a silence id for UNSILENCE
    user: str  # U... or W...
    channel: str
    message_ts: str
    action_ts: str
    thread_ts: str | None = None  # the thread the clicked message is a reply in (an approval question, a digest's menus)

    @property
    def key(self) -> str:
        """Identifies this click: Socket Mode may deliver it again, and it must act once."""
        return f"{self.channel}/{self.message_ts}/{self.action}/{self.user}/{self.action_ts}"


def _text(value: Any, pattern: re.Pattern[str]) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def parse_click(payload: Any) -> Click | None:
    """The watchdog button click in a ``block_actions`` payload, or None for anything else or anything malformed."""
    if _get(payload, "type") != "block_actions":
        return None
    actions = _get(payload, "actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], Mapping):
        return None
    action = actions[0].get("action_id")
    raw = actions[0].get("value")
    if action == MENU:  # a digest alert's menu: the option chosen names the action and the alert
        chosen = _get(actions[0], "selected_option", "value")
        action, _, raw = chosen.partition(" ") if isinstance(chosen, str) else ("", "", None)
        if action not in ALERT_ACTIONS:
            return None
    if action not in ACTIONS:
        return None
    value = _text(raw, SILENCE_ID if action == UNSILENCE else EPISODE)
    user = _text(_get(payload, "user", "id"), USER_ID)
    channel = _text(_get(payload, "container", "channel_id") or _get(payload, "channel", "id"), CHANNEL_ID)
    message_ts = _text(_get(payload, "container", "message_ts") or _get(payload, "message", "ts"), TS)
    action_ts = _text(actions[0].get("action_ts"), TS)
    thread_ts = _text(_get(payload, "message", "thread_ts") or _get(payload, "container", "thread_ts"), TS)
    if value is None or user is None or channel is None or message_ts is None or action_ts is None:
        return None
    return Click(action=str(action), value=value, user=user, channel=channel, message_ts=message_ts, action_ts=action_ts,
                 thread_ts=thread_ts)


def posted_for(click: Click, thread: Mapping[str, Any] | None) -> bool:
    """Whether ``click`` is on a message watchdog posted for the episode whose Slack thread is ``thread``.

    ``thread`` is the episode's thread as the outbox recorded it (``channel``
    and ``ts`` of the alert's first message, or of the digest that listed
    it). The click must come from that channel, on that message or on a
    reply in its thread (an approval question): a payload that names the
    episode of another alert, from another channel or message, acts on
    nothing.
    """
    if not isinstance(thread, Mapping) or not thread.get("channel") or not thread.get("ts"):
        return False
    if click.channel != str(thread["channel"]):
        return False
    return str(thread["ts"]) in (click.message_ts, click.thread_ts)


def allowed(user: str, allow: Collection[str], members: Callable[[str], Collection[str]]) -> bool:
    """Whether ``user`` is in ``allow`` (user ids, or user group ids whose ``members`` include them)."""
    if user in allow:
        return True
    return any(GROUP_ID.fullmatch(entry) and user in members(entry) for entry in allow)


def mention(user: str) -> str:
    """Slack's markup for a user; only for ids that passed ``USER_ID``."""
    if not USER_ID.fullmatch(user):
        raise ValueError(f"not a Slack user id: {user!r}")
    return f"<@{user}>"


def _button(text: str, action: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action,
                              "value": value}
    if style:
        button["style"] = style
    return button


def alert_buttons(episode: str, *, acknowledged: bool = False) -> dict[str, Any]:
    """The actions block of a firing alert."""
    buttons = [] if acknowledged else [_button("Acknowledge", ACK, episode, "primary")]
    buttons += [_button("Silence 1h", SILENCE_1H, episode), _button("Silence 4h", SILENCE_4H, episode),
                _button("Silence until resolved", SILENCE_RESOLVED, episode)]
    return {"type": "actions", "block_id": "watchdog-actions", "elements": buttons}


ALERT_MENU_OPTIONS = (("Acknowledge", ACK), ("Silence 1h", SILENCE_1H), ("Silence 4h", SILENCE_4H),
                      ("Silence until resolved", SILENCE_RESOLVED))


def alert_menu(episode: str) -> dict[str, Any]:
    """One alert's overflow menu (a line of a digest): the alert buttons' actions, for that alert alone."""
    return {"type": "overflow", "action_id": MENU,
            "options": [{"text": {"type": "plain_text", "text": text}, "value": f"{action} {episode}"}
                        for text, action in ALERT_MENU_OPTIONS]}


def unsilence_button(silence_id: int) -> dict[str, Any]:
    """The actions block under a "silenced" reply."""
    return {"type": "actions", "block_id": "watchdog-unsilence",
            "elements": [_button("Unsilence", UNSILENCE, str(silence_id))]}


def approval_buttons(episode: str) -> dict[str, Any]:
    """The actions block of a remediation waiting for approval."""
    return {"type": "actions", "block_id": "watchdog-approval",
            "elements": [_button("Approve", APPROVE, episode, "primary"), _button("Decline", DECLINE, episode, "danger")]}


def unavailable_note() -> dict[str, Any]:
    """Shown instead of buttons while the Socket Mode connection is down (a click would reach nobody)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": (
        "_Buttons unavailable: watchdog is not connected to Slack right now. "
        "Use `watchdog silence` on the host._")}]}


def when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def replace_actions(blocks: list[dict[str, Any]], replacement: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``blocks`` with watchdog's actions block (if any) replaced by ``replacement``."""
    out: list[dict[str, Any]] = []
    done = False
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "actions" and str(block.get("block_id", "")).startswith("watchdog-"):
            if not done:
                out.extend(replacement)
                done = True
            continue
        out.append(block)
    if not done:
        out.extend(replacement)
    return out
