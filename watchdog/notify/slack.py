"""The Slack notifier, on slack-sdk: bot token (threads, updates) or incoming webhook.

With a token, an episode's first notification is a new message; repeats,
remediation steps and the resolution are replies in its thread, and the
resolution also rewrites the first message. Notifications the outbox groups
arrive as one digest: its message becomes the thread of every alert in it
(a digest thread), and it is never rewritten (its other alerts may still
fire). With a webhook each message stands alone. Retrying is the outbox's
job: this class only says whether a failure is worth retrying.

Exactly once, as far as Slack lets us: every post carries message metadata
with the outbox ids it delivers; before a message that was attempted before
is sent again (the answer was lost to a timeout, or watchdog died before
recording it), the outbox asks ``held``, which looks every one of its ids up
in the channel (``conversations.history``, or ``conversations.replies`` for
a thread); only the ids Slack does not hold are posted. Rewriting a thread's
first message after its resolution is a follow-up outbox entry of its own
(``chat.update`` is idempotent). A 429's Retry-After pauses every call of
that method to that channel (or, for methods Slack rates per workspace,
every call of the method). A token or webhook Slack refuses
(``CREDENTIAL_ERRORS``) is a refusal: no message's fault (see ``notify/base``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from watchdog.config import SlackConfig
from watchdog.escape import mrkdwn_link
from watchdog.logfmt import log
from watchdog.notify import actions
from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.digest import pages
from watchdog.notify.slack_blocks import digest_layout, fallback_text, menu_blocks, message_blocks, mrkdwn_body, resolved_first_message
from watchdog.redact import cut_body, redact, redact_all

if TYPE_CHECKING:
    from watchdog.notify.socket_mode import SocketHealth

logger = logging.getLogger("watchdog.slack")

# Slack refuses watchdog's credentials (a bot token or an incoming webhook revoked, a deactivated account): no
# message is at fault, so none is given up; the outbox keeps them all and watchdog alerts about itself.
CREDENTIAL_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "invalid_token", "no_service",
    "no_team", "team_disabled",
})
# Errors of the message itself that no retry can fix: the outbox records them and shows them in status.
PERMANENT_ERRORS = frozenset({
    "no_permission",
    "missing_scope", "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
    "invalid_blocks", "too_many_attachments", "restricted_action", "ekm_access_denied", "team_access_not_granted",
    "no_service_id", "channel_is_archived", "action_prohibited",
    "posting_to_general_channel_denied", "invalid_payload",
    "message_not_found", "cant_update_message", "edit_window_closed",  # (a follow-up whose message is gone)
})
MIN_SECONDS_BETWEEN_POSTS = 1.0  # per channel, as Slack asks
TIMEOUT_SECONDS = 10
METADATA_EVENT = "watchdog_notification"  # message metadata type: event_payload {"ids": [outbox ids]}
# A lost post is looked for among the messages since its first attempt (less a margin for the two clocks'
# skew), page after page of LOOKUP_PAGE_SIZE, at most LOOKUP_MAX_PAGES pages (Slack rates conversations.history
# per minute); beyond that nothing more is found and the message is posted: at least once.
LOOKBACK_MARGIN = timedelta(minutes=5)
LOOKUP_PAGE_SIZE = 200
LOOKUP_MAX_PAGES = 25
DEFAULT_RETRY_AFTER = 30.0  # a 429 without Retry-After pauses this long


def find_held(messages: Any, wanted: Sequence[int]) -> dict[int, tuple[str, int]]:
    """Which of the outbox ids ``wanted`` Slack's ``messages`` carry in their watchdog metadata.

    Returns id -> (ts of the message carrying it, how many ids that message
    carries). Total: any answer (Slack's is untrusted data) gives a mapping.
    """
    found: dict[int, tuple[str, int]] = {}
    if not isinstance(messages, list):
        return found
    wanted_ids = set(wanted)
    for message in messages:
        meta = message.get("metadata") if isinstance(message, dict) else None
        payload = meta.get("event_payload") if isinstance(meta, dict) and meta.get("event_type") == METADATA_EVENT else None
        ids = payload.get("ids") if isinstance(payload, dict) else None
        ts = message.get("ts") if isinstance(message, dict) else None
        if not (isinstance(ids, list) and isinstance(ts, str) and ts):
            continue
        carried = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
        for i in carried:
            if i in wanted_ids:
                found.setdefault(i, (ts, len(carried)))
    return found


MENUS_PER_REPLY = 45  # alerts (one section each) per reply of a digest whose menus did not all fit in it


def _menu_replies(menus: list[dict[str, str]]) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """Follow-up entries posting the left-over menus of a digest in its thread, MENUS_PER_REPLY at a time."""
    return tuple(("menus", {"kind": "menus", "entries": menus[i:i + MENUS_PER_REPLY],
                            "text": f"Acknowledge or silence each alert of the digest above ({len(menus)} more)",
                            "title": "More alerts of this digest"})
                 for i in range(0, len(menus), MENUS_PER_REPLY))


def _classify(status: int | None, error: str, headers: Mapping[str, Any] | None) -> Delivery:
    # ``error`` may be a whole answer body (an HTML error page from a proxy): one short redacted line of it.
    error = cut_body(error)
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
    if error in CREDENTIAL_ERRORS:
        return Delivery.refusal(f"Slack refuses watchdog's credentials: {error}")
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
        self.paused: dict[tuple[str, str], float] = {}  # (method, channel or "") -> monotonic end of a Retry-After

    def paused_until(self, destination: str, kind: str) -> float:
        if kind == "update":
            return self.paused.get(("chat.update", ""), 0.0)
        return self.paused.get(("chat.postMessage", destination), 0.0)

    def _pause(self, method: str, channel: str, delivery: Delivery) -> Delivery:
        """Remember a 429's Retry-After for every later call of ``method`` on ``channel``."""
        if delivery.retryable and delivery.error and delivery.error.startswith("rate limited"):
            seconds = delivery.retry_after if delivery.retry_after is not None else DEFAULT_RETRY_AFTER
            key = (method, channel if method == "chat.postMessage" else "")
            self.paused[key] = max(self.paused.get(key, 0.0), time.monotonic() + seconds)
            log(logger, logging.WARNING, "Slack asked to wait", method=method, channel=key[1] or None, seconds=seconds)
        return delivery

    @staticmethod
    def _metadata(note: Notification) -> dict[str, Any]:
        return {"event_type": METADATA_EVENT, "event_payload": {"ids": list(note.ids or (note.id,))}}

    def held(self, note: Notification, thread: Mapping[str, Any] | None) -> dict[int, Delivery]:
        """Every id of ``note`` that a message in the channel (or the thread) already carries, with its delivery.

        A message carrying several ids is a digest (its thread is a digest
        thread); one carrying a single id is that notification itself. When
        the channel cannot be read (no history scope, Slack down) nothing is
        found and the message is posted: at least once.
        """
        if self.client is None or note.kind == "update":  # (a webhook cannot look; an update is idempotent)
            return {}
        reply = thread is not None and "ts" in thread
        channel = str(thread["channel"]) if thread is not None and reply else self.destination(note.payload)
        if not channel:
            return {}
        try:
            messages = self._messages_since(note, channel, str(thread["ts"]) if reply and thread is not None else None)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log(logger, logging.WARNING, "cannot check whether Slack already holds a notification", id=note.id,
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return {}
        parts = {p.id: p for p in note.parts} or {note.id: note}
        out: dict[int, Delivery] = {}
        for wanted, (ts, carried) in find_held(messages, note.ids or (note.id,)).items():
            part = parts.get(wanted, note)
            if reply:
                assert thread is not None
                out[wanted] = Delivery.sent(follow_ups=self._rewrite(note, thread) if len(note.ids) <= 1 else ())
            else:
                first = {"kind": "digest"} if carried > 1 else dict(part.payload)  # (a digest's is never rewritten)
                out[wanted] = Delivery.sent({"channel": channel, "ts": ts, "first": first})
        return out

    def _messages_since(self, note: Notification, channel: str, thread_ts: str | None) -> list[Any]:
        """The messages of ``channel`` (or of the thread ``thread_ts``) since shortly before ``note``'s first
        attempt, page after page until every id of ``note`` is found or the last page, at most LOOKUP_MAX_PAGES;
        raises what the Slack client raises."""
        assert self.client is not None
        since = note.since - LOOKBACK_MARGIN if note.since is not None else None
        oldest = f"{since.timestamp():.6f}" if since is not None else None
        wanted = note.ids or (note.id,)
        found: list[Any] = []
        cursor: str | None = None
        for _ in range(LOOKUP_MAX_PAGES):
            args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": LOOKUP_PAGE_SIZE,
                                    **({"oldest": oldest} if oldest else {}), **({"cursor": cursor} if cursor else {})}
            answer = (self.client.conversations_replies(ts=thread_ts, **args) if thread_ts is not None
                      else self.client.conversations_history(**args))
            page = answer.get("messages")
            found.extend(page if isinstance(page, list) else ())
            meta = answer.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not (isinstance(cursor, str) and cursor) or len(find_held(found, wanted)) == len(set(wanted)):
                return found  # (the last page, or every id found: no further call, none to be rate limited)
        log(logger, logging.WARNING, "lookup of a lost Slack post stopped at its page limit; older messages unread",
            id=note.id, channel=channel, pages=LOOKUP_MAX_PAGES, messages=len(found))
        return found

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

    def _with_link(self, note: Notification) -> Notification:
        """A link reply (see ``dependencies``) with the address of the thread it links to, when Slack gives one."""
        ref = note.payload.get("link")
        if self.client is None or not isinstance(ref, Mapping) or "ts" not in ref or "channel" not in ref:
            return note
        try:
            answer = self.client.chat_getPermalink(channel=str(ref["channel"]), message_ts=str(ref["ts"]))
            permalink = answer.get("permalink")
        except (SlackApiError, SlackClientError, OSError) as exc:  # the reply still names the upstream alert
            log(logger, logging.WARNING, "cannot get a thread's link", id=note.id, error=type(exc).__name__)
            return note
        if not isinstance(permalink, str) or not permalink.startswith("https://"):
            return note
        link = mrkdwn_link(permalink, "its thread")
        body = f"{note.payload.get('body_mrkdwn', '')} ({link})" if link else note.payload.get("body_mrkdwn", "")
        return replace(note, payload={**note.payload, "body_mrkdwn": body, "permalink": permalink})

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        if note.kind == "link":
            note = self._with_link(note)
        payload = note.payload
        # The last sink before Slack: no secret in any text (error messages quote connection strings).
        text = redact(fallback_text(payload, None if thread else self._mention(payload)))
        menus: list[dict[str, str]] = []  # digest alerts whose menus did not fit: replies in its thread
        if note.kind == "digest":
            layout, menus = digest_layout(payload, menus=self._menus_live())
            blocks = redact_all(layout) + self._digest_note(payload)
        elif note.kind == "menus":
            blocks = redact_all(menu_blocks(payload.get("entries") or []))
        else:
            blocks = redact_all(message_blocks(payload)) + self._buttons(note)
        try:
            if self.webhook is not None:
                if note.kind == "update":  # (left from a token configuration: a webhook cannot rewrite)
                    return Delivery.sent()
                self._pace("webhook")
                response = self.webhook.send(text=text, blocks=blocks)
                if response.status_code == 200:
                    return Delivery.sent()
                return _classify(response.status_code, response.body, response.headers)
            assert self.client is not None
            if note.kind == "update":
                return self._update(note)
            channel = str(payload.get("channel") or self.config.channel or "")
            if thread is not None and "ts" in thread:
                return self._reply(note, thread, text, blocks)
            if not channel:
                return Delivery.failed("no Slack channel: set slack.channel in the config or notify.slack.channel in the rule")
            first = {"kind": "digest"} if note.kind == "digest" else dict(payload)  # (a digest's is never rewritten)
            self._pace(self.destination(payload))
            answer = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False,
                                                  metadata=self._metadata(note))
            return Delivery.sent({"channel": answer["channel"], "ts": answer["ts"], "first": first},
                                 follow_ups=_menu_replies(menus))
        except SlackApiError as exc:
            response = exc.response
            method = "chat.update" if note.kind == "update" else "chat.postMessage"
            return self._pause(method, self.destination(payload), _classify(
                response.status_code, str(response.get("error", "")) if isinstance(response.data, dict)
                else str(response.data), response.headers))
        except (SlackClientError, OSError, TimeoutError) as exc:
            return Delivery.retry(f"cannot reach Slack: {type(exc).__name__}: {cut_body(str(exc))}")

    def _menus_live(self) -> bool:
        """Whether a digest's alerts get their Acknowledge and Silence menus (Socket Mode is on and connected)."""
        return self.socket is not None and self.client is not None and self.socket.connected

    def _digest_note(self, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Under a digest with firing alerts while Socket Mode is down: why there are no menus."""
        if self.socket is None or self.client is None or self.socket.connected:
            return []
        if any(e.get("episode") for r in payload.get("rules") or () for e in r.get("entries") or ()):
            return [actions.unavailable_note()]
        return []

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

    def _rewrite(self, note: Notification, thread: Mapping[str, Any]) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        """The follow-up a resolution calls for: rewriting its thread's first message (never a digest's)."""
        first_kind = (thread.get("first") or {}).get("kind")
        if note.kind not in ("resolved", "recovered") or first_kind == "digest" or (thread.get("first") or {}).get("groups"):
            return ()  # (a digest stays as it is: its other alerts may still fire)
        first = dict(thread.get("first") or {})
        first.update({"kind": note.kind, "title": note.payload.get("title"), "at": note.payload.get("at"),
                      "resolution_mrkdwn": mrkdwn_body(note.payload)})
        return (("update", {"channel": str(thread["channel"]), "ts": str(thread["ts"]), "first": first,
                            "text": fallback_text(note.payload), "rule": note.rule, "title": note.payload.get("title")}),)

    def _reply(self, note: Notification, thread: Mapping[str, Any], text: str, blocks: list[dict[str, Any]]) -> Delivery:
        assert self.client is not None
        # The rewrite is its own outbox entry, recorded with this reply: the reply is marked sent the moment Slack
        # accepts it.
        self._pace(self.destination(note.payload))
        self.client.chat_postMessage(channel=str(thread["channel"]), thread_ts=str(thread["ts"]), text=text,
                                     blocks=blocks, unfurl_links=False, metadata=self._metadata(note))
        return Delivery.sent(follow_ups=self._rewrite(note, thread))

    def _update(self, note: Notification) -> Delivery:
        """Rewrite a thread's first message (a follow-up entry): idempotent, so retried like any other."""
        assert self.client is not None
        payload = note.payload
        self.client.chat_update(channel=str(payload.get("channel", "")), ts=str(payload.get("ts", "")),
                                text=redact(str(payload.get("text", ""))),
                                blocks=redact_all(resolved_first_message(dict(payload.get("first") or {}))))
        return Delivery.sent()
