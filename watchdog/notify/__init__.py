"""Notifiers: where rendered notifications go (console, Slack), behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchdog.notify.base import Notifier

if TYPE_CHECKING:
    from watchdog.config import Config
    from watchdog.notify.routing import Router
    from watchdog.notify.socket_mode import SocketHealth


def build_notifier(config: Config, socket: SocketHealth | None = None) -> Notifier:
    """The Slack notifier when the config has a ``slack`` block, else the console.

    ``socket`` is the Socket Mode connection's health when buttons are on.
    """
    if config.slack is not None:
        from watchdog.notify.slack import SlackNotifier

        return SlackNotifier(config.slack, socket)
    from watchdog.notify.console import ConsoleNotifier

    return ConsoleNotifier()


def build_router(config: Config) -> Router:
    """The config's routes with its receivers and time intervals; unmatched notifications go to slack, else console."""
    from watchdog.notify.routing import Router

    types = {"slack": "slack", "console": "console", **{name: r.type for name, r in config.receivers.items()}}
    return Router(config.routes, config.time_intervals, types, "slack" if config.slack is not None else "console")


def build_receivers(config: Config) -> dict[str, Notifier]:
    """A notifier per receiver besides the main one (its outbox key: the receiver's name); ``console`` too when
    Slack is the main notifier (a route may name it)."""
    from watchdog.notify.email import EmailNotifier
    from watchdog.notify.pagerduty import PagerDutyNotifier
    from watchdog.notify.receivers import EmailReceiver, PagerDutyReceiver
    from watchdog.notify.webhook import WebhookNotifier

    out: dict[str, Notifier] = {}
    for name, receiver in config.receivers.items():
        if isinstance(receiver, PagerDutyReceiver):
            out[name] = PagerDutyNotifier(receiver)
        elif isinstance(receiver, EmailReceiver):
            out[name] = EmailNotifier(receiver)
        else:
            out[name] = WebhookNotifier(receiver)
    if config.slack is not None and any("console" in route.receivers for route in config.routes):
        from watchdog.notify.console import ConsoleNotifier

        out["console"] = ConsoleNotifier()
    return out
