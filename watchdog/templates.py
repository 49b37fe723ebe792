"""Message templates: ``"{count} errors in {window} for {group}"``.

A placeholder is a plain name with at most a small format specification
(alignment, sign, a width and a precision of at most two digits, a type):
``{count}``, ``{value:.1f}``, ``{group:>12}``. Attribute and index access
(``{description.__class__}``, ``{labels[team]}``), conversions (``!r``) and
nested or long specifications are refused when the rule is loaded, so a
template can neither reach into objects nor render a line of a hundred
megabytes.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

MAX_WIDTH_DIGITS = 2  # widths and precisions up to 99
_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_SPEC = re.compile(r"(?:[^{}]?[<>=^])?[-+ ]?z?#?0?(?:[0-9]{1,2})?[,_]?(?:\.[0-9]{1,2})?[bcdeEfFgGnosxX%]?\Z")
_LITERAL_BRACES = "write {{ and }} for literal braces"


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    return list(string.Formatter().parse(template))


def problems(template: str, known: frozenset[str]) -> list[str]:
    """What is wrong with ``template`` when the placeholders in ``known`` are available; empty when it is fine."""
    try:
        parts = _parse(template)
    except ValueError as exc:
        return [f"bad template: {exc} ({_LITERAL_BRACES})"]
    found: list[str] = []
    unknown: set[str] = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = name if len(name) <= 40 else name[:40] + "..."
        if not _NAME.match(name):
            found.append(f"placeholder '{{{shown}}}' is not a plain name: write e.g. {{count}} "
                         "(no attribute access, indexes or positions)")
        elif name not in known:
            unknown.add(name)
        if conversion is not None:
            found.append(f"placeholder '{{{shown}!{conversion}}}': conversions such as !r are not supported")
        if spec and not _SPEC.match(spec):
            spec_shown = spec if len(spec) <= 40 else spec[:40] + "..."
            found.append(f"placeholder '{{{shown}:{spec_shown}}}': the format must be a short one such as "
                         f":>8, :.2f or :,d (widths and precisions of at most {MAX_WIDTH_DIGITS} digits)")
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean '{{{close[0]}}}'?)" if close else f" (known: {', '.join(sorted(known))})"
        found.append(f"unknown placeholder '{{{name}}}'{hint}")
    return found


def render(template: str, values: Mapping[str, Any], plain: Callable[[Any], str] = str,
           escape: Callable[[str], str] | None = None) -> str:
    """``template`` with its placeholders filled from ``values``.

    ``plain`` formats a value that has no format specification; ``escape``
    (e.g. ``escape.mrkdwn``), when given, is applied to every filled value,
    never to the template's own text (the author's markup). A
    placeholder that is unknown or not allowed stays as written; a format
    that does not suit the value (``{group:.2f}`` of a name) gives the plain
    value. Raises only what ``plain`` or ``escape`` raise (the engine's guard
    puts a rule whose values cannot be shown in error).
    """
    try:
        parts = _parse(template)
    except ValueError:
        return template
    out: list[str] = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not _NAME.match(name) or conversion is not None or (spec and not _SPEC.match(spec)) or name not in values:
            out.append(written)
            continue
        value = values[name]
        try:
            filled = format(value, spec) if spec else plain(value)
        except (ValueError, TypeError):
            filled = plain(value)
        out.append(escape(filled) if escape is not None else filled)
    return "".join(out)
