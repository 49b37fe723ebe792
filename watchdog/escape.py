"""Escaping at the sink: one function per place text goes, so data is never markup there.

Data (group values, sample events, values, task messages, error texts) comes
from people who must not control watchdog's output: anyone who can make the
application log a string, and the APIs we query. Each sink has exactly one
function that every piece of data passes through on its way out:

==================  =====================================================
sink                function
==================  =====================================================
Slack mrkdwn        ``mrkdwn`` (one line; entities, formatting characters,
                    a leading ``>`` and emoji codes made inert; and
                    ``mrkdwn_code`` for code blocks, ``mrkdwn_link`` for
                    a link whose target is ours)
Slack plain_text    ``plain_text`` (headers: one line, entities escaped)
logs (logfmt)       ``logfmt_value`` (control and separator characters
                    escaped, so a line is always one line)
terminal            ``terminal`` (``status``, ``test-rule``, ``validate``)
SQLite              ``storable`` (any string, lone surrogates included)
==================  =====================================================

The rule author's own ``message`` template and links are the only markup;
everything filled into them is escaped (see ``notify.render``). Lengths are cut
by ``cut`` / ``cut_mrkdwn`` on character boundaries, never inside an entity,
a link or a code block. Every function here is total: any ``str`` in, a
``str`` out, never an exception.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Callable

ELLIPSIS = "…"
FENCE = "```"
# Shown instead of a backtick inside a code block, so data can never close the fence.
BACKTICK_STAND_IN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT, which looks the same
_ZWJ = "\u200d"


def storable(text: str) -> str:
    """``text`` as well-formed Unicode: each lone surrogate becomes U+FFFD.

    Python strings may hold lone surrogates (JSON's ``"\\ud800"`` decodes to
    one); UTF-8 (SQLite, Slack's JSON, the terminal) cannot. A surrogate pair
    split into two code points is joined again.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _char_escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_LOGFMT_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(text: str) -> str:
    """``text`` as one logfmt value: bare when it is plain, else quoted with escapes.

    Backslash, double quote, ``\\n``, ``\\r`` and ``\\t`` are escaped by name;
    every other character that is not printable (C0/C1 controls, ESC, U+2028,
    U+2029, NEL, bidi overrides, zero-width characters, lone surrogates, other
    separators) as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. A bare value holds
    no space, ``=``, quote or backslash, so the line cannot be split or
    extended by data. ``logfmt_decode`` reverses it.
    """
    out = []
    plain = bool(text)
    for char in text:
        named = _LOGFMT_NAMED.get(char)
        if named is not None:
            out.append(named)
            plain = False
        elif char == " " or char == "=":
            out.append(char)
            plain = False
        elif not char.isprintable():
            out.append(_char_escape(char))
            plain = False
        else:
            out.append(char)
    joined = "".join(out)
    return joined if plain else f'"{joined}"'


def logfmt_key(key: str) -> str:
    """A logfmt key: letters, digits, ``_``, ``.`` and ``-``; anything else becomes ``_``."""
    cleaned = "".join(c if (c.isascii() and (c.isalnum() or c in "_.-")) else "_" for c in key)
    return cleaned or "_"


def logfmt_decode(line: str) -> dict[str, str]:
    """The key/value pairs of one logfmt line written by ``logfmt_value`` (for tests and tools).

    Raises ValueError for a line this module could not have written.
    """
    fields: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        eq = line.index("=", i)
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    kind = line[i + 1]
                    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}.get(kind)
                    if simple is not None:
                        value.append(simple)
                        i += 2
                        continue
                    width = {"x": 2, "u": 4, "U": 8}[kind]
                    value.append(chr(int(line[i + 2:i + 2 + width], 16)))
                    i += 2 + width
                    continue
                value.append(line[i])
                i += 1
            i += 1
            fields[key] = "".join(value)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            fields[key] = line[i:end]
            i = end
        if i < n:
            if line[i] != " ":
                raise ValueError(f"expected a space at {i}")
            i += 1
    return fields


def terminal(text: str) -> str:
    """``text`` safe to print on a terminal: every non-printable character shown as an escape.

    Newlines, carriage returns, ESC (colour and cursor sequences), U+2028 and
    friends, bidi overrides and lone surrogates become ``\\n``, ``\\x1b``,
    ``\\u2028``...; so data always stays on the line it was printed on and
    cannot restyle or rewrite the screen. Printable text is unchanged.
    """
    return _replace_unprintable(text, lambda char: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
                                or _char_escape(char))


