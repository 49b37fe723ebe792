"""What is wrong with a config or rule file, said so an on-call engineer can fix it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from watchdog.yamlfile import Document, Path, YamlError

MAX_MESSAGE = 500


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def format_path(path: Path) -> str:
    """``('checks', 0, 'table')`` as ``checks[0].table``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True, order=True)
class Problem:
    """One error in one file, with where it stands and the key path."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __post_init__(self) -> None:
        # A message quotes values from the file; a megabyte-long key or name must not make a megabyte-long log line.
        if len(self.message) > MAX_MESSAGE:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE - 3] + "...")
        if len(self.path) > MAX_MESSAGE:
            object.__setattr__(self, "path", self.path[: MAX_MESSAGE - 3] + "...")

    @classmethod
    def at(cls, doc: Document, path: Path, message: str, *, key: bool = False) -> Problem:
        pos = doc.position(path, key=key)
        return cls(doc.filename, pos.line, pos.column, format_path(path), message)

    @classmethod
    def from_yaml_error(cls, exc: YamlError) -> Problem:
        return cls(exc.filename, exc.position.line, exc.position.column, format_path(exc.path), exc.message)

    @classmethod
    def whole_file(cls, filename: str, message: str) -> Problem:
        return cls(filename, 1, 1, "", message)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidFileError(Exception):
    """Raised when a file fails validation; carries every problem found in it."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
