"""Notifiers: where rendered notifications go (console, Slack), behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchdog.config import Config
from watchdog.notify.base import Notifier

if TYPE_CHECKING:
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
