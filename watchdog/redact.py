"""Secrets never leave the process: credentials taken out of any text before it is written anywhere.

Two mechanisms, both applied by every sink (logs, standard output and error,
the state database, Slack requests):

- patterns: the password in a URL's user info (``https://user:***@host``),
  ``password=...`` in a libpq DSN, and token-like URL query parameters
  (``?token=***``), whatever text they appear in (a library's exception
  message, an echoed connection string);
- known values: every secret the config holds (tokens, passwords, API keys,
  DSNs, webhook and heartbeat URLs) is registered when the config is loaded
  (``register``) and replaced by ``***`` wherever it appears, also in its
  JSON-escaped form. Values shorter than ``MIN_SECRET_LENGTH`` are not
  registered (replacing a three-letter word everywhere would garble output);
  the patterns still cover them inside URLs and DSNs.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 8

# scheme://user:password@ — the password never spans quotes, spaces or a slash (so JSON stays JSON).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"'\\<>]*:)(?P<secret>[^/\s@\"'\\<>]+)(?=@)")
# password=... in a DSN (quoted or not), and the same in query strings.
_KEY_VALUE = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|sslpassword|secret|token|api_key|apikey|access_token|client_secret)\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&'\"\\<>]+)", re.IGNORECASE)

_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register(secrets: Iterable[str | None]) -> None:
    """Remember ``secrets`` (config values) so ``redact`` replaces them anywhere; short or empty ones are skipped."""
    global _known_pattern
    with _lock:
        before = len(_known)
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            _known.add(secret)
            escaped = json.dumps(secret)[1:-1]  # as it appears inside a JSON document
            if len(escaped) >= MIN_SECRET_LENGTH:
                _known.add(escaped)
        if len(_known) != before:
            # longest first, so a secret that contains another is replaced whole
            _known_pattern = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``***``: URL passwords, DSN passwords, known secrets."""
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    if "=" in text:
        text = _KEY_VALUE.sub(lambda m: m.group("head") + MASK, text)
    return text


def redact_all(value: Any) -> Any:
    """``value`` (strings, and lists, tuples and dicts of them) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v) for v in value)
    return value


def cut_body(body: Any, limit: int = 200) -> str:
    """An HTTP answer's body for an error message: redacted, one line, at most ``limit`` characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RedactingStream:
    """A text stream that redacts everything written to it (standard output and error of the CLI)."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
