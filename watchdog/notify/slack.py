"""The Slack notifier, on slack-sdk: bot token (threads, updates) or incoming webhook.

With a token, an episode's first notification is a new message; repeats,
remediation steps and the resolution are replies in its thread, and the
resolution also rewrites the first message. Notifications the outbox groups
arrive as one digest: its message becomes the thread of every alert in it
(a digest thread), and it is never rewritten (its other alerts may still
fire). With a webhook each message stands alone. Retrying is the outbox's
job: this class only says whether a failure is worth retrying.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from watchdog.config import SlackConfig
from watchdog.logfmt import log
from watchdog.notify import actions
from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.digest import pages
from watchdog.notify.slack_blocks import digest_blocks, fallback_text, message_blocks, mrkdwn_body, resolved_first_message

if TYPE_CHECKING:
    from watchdog.notify.socket_mode import SocketHealth

logger = logging.getLogger("watchdog.slack")

# Errors no retry can fix: the outbox records them and shows them in status.
PERMANENT_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
    "invalid_blocks", "too_many_attachments", "restricted_action", "ekm_access_denied", "team_access_not_granted",
    "invalid_token", "no_service", "no_service_id", "no_team", "channel_is_archived", "action_prohibited",
    "posting_to_general_channel_denied", "invalid_payload",
})
MIN_SECONDS_BETWEEN_POSTS = 1.0  # per channel, as Slack asks
TIMEOUT_SECONDS = 10


def _classify(status: int | None, error: str, headers: Mapping[str, Any] | None) -> Delivery:
    if status == 429:
        retry_after = None
        if headers:
            value = headers.get("Retry-After") or headers.get("retry-after")
            if isinstance(value, list):
                value = value[0] if value else None
            try:
                retry_after = float(value) if value is not None else None
            except ValueError:
                retry_after = None
        return Delivery.retry(f"rate limited by Slack ({error or 'ratelimited'})", retry_after)
    if error in PERMANENT_ERRORS:
        return Delivery.failed(f"Slack refused the message: {error}")
    if status is not None and 400 <= status < 500 and status not in (408, 409):
        return Delivery.failed(f"Slack answered HTTP {status}: {error}")
    return Delivery.retry(f"Slack error: {error or f'HTTP {status}'}")


class SlackNotifier(Notifier):
    name = "slack"
    groups = True

    def __init__(self, config: SlackConfig, socket: SocketHealth | None = None):
        self.config = config
        self.threads = config.token is not None
        self.group_wait = config.group_wait
        self.socket = socket  # Socket Mode is on: alerts carry buttons
        self.client = WebClient(token=config.token, base_url=config.base_url, timeout=TIMEOUT_SECONDS,
                                retry_handlers=[]) if config.token else None
        self.webhook = WebhookClient(config.webhook_url, timeout=TIMEOUT_SECONDS, retry_handlers=[]) \
            if config.webhook_url and not config.token else None
        self.last_post: dict[str, float] = {}

    def paced_until(self, destination: str) -> float:
        return self.last_post.get(destination, 0.0) + MIN_SECONDS_BETWEEN_POSTS

    def _pace(self, channel: str) -> None:
        wait = self.paced_until(channel) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last_post[channel] = time.monotonic()

    def destination(self, payload: Mapping[str, Any]) -> str:
        if self.webhook is not None:
            return "webhook"
        return str(payload.get("channel") or self.config.channel or "")

    def _mention(self, payload: Mapping[str, Any]) -> str | None:
        """Who to page: only for a critical problem announced (never a dry run, an end or a reply)."""
        if not (payload.get("pages") if payload.get("kind") == "digest" else pages(payload)):
            return None
        mention = payload.get("mention") or self.config.mention_critical
        return str(mention) if mention else None

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        payload = note.payload
        text = fallback_text(payload, None if thread else self._mention(payload))
        blocks = digest_blocks(payload) if note.kind == "digest" else message_blocks(payload) + self._buttons(note)
        try:
            if self.webhook is not None:
                self._pace("webhook")
                response = self.webhook.send(text=text, blocks=blocks)
                if response.status_code == 200:
                    return Delivery.sent()
                return _classify(response.status_code, response.body, response.headers)
            assert self.client is not None
            channel = str(payload.get("channel") or self.config.channel or "")
            if thread is not None and "ts" in thread:
                return self._reply(note, thread, text, blocks)
            if not channel:
                return Delivery.failed("no Slack channel: set slack.channel in the config or notify.slack.channel in the rule")
            self._pace(self.destination(payload))
            answer = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
            first = {"kind": "digest"} if note.kind == "digest" else dict(payload)  # (a digest's is never rewritten)
            return Delivery.sent({"channel": answer["channel"], "ts": answer["ts"], "first": first})
        except SlackApiError as exc:
            response = exc.response
            return _classify(response.status_code, str(response.get("error", "")) if isinstance(response.data, dict)
                             else str(response.data), response.headers)
        except (SlackClientError, OSError, TimeoutError) as exc:
            return Delivery.retry(f"cannot reach Slack: {type(exc).__name__}: {exc}")

    def _buttons(self, note: Notification) -> list[dict[str, Any]]:
        """Acknowledge and silence on a firing alert, approve and decline on a remediation waiting for it."""
        if self.socket is None or self.client is None:
            return []
        wanted = note.payload.get("approval") or (note.kind == "firing" and not note.payload.get("groups")
                                                  and note.payload.get("actions", True))
        if not wanted:
            return []
        if not self.socket.connected:
            return [actions.unavailable_note()]
        if note.payload.get("approval"):
            return [actions.approval_buttons(note.episode)]
        return [actions.alert_buttons(note.episode)]

    def _reply(self, note: Notification, thread: Mapping[str, Any], text: str, blocks: list[dict[str, Any]]) -> Delivery:
        assert self.client is not None
        channel = str(thread["channel"])
        self._pace(self.destination(note.payload))
        self.client.chat_postMessage(channel=channel, thread_ts=str(thread["ts"]), text=text, blocks=blocks,
                                     unfurl_links=False)
        first_kind = (thread.get("first") or {}).get("kind")
        if note.kind in ("resolved", "recovered") and first_kind != "digest" and not (thread.get("first") or {}).get("groups"):
            # (a digest stays as it is: its other alerts may still fire)
            first = dict(thread.get("first") or {})
            first.update({"kind": note.kind, "title": note.payload.get("title"), "at": note.payload.get("at"),
                          "resolution_mrkdwn": mrkdwn_body(note.payload)})
            try:  # best effort: the reply is what matters, and retrying would post it twice
                self.client.chat_update(channel=channel, ts=str(thread["ts"]), text=fallback_text(note.payload),
                                        blocks=resolved_first_message(first))
            except (SlackApiError, SlackClientError, OSError) as exc:
                log(logger, logging.WARNING, "could not update the first message", rule=note.rule, error=str(exc))
        return Delivery.sent()
