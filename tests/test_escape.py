"""The escaping functions, one per sink: any string in, inert text out (property-based, plus the issue's values)."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.escape import (
    EMOJI_COLON,
    FENCE,
    FORMATTING_STAND_INS,
    NEWLINE_SHOWN,
    QUOTE_STAND_IN,
    cut,
    cut_mrkdwn,
    logfmt_decode,
    logfmt_key,
    logfmt_value,
    mrkdwn,
    mrkdwn_code,
    mrkdwn_link,
    plain_text,
    storable,
    terminal,
)
from watchdog.logfmt import LogfmtFormatter, logfmt
from watchdog.notify.render import render_template

HOSTILE = [
    "<!channel>", "<!here>", "<@U123>", "<https://evil.example|click here>", "```\n<!channel> now live",
    "a\x1b[31mred\x1b[0m", "x\r\n[CRITICAL] FIRING: forged", "v\x0bw", "line\u2028level=error msg=forged",
    "\u2029p\x85nel", "\u202eevil", "lone \ud800 surrogate", "\udfff", "&amp;&lt;", "k=v \"q\" \\", "", " ",
    "x" * 10_000,
]
# Any text, including lone surrogates and every control and separator character.
ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200) | st.sampled_from(HOSTILE)
LIVE = re.compile(r"<[!@#]|<https?:|<mailto:", re.IGNORECASE)


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_logfmt_value_is_one_line_that_round_trips(text: str) -> None:
    line = logfmt(a=text, b="after")
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    assert all(c.isprintable() for c in line)
    assert logfmt_decode(line) == {"a": text, "b": "after"}
    assert utf8_ok(line)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30), ANY_TEXT)
def test_logfmt_keys_cannot_add_fields(key: str, text: str) -> None:
    line = f"{logfmt_key(key)}={logfmt_value(text)}"
    assert list(logfmt_decode(line).values()) == [text]


def test_the_issues_forged_log_line_stays_inside_its_value() -> None:
    record = logging.LogRecord("watchdog", logging.INFO, __file__, 1, "transition", None, None)
    record.fields = {"rule": "r", "group": "x\r\n[CRITICAL] FIRING: forged\u2028level=error"}  # type: ignore[attr-defined]
    line = LogfmtFormatter().format(record)
    assert len(line.splitlines()) == 1
    fields = logfmt_decode(line)
    assert fields["level"] == "info" and fields["group"] == "x\r\n[CRITICAL] FIRING: forged\u2028level=error"
    assert 'group="x\\r\\n[CRITICAL] FIRING: forged\\u2028level=error"' in line


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_mrkdwn_has_no_live_markup(text: str) -> None:
    out = mrkdwn(text)
    assert "<" not in out and ">" not in out and not LIVE.search(out)
    assert re.sub(r"&(amp|lt|gt);", "", out).count("&") == 0
    assert utf8_ok(out)


# What Slack shows for a mrkdwn text, by a model stricter than Slack: it refuses (AssertionError) every character
# that could take part in formatting: a formatting character that is not between two ASCII letters or digits,
# any backtick, a '>' starting a line (a block quote), an emoji code, a mention or link.
_FORMATTING = "*_~"
_EMOJI = re.compile(r":[a-z0-9_+'-]*[a-z][a-z0-9_+'-]*:", re.IGNORECASE)


def slack_shows(text: str) -> str:
    assert "<" not in text and ">" not in text, text
    shown = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    for at, char in enumerate(shown):
        if char in _FORMATTING:
            inside_word = 0 < at < len(shown) - 1 and all(
                c.isascii() and c.isalnum() for c in (shown[at - 1], shown[at + 1]))
            assert inside_word, f"{char!r} at {at} could format: {text!r}"
    assert "`" not in shown, text
    assert not any(line.lstrip().startswith(">") for line in shown.split("\n")), text
    assert not _EMOJI.search(shown), text
    return shown


_SHOWN_AS = {**{v: k for k, v in FORMATTING_STAND_INS.items()}, QUOTE_STAND_IN: ">", EMOJI_COLON: ":",
             NEWLINE_SHOWN: "\n"}


def read_back(shown: str) -> str:
    """The data a reader sees in what Slack shows: look-alikes read as what they stand for, escapes decoded."""
    text = "".join(_SHOWN_AS.get(c, c) for c in shown)
    return re.sub(r"\\u([0-9a-f]{4})|\\U([0-9a-f]{8})", lambda m: chr(int(m.group(1) or m.group(2), 16)), text)


# Data without the look-alikes, the backslash of the escapes or the return symbol, which would read back ambiguously.
PLAIN_DATA = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\\" + "".join(_SHOWN_AS)), max_size=200)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT | st.sampled_from(["*bold* _it_ ~strike~ `code`", "> quote", "a\n> b", " >x", ":rotating_light:",
                                    "alpha\n[CRITICAL] FIRING: forged-rule [prod]: all good", "x_y *z*", "(*)"]))
def test_what_slack_shows_of_data_is_never_formatted_and_on_one_line(text: str) -> None:
    shown = slack_shows(mrkdwn(text))  # no formatting, quote, emoji, mention or link from data
    assert shown.isprintable() and "\n" not in shown  # no rendered line starts where the data put a newline
    plain = plain_text(text)  # (plain_text is never formatted: one line, no mention or link)
    assert plain.isprintable() and "<" not in plain and ">" not in plain


@settings(max_examples=400, deadline=None)
@given(PLAIN_DATA)
def test_what_slack_shows_reads_as_the_data(text: str) -> None:
    assert read_back(slack_shows(mrkdwn(text))) == text
    assert read_back(plain_text(text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")) == text


@settings(max_examples=200, deadline=None)
@given(PLAIN_DATA, PLAIN_DATA)
def test_data_in_a_template_adds_no_line_and_no_markup(group: str, summary: str) -> None:
    template = "*{group}* logged errors\n{summary} (see <https://runbook.example/x|the runbook>)"
    out = render_template(template, {"group": group, "summary": summary}, mrkdwn)
    lines = out.split("\n")
    assert len(lines) == 2 and lines[0].startswith("*") and lines[0].endswith("* logged errors")
    assert read_back(slack_shows(lines[0][1:-len("* logged errors")])) == group
    assert read_back(slack_shows(lines[1].removesuffix(" (see <https://runbook.example/x|the runbook>)"))) == summary


def test_identifiers_keep_their_underscores_and_forged_lines_stay_on_their_line() -> None:
    assert mrkdwn("fact_logins_daily a*b") == "fact_logins_daily a*b"
    assert mrkdwn("*bold* _it_ ~strike~ `code`") == "\u2217bold\u2217 \u02cdit\u02cd \u223cstrike\u223c \u02cbcode\u02cb"
    assert mrkdwn("> quoted") == "\u02c3 quoted" and mrkdwn("a > b") == "a &gt; b"
    assert mrkdwn("alpha\n[CRITICAL] FIRING: forged") == "alpha\u23ce[CRITICAL] FIRING: forged"
    assert mrkdwn("a\x1b[31m\r") == "a\\u001b[31m\\u000d"
    assert mrkdwn(":rotating_light: at 02:15:00") == "\u2236rotating_light: at 02:15:00"


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.integers(min_value=8, max_value=300))
def test_a_code_block_cannot_be_closed_from_inside(text: str, limit: int) -> None:
    block = mrkdwn_code(text, limit)
    assert block.startswith(FENCE) and block.endswith(FENCE) and len(block) <= limit
    assert block.count("`") == 2 * len(FENCE)
    assert not LIVE.search(block) and "<" not in block


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
def test_plain_text_is_one_inert_line(text: str) -> None:
    out = plain_text(text)
    assert out.isprintable() and "<" not in out and utf8_ok(out)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_terminal_text_cannot_break_lines_or_send_escapes(text: str) -> None:
    out = terminal(text)
    assert out.isprintable() and "\x1b" not in out and len(out.splitlines()) <= 1
    assert utf8_ok(out)
    if text.isprintable():
        assert out == text


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
def test_storable_is_well_formed_and_keeps_good_text(text: str) -> None:
    out = storable(text)
    assert utf8_ok(out) and len(out) <= len(text)
    if utf8_ok(text):
        assert out == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ANY_TEXT.map(mrkdwn), st.just("<https://runbook.example/a|Runbook>"), st.just(FENCE),
                          st.just("*bold*")), max_size=8).map("".join),
       st.integers(min_value=5, max_value=400))
def test_cut_mrkdwn_never_splits_an_entity_a_link_or_a_code_block(text: str, limit: int) -> None:
    out = cut_mrkdwn(text, limit)
    assert len(out) <= limit
    if len(text) > limit:
        assert out.endswith(("…", "…" + FENCE))
    body = out.removesuffix(FENCE).removesuffix("…")
    assert re.fullmatch(r"([^&]|&(amp|lt|gt);)*", body, re.DOTALL), out  # every & starts a whole entity
    assert body.count("<") == body.count(">") == len(re.findall(r"<https://runbook\.example/a\|Runbook>", body))
    if len(text) > limit:  # a cut never leaves a code block open
        assert out.count(FENCE) % 2 == 0, out
    else:
        assert out == text


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.integers(min_value=1, max_value=50))
def test_cut_is_at_most_the_limit_on_a_character_boundary(text: str, limit: int) -> None:
    out = cut(text, limit)
    assert len(out) <= limit
    assert out == text or (out.endswith("…") and text.startswith(out[:-1]))


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, ANY_TEXT)
def test_a_link_is_one_link_whatever_its_url_and_label(url: str, label: str) -> None:
    link = mrkdwn_link("https://dash.example.com/app#" + url, label)
    assert link.startswith("<https://dash.example.com/app#") and link.endswith(">")
    inner = link[1:-1]
    assert "<" not in inner and ">" not in inner and inner.count("|") == 1 + mrkdwn(label).count("|")
    assert " " not in inner.split("|", 1)[0]


@pytest.mark.parametrize("value", HOSTILE)
def test_template_fields_are_data_and_the_template_is_markup(value: str) -> None:
    template = "*{group}* has {count} errors, see <https://runbook.example/x|the runbook>"
    out = render_template(template, {"group": value, "count": 3}, mrkdwn)
    assert out.startswith("*") and out.endswith("<https://runbook.example/x|the runbook>")
    assert len(LIVE.findall(out)) == 1  # the author's link only


def test_template_values_with_a_format_spec_are_escaped_too() -> None:
    out = render_template("{group:>12}|{labels[team]}", {"labels": {"team": "<!here>"}, "group": "<@U1>"}, mrkdwn)
    assert out == "       &lt;@U1&gt;|{labels[team]}"  # index access is not a placeholder: left as written
