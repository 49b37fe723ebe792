"""One JSON POST over plain HTTPS (urllib), classified for the outbox: the receivers need no SDK.

2xx is delivered; 429, 5xx, timeouts and connection errors are worth
retrying (with the receiver's Retry-After when it gives one); 401 and 403
refuse the credentials (the outbox keeps every notification and pauses the
receiver); any other answer is permanent. Errors are one short, redacted line.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from watchdog import __version__
from watchdog.notify.base import Delivery
from watchdog.redact import cut_body, redact

USER_AGENT = f"watchdog/{__version__}"
MAX_ANSWER_BYTES = 64 * 1024  # an answer is read for its error message only


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:  # an HTTP date, or garbage: the outbox's own backoff
        return None


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """POST ``body`` to ``url``; the answer for any HTTP status. Raises OSError when no answer came."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    # No redirects: a 3xx is an answer (permanent), never a second POST of the alert elsewhere.
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        data = exc.read(MAX_ANSWER_BYTES) if exc.fp is not None else b""
        return Answer(exc.code, data, _retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    except (TimeoutError, ssl.SSLError, ConnectionError, http.client.HTTPException) as exc:  # cut off mid-answer
        raise OSError(str(exc) or type(exc).__name__) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def deliver(what: str, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Delivery:
    """POST and classify: 2xx sent; 429, 5xx and no answer retried; anything else failed for good."""
    try:
        answer = post(url, body, headers, timeout)
    except OSError as exc:
        return Delivery.retry(redact(f"{what}: no answer: {exc}"))
    if 200 <= answer.status < 300:
        return Delivery.sent()
    error = f"{what}: HTTP {answer.status}: {cut_body(answer.body)}"
    if answer.status == 429 or answer.status >= 500:
        return Delivery.retry(error, answer.retry_after)
    if answer.status in (401, 403):  # the credentials, not the message: keep it, pause the receiver, alert
        return Delivery.refusal(error)
    return Delivery.failed(error)
