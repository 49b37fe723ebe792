"""A black-holed endpoint: a listening TCP socket that accepts connections (in the kernel's backlog) and never answers."""

from __future__ import annotations

import socket


class BlackHole:
    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(128)  # never accept(): connecting succeeds, every request waits forever
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.socket.close()
