"""Slack's buttons over Socket Mode: an outbound WebSocket, so watchdog needs no public endpoint.

``SlackActions`` keeps the connection (slack-sdk's built-in Socket Mode
client, reconnected by a supervisor thread with backoff) and carries out
clicks: acknowledge, silence, unsilence, approve and decline. Each click's
effect, its audit row (with the Slack user) and the record that it was handled
are written in one transaction, so a click that Slack delivers twice acts once.
Answers to the person who clicked (a thread reply, the updated message, an
ephemeral "not allowed") are posted after the effect is stored.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from watchdog.config import SlackConfig, StateConfig
from watchdog.logfmt import log
from watchdog.notify import actions as act
from watchdog.notify.slack_blocks import message_blocks
from watchdog.state import StateStore
from watchdog.state_actions import Ack, delete_silence, insert_ack, insert_silence
from watchdog.state_db import Database, StoreError
from watchdog.storage import open_store
from watchdog.times import to_text, utcnow

logger = logging.getLogger("watchdog.slack.actions")

NAME = "slack-socket-mode"  # its row in the notifier status (``watchdog status``)
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
SUPERVISE_SECONDS = 5.0  # how often the supervisor looks at the connection
PING_SECONDS = 10.0  # keep-alive pings (one small frame each): they are how a silently dead connection shows
# No pong for this long: the connection is dead (a NAT timeout, a lost route: no close frame ever comes) and is
# replaced. Noticed within DEAD_SECONDS + PING_SECONDS + SUPERVISE_SECONDS (45 s), well inside a minute.
DEAD_SECONDS = 3 * PING_SECONDS
GROUP_CACHE_SECONDS = 300.0
TIMEOUT_SECONDS = 10
CLOSE_SECONDS = 1.0


@dataclass
class SocketHealth:
    """Whether the Socket Mode connection is up; shared by the connection and the notifier in one process."""

    connected: bool = False
    since: datetime | None = None  # of the current state
    error: str | None = None
    reconnects: int = 0

    def set(self, connected: bool, error: str | None = None) -> None:
        if connected != self.connected or self.since is None:
            self.since = utcnow()
        if connected and not self.connected and self.since is not None:
            self.reconnects += 1
        self.connected = connected
        self.error = error


class SlackActions:
    """The Socket Mode connection and the handling of clicks."""

    def __init__(self, config: SlackConfig, state_path: str | StateConfig, health: SocketHealth,
                 clock: Callable[[], datetime] = utcnow):
        if not config.app_token or not config.token:
            raise ValueError("Socket Mode needs slack.app_token and slack.token")
        self.config = config
        self.health = health
        self.clock = clock
        self.state_path = state_path
        self.web = WebClient(token=config.token, base_url=config.base_url, timeout=TIMEOUT_SECONDS, retry_handlers=[])
        self.client = SocketModeClient(app_token=config.app_token,
                                       web_client=WebClient(base_url=config.base_url, timeout=TIMEOUT_SECONDS),
                                       auto_reconnect_enabled=False, ping_interval=PING_SECONDS, concurrency=2,
                                       logger=logging.getLogger("watchdog.slack.socket"))
        self.client.socket_mode_request_listeners.append(self._on_request)  # type: ignore[arg-type]
        self.store: StateStore | None = None
        self.lock = threading.Lock()  # one click at a time: decisions are "first click wins"
        # PagerDuty receivers: an acknowledgement is passed on to those that were told about the episode.
        self.pagers: frozenset[str] = frozenset()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="slack-socket-mode", daemon=True)
        self.group_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self.connected_at = time.time()  # (wall clock, as slack-sdk stamps its pings) the current connection's start

    # --- the connection -------------------------------------------------------------

    def start(self) -> None:
        # Any instance handles clicks (Slack spreads them over the connections): all write the one shared state.
        self.store = (StateStore(self.state_path) if isinstance(self.state_path, str)
                      else open_store(self.state_path))
        self.thread.start()

    def close(self) -> None:
        """Stop reconnecting and close the connection, waiting at most CLOSE_SECONDS (a stop must stay quick)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(CLOSE_SECONDS)
        closer = threading.Thread(target=self._close_client, name="slack-socket-close", daemon=True)
        closer.start()
        closer.join(CLOSE_SECONDS)  # slack-sdk's receive loop may hold the socket for a few seconds more
        if self.store is not None and self.lock.acquire(timeout=CLOSE_SECONDS):  # not while a click is handled
            try:
                self.store.close()
            finally:
                self.lock.release()

    def _close_client(self) -> None:
        try:
            self.client.close()
        except Exception as exc:  # closing a half-open socket may fail; nothing to do about it
            log(logger, logging.DEBUG, "closing the Socket Mode client failed", error=str(exc))

    def _record_health(self, connected: bool, error: str | None) -> None:
        was = self.health.connected
        self.health.set(connected, error)
        if self.store is not None and (was != connected or error):
            try:
                self.store.set_notifier_status(NAME, None if connected else (error or "disconnected"), self.clock())
            except StoreError as exc:
                log(logger, logging.WARNING, "cannot record the Socket Mode status", error=str(exc))
        if was != connected:
            log(logger, logging.INFO if connected else logging.WARNING,
                "Socket Mode connected" if connected else "Socket Mode disconnected", error=error)

    def _supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while not self.stop.is_set():
            if self.client.is_connected() and not self._dead():
                if not self.health.connected:
                    self._record_health(True, None)
                backoff = BACKOFF_FIRST
                self.stop.wait(SUPERVISE_SECONDS)
                continue
            if self.health.connected or self.health.since is None:
                self._record_health(False, "connecting")
            try:
                self.connected_at = time.time()
                self.client.connect_to_new_endpoint(force=True)
                if self.client.is_connected():
                    self.connected_at = time.time()
                    self._record_health(True, None)
                    backoff = BACKOFF_FIRST
                    continue
                error = "the connection closed at once"
            except (SlackApiError, SlackClientError, OSError, ValueError) as exc:
                error = _short_error(exc)
            except Exception as exc:  # slack-sdk raises plain Exceptions for handshake failures
                error = _short_error(exc)
            self._record_health(False, error)
            self.stop.wait(backoff * (0.5 + random.random() / 2))
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _dead(self) -> bool:
        """Whether the open connection stopped answering pings for DEAD_SECONDS (then it is said and replaced)."""
        session = getattr(self.client, "current_session", None)
        last = getattr(session, "last_ping_pong_time", None)  # (wall clock: when the last answered ping was sent)
        since = max(last if isinstance(last, float) else 0.0, self.connected_at)
        if time.time() - since <= DEAD_SECONDS:
            return False
        log(logger, logging.WARNING, "Socket Mode connection answers no pings; replacing it",
            seconds=round(time.time() - since))
        self._record_health(False, "the connection stopped answering (no pong)")
        return True

    def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        # Slack wants an acknowledgement within 3 s, before any work.
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return
        click = act.parse_click(request.payload)
        if click is None:
            return
        try:
            with self.lock:
                self.handle(click)
        except Exception as exc:  # one bad click never takes the connection down
            log(logger, logging.ERROR, "a Slack action failed", action=click.action, user=click.user,
                error=_short_error(exc))

    # --- the clicks --------------------------------------------------------------------

    def handle(self, click: act.Click) -> None:
        """Carry out one validated click (exactly once per ``click.key``)."""
        assert self.store is not None
        if self.store.action_outcome(click.key) is not None:
            log(logger, logging.INFO, "Slack action delivered again: ignored", action=click.action, user=click.user)
            return
        if click.action in act.APPROVAL_ACTIONS:
            self._decide(click)
        elif click.action == act.UNSILENCE:
            self._unsilence(click)
        else:
            self._alert_action(click)

    def _posted_here(self, click: act.Click) -> bool:
        """Whether the click is on what watchdog posted for its episode; else the clicker is told, and nothing acts."""
        assert self.store is not None
        if act.posted_for(click, self.store.thread_ref(click.value, "slack")):
            return True
        self._ephemeral(click, "This button is not on a message watchdog posted for that alert: nothing was changed.")
        log(logger, logging.WARNING, "Slack action on another message refused", action=click.action, user=click.user,
            channel=click.channel)
        return False

    def _may(self, user: str, allow: Collection[str]) -> bool:
        return act.allowed(user, allow, self._members)

    def _members(self, group: str) -> frozenset[str]:
        cached = self.group_cache.get(group)
        if cached is not None and time.monotonic() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        try:
            users = self.web.usergroups_users_list(usergroup=group).get("users") or []
            members = frozenset(u for u in users if isinstance(u, str))
        except (SlackApiError, SlackClientError, OSError) as exc:
            log(logger, logging.WARNING, "cannot read a Slack user group", usergroup=group, error=_short_error(exc))
            members = frozenset()
        self.group_cache[group] = (time.monotonic(), members)
        return members

    def _alert_action(self, click: act.Click) -> None:
        assert self.store is not None
        if self.config.actions.allow and not self._may(click.user, self.config.actions.allow):
            self._ephemeral(click, "You are not allowed to acknowledge or silence watchdog alerts "
                                   "(slack.actions.allow in watchdog's config). Nothing was changed.")
            log(logger, logging.WARNING, "Slack action refused", action=click.action, user=click.user)
            return
        found = self.store.episode_group(click.value)
        if found is None:
            self._ephemeral(click, "This alert is no longer firing: nothing was changed.")
            return
        if not self._posted_here(click):
            return
        rule, group, state = found
        now = self.clock()
        if click.action == act.ACK:
            ack = self.store.acks(rule).get(group)
            if ack is not None and ack.episode == click.value:
                self._ephemeral(click, f"Already acknowledged by {act.mention(ack.by)} at {act.when(ack.at)}.")
                return
            new_ack = Ack(episode=click.value, rule=rule, group=group, by=click.user, at=now, severity=state.severity)

            def acknowledge(db: Database) -> str:
                insert_ack(db, new_ack)
                return "acknowledged"

            told = self.store.receivers_of(click.value) & self.pagers
            payload = {"rule": rule, "group": group, "kind": "acknowledged", "severity": state.severity.value,
                       "by": click.user, "at": to_text(now)}
            if self.store.act(click.key, now, rule=rule, group=group, action="acknowledged",
                              detail={"user": click.user, "episode": click.value}, effect=acknowledge,
                              episode=click.value,
                              forward=[(pager, "acknowledged", payload) for pager in sorted(told)]) is None:
                return
            note = (f"Acknowledged by {act.mention(click.user)} at {act.when(now)}: no repeats until it resolves "
                    f"or its severity rises above {state.severity.value}.")
            self._reply(click, note)
            self._update_first(click, note, acknowledged=True)
            log(logger, logging.INFO, "alert acknowledged", rule=rule, group=group or None, user=click.user)
            return
        until_resolved = click.action == act.SILENCE_RESOLVED
        until = now + (act.UNTIL_RESOLVED_LIMIT if until_resolved else act.SILENCE_FOR[click.action])
        made: list[int] = []

        def silence(db: Database) -> str:
            made.append(insert_silence(db, rule, group, until, f"from Slack by {click.user}", now,
                                       click.value if until_resolved else None, click.user))
            return f"silenced:{made[0]}"

        if self.store.act(click.key, now, rule=rule, group=group, action="silenced",
                          detail={"user": click.user, "until": "resolved" if until_resolved else act.when(until)},
                          effect=silence) is None:
            return
        span = "until it resolves" if until_resolved else f"until {act.when(until)}"
        note = f"Silenced by {act.mention(click.user)} {span} (silence {made[0]}; `watchdog unsilence {made[0]}` also ends it)."
        self._reply(click, note, [act.unsilence_button(made[0])])
        log(logger, logging.INFO, "alert silenced", rule=rule, group=group or None, user=click.user, silence=made[0])

    def _unsilence(self, click: act.Click) -> None:
        assert self.store is not None
        if self.config.actions.allow and not self._may(click.user, self.config.actions.allow):
            self._ephemeral(click, "You are not allowed to unsilence watchdog alerts (slack.actions.allow). Nothing was changed.")
            return
        silence_id = int(click.value)
        existing = self.store.silence(silence_id)
        if existing is None or existing.until <= self.clock():
            self._ephemeral(click, f"Silence {silence_id} has already ended: nothing was changed.")
            return
        # The button is a reply in the silenced alert's thread: a click from any other message acts on nothing.
        threads = self.store.thread_refs_of(existing.rule, existing.group or "", "slack")
        if not any(act.posted_for(click, thread) for thread in threads):
            self._ephemeral(click, "This button is not on a message watchdog posted for that alert: nothing was changed.")
            log(logger, logging.WARNING, "Slack action on another message refused", action=click.action,
                user=click.user, channel=click.channel)
            return

        def unsilence(db: Database) -> str:
            return "unsilenced" if delete_silence(db, silence_id) else "already ended"

        outcome = self.store.act(click.key, self.clock(), rule=existing.rule, group=existing.group or "",
                                 action="unsilenced", detail={"user": click.user, "silence": silence_id}, effect=unsilence)
        if outcome == "unsilenced":
            self._reply(click, f"Unsilenced by {act.mention(click.user)} at {act.when(self.clock())} (silence {silence_id}).")

    def _decide(self, click: act.Click) -> None:
        assert self.store is not None
        if not self._may(click.user, self.config.actions.approvers):
            self._ephemeral(click, "You are not allowed to approve or decline remediations "
                                   "(slack.actions.approvers in watchdog's config). Nothing was changed.")
            log(logger, logging.WARNING, "Slack approval refused", action=click.action, user=click.user)
            return
        if not self._posted_here(click):
            return
        approve = click.action == act.APPROVE
        decided = self.store.decide_remediation(click.key, click.value, approve=approve, user=click.user, now=self.clock())
        if decided is None:
            return  # delivered again
        outcome, earlier = decided
        if earlier is not None:
            self._ephemeral(click, f"Already decided: {earlier}. Nothing was changed.")
            return
        if outcome is None:
            self._ephemeral(click, "This remediation no longer waits for a decision: nothing was changed.")
            return
        verb = "Approved" if approve else "Declined"
        note = f"{verb} by {act.mention(click.user)} at {act.when(self.clock())}."
        self._update_message(click, note)
        self._reply(click, note + (" The remediation goes ahead at its next evaluation." if approve
                                   else " Nothing will be done for this failure."))
        log(logger, logging.INFO, "remediation decided", decision=outcome, user=click.user)

    # --- answers ---------------------------------------------------------------------

    def _ephemeral(self, click: act.Click, text: str) -> None:
        try:
            self.web.chat_postEphemeral(channel=click.channel, user=click.user, text=text)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log(logger, logging.WARNING, "cannot answer a Slack action", error=_short_error(exc))

    def _reply(self, click: act.Click, text: str, extra: list[dict[str, Any]] | None = None) -> None:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}, *(extra or [])]
        try:
            self.web.chat_postMessage(channel=click.channel, thread_ts=click.thread_ts or click.message_ts, text=text,
                                      blocks=blocks, unfurl_links=False)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log(logger, logging.WARNING, "cannot post to the alert's thread", error=_short_error(exc))

    def _update_first(self, click: act.Click, note: str, *, acknowledged: bool) -> None:
        """Rewrite the alert's message: who acted, and the buttons that still apply."""
        assert self.store is not None
        ref = self.store.thread_ref(click.value, "slack") or {}
        first = ref.get("first")
        if not isinstance(first, dict) or first.get("kind") == "digest" or click.thread_ts:
            return  # (a digest lists other alerts too: it stays as it is; the reply in its thread says who acted)
        blocks = act.replace_actions(message_blocks(first), [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]},
            act.alert_buttons(click.value, acknowledged=acknowledged)])
        self._update(click, blocks)

    def _update_message(self, click: act.Click, note: str) -> None:
        """Replace a message's buttons with the outcome (approvals)."""
        assert self.store is not None
        payload = self.store.approval_payload(click.value)
        if payload is None:
            return
        blocks = act.replace_actions(message_blocks(payload), [{"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}])
        self._update(click, blocks)

    def _update(self, click: act.Click, blocks: list[dict[str, Any]]) -> None:
        try:
            self.web.chat_update(channel=click.channel, ts=click.message_ts, blocks=blocks,
                                 text=_plain(blocks))
        except (SlackApiError, SlackClientError, OSError) as exc:
            log(logger, logging.WARNING, "cannot update the alert's message", error=_short_error(exc))


def _plain(blocks: list[dict[str, Any]]) -> str:
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            return str(text["text"])[:3000]
    return "watchdog alert"


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]
