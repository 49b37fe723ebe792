"""``${NAME}`` and ``${NAME:-default}`` in YAML values, replaced from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from watchdog.problems import Problem
from watchdog.yamlfile import Document, Path

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(doc: Document, environ: Mapping[str, str], allowed: frozenset[str] | None = None,
                refused: str = "") -> list[Problem]:
    """Replace variables in every string of ``doc.data`` in place.

    ``$$`` stands for a literal ``$``. Returns a Problem for each variable
    that is not set and has no default; such values are left as written.
    With ``allowed`` (rule files), only those names are read from
    ``environ``: any other is a Problem saying ``refused`` (why, and how to
    allow it), and its value, set or not, is never read.
    """
    found: list[Problem] = []

    def substitute(text: str, path: Path) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if allowed is not None and name not in allowed:
                found.append(Problem.at(doc, path, f"environment variable '{name}' is not available to rules: "
                                                   + refused))
                return match.group(0)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            found.append(Problem.at(doc, path, f"environment variable '{name}' is not set: set it for watchdog "
                                              f"(e.g. in /etc/watchdog/watchdog.env), or give a default: ${{{name}:-value}}"))
            return match.group(0)

        return _VARIABLE.sub(replace, text) if "$" in text else text

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, str):
            return substitute(value, path)
        if isinstance(value, dict):
            for key in list(value):
                value[key] = walk(value[key], path + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = walk(item, path + (index,))
        return value

    doc.data = walk(doc.data, ())
    return found
