"""The email receiver: one message per notification or digest, over SMTP (smtplib).

Plain text and HTML (every value escaped: data is never markup), subject
``[CRITICAL] FIRING: rule [group]``. Mail clients thread an episode: its
first message's Message-ID is derived from the episode, and every later
message of the episode names it in ``In-Reply-To`` and ``References``. A
message's own Message-ID is derived from the outbox ids it carries, so a
retry after a lost answer has the same Message-ID (clients show it once).
STARTTLS (port 587) or TLS from the first byte (465), verified against the
system's CAs or ``ca_certs``; the password comes from a file.
"""

from __future__ import annotations

import hashlib
import html
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from watchdog.notify.base import Delivery, Notification, Notifier
from watchdog.notify.digest import shown_severity
from watchdog.notify.receivers import EmailReceiver, SmtpServer
from watchdog.redact import redact

MAX_SUBJECT = 200
FIELDS = (("Rule", "rule"), ("Group", "group"), ("Severity", "severity"), ("Value", "value"), ("Since", "since"),
          ("Description", "description"))


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1] or "watchdog"


def thread_id(episode: str, domain: str) -> str:
    """The Message-ID of an episode's first message (and so its thread)."""
    return f"<episode-{hashlib.sha256(episode.encode()).hexdigest()[:24]}@{domain}>"


def message_id(ids: Sequence[int], domain: str) -> str:
    key = ",".join(str(i) for i in ids) or "0"
    return f"<watchdog-{hashlib.sha256(key.encode()).hexdigest()[:24]}@{domain}>"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def subject(note: Notification) -> str:
    """``[CRITICAL] FIRING: rule [group]``: the header of the notification, on one line."""
    p = note.payload
    shown = str(p.get("shown") or shown_severity(p))
    title = _one_line(str(p.get("title") or note.kind))
    text = f"[{shown}] {title}"
    return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 1] + "…"


def _lines(note: Notification) -> list[tuple[str, str]]:
    """(label, value) rows shown in both parts."""
    p = note.payload
    rows = [(label, str(p.get(key))) for label, key in FIELDS if p.get(key) not in (None, "")]
    details = p.get("details") or {}
    if isinstance(details, Mapping) and details.get("threshold") is not None:
        rows.insert(4, ("Threshold", str(details["threshold"])))
    labels = p.get("labels") or {}
    if isinstance(labels, Mapping) and labels:
        rows.append(("Labels", ", ".join(f"{k}={v}" for k, v in labels.items())))
    return rows


def _links(note: Notification) -> list[tuple[str, str]]:
    p = note.payload
    details = p.get("details") or {}
    found = [("Runbook", p.get("runbook_url")), ("Dashboards", details.get("dashboard_url") if isinstance(details, Mapping) else None)]
    return [(label, str(url)) for label, url in found if isinstance(url, str) and url.startswith(("https://", "http://"))]


def _digest_lines(note: Notification) -> list[str]:
    out = []
    for block in note.payload.get("rules") or ():
        out.append(f"{block.get('rule')} ({block.get('count')})")
        for entry in block.get("entries") or ():
            group = f" {entry.get('group')}" if entry.get("group") else ""
            out.append(f"  [{entry.get('shown')}] {entry.get('label')}{group}: {entry.get('summary')}")
        if block.get("more"):
            out.append(f"  ... and {block['more']} more")
    return out


def render(note: Notification, receiver: EmailReceiver) -> EmailMessage:
    """The message for ``note`` (threaded by its episode); pure."""
    domain = _domain(receiver.from_)
    msg = EmailMessage()
    msg["Subject"] = subject(note)
    msg["From"] = receiver.from_
    msg["To"] = ", ".join(receiver.to)
    msg["Date"] = formatdate(localtime=False)
    root = thread_id(note.episode, domain)
    first = note.kind == "firing" and len(note.ids) <= 1
    msg["Message-ID"] = root if first else message_id(note.ids or (note.id,), domain)
    if not first and note.kind != "digest":
        msg["In-Reply-To"] = root
        msg["References"] = root
    msg["X-Watchdog-Kind"] = note.kind
    text_rows = [note.text, ""]
    if note.kind == "digest":
        text_rows += _digest_lines(note)
    else:
        text_rows += [f"{label}: {_one_line(value)}" for label, value in _lines(note)]
    text_rows += [f"{label}: {url}" for label, url in _links(note)]
    msg.set_content("\n".join(text_rows) + "\n")
    body = [f"<p><strong>{html.escape(subject(note))}</strong></p>", f"<p>{html.escape(note.text)}</p>"]
    if note.kind == "digest":
        body.append("<pre>" + html.escape("\n".join(_digest_lines(note))) + "</pre>")
    else:
        body.append("<table>" + "".join(f"<tr><th align=\"left\">{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                                         for label, value in _lines(note)) + "</table>")
    links = _links(note)
    if links:
        body.append("<p>" + " | ".join(f"<a href=\"{html.escape(url, quote=True)}\">{html.escape(label)}</a>"
                                       for label, url in links) + "</p>")
    msg.add_alternative("<!doctype html><html><body>" + "".join(body) + "</body></html>\n", subtype="html")
    return msg


def _context(server: SmtpServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_certs)


def _connect(server: SmtpServer) -> smtplib.SMTP:
    timeout = server.timeout.total_seconds()
    if server.tls:
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=_context(server))
    client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    if server.starttls:
        client.starttls(context=_context(server))
    return client


class EmailNotifier(Notifier):
    """Sends each message over a fresh SMTP connection (alerts are rare; an idle connection would be dropped)."""

    threads = False

    def __init__(self, receiver: EmailReceiver):
        self.receiver = receiver
        self.name = receiver.name
        self.groups = receiver.group_wait.total_seconds() > 0
        self.group_wait = receiver.group_wait

    def send(self, note: Notification, thread: Mapping[str, Any] | None) -> Delivery:
        msg = render(note, self.receiver)
        server = self.receiver.smtp
        try:
            with _connect(server) as client:
                if server.username:
                    client.login(server.username, server.password or "")
                refused = client.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            return Delivery.refusal(redact(f"email {self.name}: the SMTP server refused the credentials: {exc.smtp_code}"))
        except smtplib.SMTPRecipientsRefused as exc:
            return _classify(self.name, "refused every recipient", [code for code, _ in exc.recipients.values()])
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return _classify(self.name, f"refused the message: {_reply(exc.smtp_error)}", [exc.smtp_code])
        except smtplib.SMTPResponseException as exc:
            return _classify(self.name, f"answered {_reply(exc.smtp_error)}", [exc.smtp_code])
        except (smtplib.SMTPException, OSError) as exc:
            return Delivery.retry(redact(f"email {self.name}: {type(exc).__name__}: {exc}"))
        if refused:
            # Some recipients took it: sending again would repeat it to them. Say who was refused.
            return Delivery.sent() if len(refused) < len(self.receiver.to) else Delivery.failed(
                f"email {self.name}: every recipient refused")
        return Delivery.sent()


def _reply(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return redact(" ".join(text.split()))[:200]


def _classify(name: str, what: str, codes: Sequence[int]) -> Delivery:
    """SMTP's own classes: 4xx is temporary (retried), 5xx permanent."""
    error = f"email {name}: the SMTP server {what} ({', '.join(str(c) for c in codes)})"
    return Delivery.retry(error) if any(400 <= c < 500 for c in codes) else Delivery.failed(error)
