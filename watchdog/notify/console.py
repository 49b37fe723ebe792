"""The console notifier: one key=value line per notification on standard output."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from watchdog.logfmt import logfmt
from watchdog.notify.base import Delivery, Notification, Notifier


class ConsoleNotifier(Notifier):
    name = "console"

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        p = note.payload
        line = logfmt(notification=note.kind, rule=note.rule, group=note.group or None, severity=p.get("severity"),
                      value=p.get("value"), text=note.text,
                      description=(p.get("description") or None) if note.kind in ("firing", "error") else None)
        stream = self.stream or sys.stdout
        try:
            print(line, file=stream, flush=True)
        except OSError as exc:
            return Delivery.retry(f"cannot write to standard output: {exc}")
        return Delivery.sent({"console": True} if thread is None else None)
