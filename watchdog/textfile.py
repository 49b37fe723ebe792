"""Reading the small text files that configure watchdog: bounded, non-blocking, regular files only.

Rule files, the config file and every file they name (``sql_file``, the
``*_file`` secrets) are read through ``read_text``. Whatever sits at the path
(a FIFO with no writer, ``/dev/zero``, a 50 MB file, a directory, bytes that
are not UTF-8), the read finishes at once with the text or with an
UnreadableFile naming the problem, so one bad file can never block or
exhaust the daemon.
"""

from __future__ import annotations

import os
import stat

# Rule and config files are a few kilobytes; a megabyte is far beyond any real one.
MAX_FILE_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(Exception):
    """A file that cannot be used as text, with a message for the user and, when known, where in it."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _size_text(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MiB"


def read_bytes(path: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (symbolic links followed), at most ``limit`` of them.

    Raises UnreadableFile when the path does not exist or cannot be opened
    (the system's reason), is not a regular file (a FIFO, a device, a
    directory: never opened in a way that could block), or holds more than
    ``limit`` bytes.
    """
    try:
        before = os.stat(path)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(before.st_mode):
        raise UnreadableFile(f"not a regular file: it is {_kind(before.st_mode)}")
    too_large = UnreadableFile(f"file too large: over {_size_text(limit)}")
    if before.st_size > limit:
        raise too_large
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO between stat and open, open returns at once
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise UnreadableFile(f"not a regular file: it is {_kind(after.st_mode)}")
        chunks: list[bytes] = []
        size = 0
        while True:  # a file that grows while it is read still stops at the limit
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise too_large
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def decode(data: bytes) -> str:
    """``data`` as UTF-8 text (a leading byte order mark dropped).

    Raises UnreadableFile naming the line and column of the first byte that
    is not UTF-8.
    """
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise UnreadableFile(f"not UTF-8 text: byte 0x{data[start]:02x} at line {line}, column {column} "
                             "(save the file as UTF-8)", line, column) from None


def read_text(path: str, *, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path``; see ``read_bytes`` and ``decode`` for what is raised."""
    return decode(read_bytes(path, limit=limit))
