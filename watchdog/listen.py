"""Listen addresses (``127.0.0.1:9464``, ``[::1]:9464``, ``localhost:9464``), parsed once.

The config schema checks ``metrics.listen`` with ``parse_listen`` (its
``x-listen`` keyword), so every address that validates is one the metrics
server can bind.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

_FORM = "give host:port, e.g. 127.0.0.1:9464, [::1]:9464 or localhost:9464"


@dataclass(frozen=True)
class ListenAddress:
    """An IP address literal and a TCP port (1-65535), with the socket family that binds it."""

    host: str
    port: int
    family: socket.AddressFamily

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """``text`` as a ListenAddress; ``localhost`` stands for 127.0.0.1.

    Raises ValueError saying what is wrong: no port, a port outside
    1-65535, or a host that is neither an IP address nor ``localhost``.
    """
    shown = text if len(text) <= 80 else text[:80] + "..."
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"'{shown}' has no port ({_FORM})")
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"'{shown}': the port must be a number from 1 to 65535")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if name == "localhost" and not bracketed:
        return ListenAddress("127.0.0.1", int(port_text), socket.AF_INET)
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(f"'{shown}': '{host}' is not an IP address or localhost ({_FORM})") from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"'{shown}': write an IPv6 address in brackets, e.g. [::1]:9464")
    if address.version == 4 and bracketed:
        raise ValueError(f"'{shown}': only IPv6 addresses go in brackets")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return ListenAddress(str(address), int(port_text), family)
