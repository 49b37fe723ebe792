"""Receivers: the named destinations of ``receivers:`` in the config, as small typed objects.

``slack`` (the ``slack:`` block) and ``console`` always exist; the config
adds PagerDuty, signed webhooks and email. Built once from validated YAML
(secrets already read from their ``*_file``); nothing else reads raw dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from watchdog.durations import parse_duration

BUILTIN_RECEIVERS = ("slack", "console")
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_RECEIVER_TIMEOUT = timedelta(seconds=10)
DEFAULT_SMTP_PORT = 587
DEFAULT_SMTPS_PORT = 465
# PagerDuty's Events API v2 accepts 120 events a minute per routing key (429 beyond).
PAGERDUTY_EVENTS_PER_MINUTE = 120


@dataclass(frozen=True)
class PagerDutyReceiver:
    """PagerDuty Events API v2: trigger, acknowledge and resolve, one dedup_key per alert episode."""

    name: str
    routing_key: str = field(repr=False)
    url: str = DEFAULT_PAGERDUTY_URL
    timeout: timedelta = DEFAULT_RECEIVER_TIMEOUT
    events_per_minute: int = PAGERDUTY_EVENTS_PER_MINUTE
    type: str = "pagerduty"


@dataclass(frozen=True)
class WebhookReceiver:
    """A JSON POST (see ``notify.webhook``), signed with HMAC-SHA256 when a secret is given."""

    name: str
    url: str = field(repr=False)  # may carry a token in its query
    secret: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: timedelta = DEFAULT_RECEIVER_TIMEOUT
    group_wait: timedelta = timedelta(0)
    type: str = "webhook"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int = DEFAULT_SMTP_PORT
    starttls: bool = True  # upgrade the connection (port 587)
    tls: bool = False  # TLS from the first byte (port 465)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: timedelta = DEFAULT_RECEIVER_TIMEOUT
    ca_certs: str | None = None  # verify the server against these instead of the system's


@dataclass(frozen=True)
class EmailReceiver:
    """One message per notification or digest, threaded per episode (see ``notify.email``)."""

    name: str
    smtp: SmtpServer
    from_: str
    to: tuple[str, ...]
    group_wait: timedelta = timedelta(0)
    type: str = "email"


Receiver = PagerDutyReceiver | WebhookReceiver | EmailReceiver


def parse_receiver(name: str, raw: Mapping[str, Any], base_dir: str = "") -> Receiver:
    """One receiver from validated YAML (its ``*_file`` secrets already read into the plain keys)."""
    kind = raw["type"]
    timeout = parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_RECEIVER_TIMEOUT
    group_wait = parse_duration(raw["group_wait"]) if "group_wait" in raw else timedelta(0)
    if kind == "pagerduty":
        return PagerDutyReceiver(name=name, routing_key=str(raw.get("routing_key", "")), url=raw.get("url", DEFAULT_PAGERDUTY_URL),
                                 timeout=timeout)
    if kind == "webhook":
        return WebhookReceiver(name=name, url=raw["url"], secret=raw.get("secret"),
                               headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
                               timeout=timeout, group_wait=group_wait)
    smtp = raw["smtp"]
    tls = bool(smtp.get("tls", False))
    return EmailReceiver(
        name=name, from_=raw["from"], to=tuple(raw["to"]), group_wait=group_wait,
        smtp=SmtpServer(host=smtp["host"], port=int(smtp.get("port", DEFAULT_SMTPS_PORT if tls else DEFAULT_SMTP_PORT)),
                        starttls=bool(smtp.get("starttls", not tls)), tls=tls, username=smtp.get("username"),
                        password=smtp.get("password"), timeout=timeout,
                        ca_certs=os.path.join(base_dir, smtp["ca_certs"]) if "ca_certs" in smtp else None))


def receiver_secrets(receiver: Receiver) -> list[str | None]:
    """The secret values ``receiver`` holds, for ``redact.register``."""
    if isinstance(receiver, PagerDutyReceiver):
        return [receiver.routing_key]
    if isinstance(receiver, WebhookReceiver):
        return [receiver.secret, receiver.url if "?" in receiver.url else None]
    return [receiver.smtp.password]