def _replace_unprintable(text: str, shown: Callable[[str], str]) -> str:
    """``text`` with each non-printable character replaced by ``shown(char)``; printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else shown(char) for char in text)


# Slack has no escape for its formatting characters, so where data could open or close formatting they are
# shown as characters that look the same (as a backtick inside a code block already is).
FORMATTING_STAND_INS = {"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": BACKTICK_STAND_IN}
QUOTE_STAND_IN = "\u02c3"  # MODIFIER LETTER RIGHT ARROWHEAD: a '>' that cannot start a block quote
EMOJI_COLON = "\u2236"  # RATIO: a ':' that cannot start an emoji code (':rotating_light:')
NEWLINE_SHOWN = "\u23ce"  # RETURN SYMBOL: a line break in data, shown, not obeyed
_EMOJI_START = re.compile(r":(?=[a-z0-9_+'-]*[a-z][a-z0-9_+'-]*:)", re.IGNORECASE)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def shown_on_one_line(text: str) -> str:
    """``text`` with every line break shown as ⏎ and every other non-printable character as ``\u001b``.

    For single-line places (a Slack field, a header, a line of a message):
    data can neither start a line nor send a control character. Lone
    surrogates become U+FFFD.
    """
    def shown(char: str) -> str:
        code = ord(char)
        return NEWLINE_SHOWN if char == "\n" else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return _replace_unprintable(storable(text), shown)


def _word(text: str, at: int) -> bool:
    """Whether ``text[at]`` exists and is an ASCII letter or digit (formatting cannot start or end beside one)."""
    return 0 <= at < len(text) and text[at].isascii() and text[at].isalnum()


def mrkdwn(text: str) -> str:
    """``text`` as inert Slack mrkdwn, on one line: what Slack shows is the text, never markup.

    - ``&``, ``<`` and ``>`` become entities, so no data can mention
      (``<!channel>``, ``<@U123>``), link (``<https://...|label>``) or date;
    - every backtick, and ``*``, ``_`` and ``~`` where they could open or
      close formatting (not between two ASCII letters or digits:
      ``fact_logins_daily`` stays as it is), are shown by look-alikes (U+2217, U+02CD, U+223C, U+02CB),
      since Slack has no escape;
    - a ``>`` that starts the value (which may start a line: a block quote)
      is shown as U+02C3, and a ``:`` that starts an emoji code as U+2236;
    - line breaks are shown as ⏎ and other control characters as
      ``\u001b`` (see ``shown_on_one_line``): data never starts a line.
    """
    text = shown_on_one_line(text)
    out = []
    leading = True  # only spaces so far: a '>' here would start a block quote
    for at, char in enumerate(text):
        stand_in = FORMATTING_STAND_INS.get(char)
        if stand_in is not None and (char == "`" or not (_word(text, at - 1) and _word(text, at + 1))):
            out.append(stand_in)
        elif char == ">" and leading:
            out.append(QUOTE_STAND_IN)
        else:
            out.append(_ENTITIES.get(char, char))
        leading = leading and char.isspace()
    return _EMOJI_START.sub(EMOJI_COLON, "".join(out))


def plain_text(text: str) -> str:
    """``text`` for a Slack ``plain_text`` object (a header): one line, entities escaped.

    Line breaks are shown as ⏎ and other control characters as ``\u001b``
    (a header is one line); ``&``, ``<``, ``>`` are escaped as Slack asks for
    every text object.
    """
    return "".join(_ENTITIES.get(c, c) for c in shown_on_one_line(text))


def mrkdwn_code(text: str, limit: int) -> str:
    """``text`` as a Slack code block of at most ``limit`` characters that nothing inside can close.

    Backticks inside become U+02CB (which looks the same), so no run of three
    can end the block early; line breaks stay (a code block shows them as
    such, inside the block), other control characters are shown as
    ``\u001b``; the content is cut before it is fenced.
    """
    lines = [shown_on_one_line(line) for line in storable(text).split("\n")]
    inner = "".join(_ENTITIES.get(c, c) for c in "\n".join(lines)).replace("`", BACKTICK_STAND_IN)
    return FENCE + cut_mrkdwn(inner, max(1, limit - 2 * len(FENCE))) + FENCE


_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7f) if chr(c) not in '<>|"`{}\\^')


def mrkdwn_link(url: str, label: str) -> str:
    """A Slack link ``<url|label>`` for a URL we built or the rule author wrote.

    Characters that would end the link (``>``, ``|``), spaces, controls and
    non-ASCII are percent-encoded in the URL; the label is escaped as data.
    """
    target = urllib.parse.quote(storable(url), safe=_URL_SAFE + "%").replace("&", "&amp;")
    return f"<{target}|{mrkdwn(label)}>"


def _boundary(text: str, at: int) -> int:
    """The largest index <= ``at`` that does not split a combining sequence or a ZWJ emoji."""
    while 0 < at < len(text) and (unicodedata.combining(text[at]) or text[at - 1] == _ZWJ or text[at] == _ZWJ
                                  or "\ufe00" <= text[at] <= "\ufe0f"):
        at -= 1
    return at


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long, cut on a character boundary with "…" when shortened."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[:_boundary(text, limit - 1)] + ELLIPSIS


def cut_mrkdwn(text: str, limit: int) -> str:
    """Escaped mrkdwn ``text`` at most ``limit`` characters long, never cut inside markup.

    The cut backs off to before an entity (``&amp;``) or a link / mention
    (``<...>``) it would split, and closes a code block it would leave open.
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    at = _safe_point(text, limit - 1)
    if text[:at].count(FENCE) % 2 == 1:  # inside a code block: keep room to close it
        at = _safe_point(text, max(0, limit - 1 - len(FENCE)))
        while at > 0 and text[at - 1] == "`":  # never end on part of a fence
            at -= 1
        if text[:at].count(FENCE) % 2 == 1:
            return text[:at] + ELLIPSIS + FENCE
    return text[:at] + ELLIPSIS


def _safe_point(text: str, at: int) -> int:
    """The largest index <= ``at`` outside any entity, link or combining sequence."""
    at = _boundary(text, at)
    amp = text.rfind("&", 0, at)
    if amp >= 0 and ";" not in text[amp:at]:
        at = amp
    lt = text.rfind("<", 0, at)
    if lt >= 0 and ">" not in text[lt:at]:
        at = lt
    return at
