"""Notifiers: where rendered notifications go (console, Slack), behind one interface."""

from __future__ import annotations

from watchdog.config import Config
from watchdog.notify.base import Notifier


def build_notifier(config: Config) -> Notifier:
    """The Slack notifier when the config has a ``slack`` block, else the console."""
    if config.slack is not None:
        from watchdog.notify.slack import SlackNotifier

        return SlackNotifier(config.slack)
    from watchdog.notify.console import ConsoleNotifier

    return ConsoleNotifier()
