"""The systemd notify protocol over ``$NOTIFY_SOCKET`` (standard library only).

READY, RELOADING, STOPPING and STATUS tell systemd what the daemon is doing;
WATCHDOG pings, sent by the scheduler loop itself, tell it the loop is alive
(a hung loop stops pinging and systemd restarts the service).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends notify messages; does nothing when not started by systemd with Type=notify."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address:
            # A leading "@" is an abstract socket, written with a NUL byte.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket: socket.socket | None = None
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.ping_every = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() and ours else None
        self.last_ping = 0.0

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.socket.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the reload to this message.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ping(self) -> None:
        """A WATCHDOG=1 ping when one is due."""
        if self.ping_every is None:
            return
        now = time.monotonic()
        if now - self.last_ping >= self.ping_every:
            self.last_ping = now
            self.send("WATCHDOG=1")

    def seconds_until_ping(self) -> float | None:
        if self.ping_every is None:
            return None
        return max(0.0, self.last_ping + self.ping_every - time.monotonic())

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
