"""Lucene query strings checked where they are written: ``watchdog validate`` names the file, line and column.

The parser is luqum's (a full Lucene grammar, the one Elasticsearch tools
use); the search server stays the authority at run time, so a query luqum
accepts may still be refused there (an unknown field type, a bad regex), and
that shows as the rule's error. Pure: a parsed rule file in, problems out.
"""

from __future__ import annotations

import re
from typing import Any

from watchdog.problems import Problem
from watchdog.yamlfile import Document, Path

# Where a rule file holds query strings (threshold, metric, spike: ``query``; ratio also its two selectors).
QUERY_PATHS: tuple[Path, ...] = (("query",), ("numerator",), ("numerator", "query"), ("denominator",),
                                 ("denominator", "query"))
_POSITION = re.compile(r"at position (\d+)")


def query_error(query: str) -> tuple[int | None, str] | None:
    """None when luqum parses ``query``, else (0-based position when known, what is wrong)."""
    from luqum.exceptions import ParseError  # type: ignore[import-untyped]
    from luqum.parser import parser  # type: ignore[import-untyped]

    try:
        parser.parse(query)
    except ParseError as exc:
        text = str(exc).replace("Syntax error in input : ", "").replace("  ", " ").rstrip("!")
        found = _POSITION.search(text)
        if found:
            return int(found.group(1)), _POSITION.sub("", text).strip()
        if "end of expression" in text:
            return len(query), "the query ends too early (an unclosed parenthesis, bracket or quote, or a dangling operator)"
        return None, text
    except (RecursionError, ValueError, TypeError) as exc:  # (absurd nesting: not a query to send anyway)
        return None, f"cannot be parsed: {type(exc).__name__}"
    return None


def query_problems(doc: Document) -> list[Problem]:
    """A Problem for each Lucene query string of a rule file that does not parse, at its line and column."""
    found: list[Problem] = []
    data = doc.data if isinstance(doc.data, dict) else {}
    for path in QUERY_PATHS:
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value.strip():
            continue
        error = query_error(value)
        if error is None:
            continue
        offset, message = error
        pos = doc.position(path)
        column = pos.column
        if offset is not None and "\n" not in value:
            column += offset + (path in doc.quoted)  # a quoted value's first character is one column further
        found.append(Problem(doc.filename, pos.line, column, ".".join(map(str, path)),
                             f"not a valid Lucene query: {message} (in {value[:80]!r})"))
    return found

