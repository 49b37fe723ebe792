"""The escaping functions, one per sink: any string in, inert text out (property-based, plus the issue's values)."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.escape import (
    FENCE,
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
    if utf8_ok(text):  # reading the entities back gives the text
        assert out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


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
