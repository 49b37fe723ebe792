"""PagerDuty, webhook and email receivers: what they render, and what the local stand-ins receive."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers.receivers import PagerDutyServer, SmtpServer, WebhookServer, self_signed
from watchdog.notify.base import Notification
from watchdog.notify.email import EmailNotifier, render, thread_id
from watchdog.notify.pagerduty import PagerDutyNotifier, dedup_key, event
from watchdog.notify.receivers import EmailReceiver, PagerDutyReceiver, SmtpServer as SmtpConfig, WebhookReceiver
from watchdog.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookNotifier, payload, sign

KEY = "routing-key-for-tests-0001"
AT = datetime(2026, 11, 28, 2, 15, tzinfo=UTC)


def note(kind: str = "firing", severity: str = "critical", text: str | None = None, note_id: int = 1,
         episode: str = "ep-1", group: str = "team-a", **extra: Any) -> Notification:
    text = text if text is not None else f"[{severity.upper()}] FIRING: app-errors [{group}]: events 73 in the last 5m"
    payload = {"rule": "app-errors", "type": "threshold", "group": group, "kind": kind, "severity": severity,
               "title": f"FIRING: app-errors [{group}]", "text": text, "value": 73, "since": "2026-11-28T02:10:00Z",
               "at": "2026-11-28T02:15:00Z", "description": "Errors in the app logs", "labels": {"team": "data"},
               "runbook_url": "https://wiki.example.com/runbooks/app-errors",
               "details": {"threshold": "above 50", "dashboard_url": "https://dash.example.com/x"}, **extra}
    return Notification(id=note_id, rule="app-errors", group=group, kind=kind, episode=episode, payload=payload,
                        ids=(note_id,))


# --- PagerDuty -----------------------------------------------------------------------------------------------


def test_a_trigger_carries_the_mapping() -> None:
    body = event(note(), KEY, "host-1")
    assert body is not None
    assert body["event_action"] == "trigger" and body["routing_key"] == KEY
    assert body["dedup_key"] == dedup_key("app-errors", "team-a", "ep-1", KEY)
    p = body["payload"]
    assert p["summary"] == "[CRITICAL] FIRING: app-errors [team-a]: events 73 in the last 5m"
    assert (p["severity"], p["source"], p["component"], p["group"], p["class"]) == (
        "critical", "host-1", "app-errors", "team-a", "threshold")
    assert p["custom_details"]["value"] == 73 and p["custom_details"]["threshold"] == "above 50"
    assert p["custom_details"]["labels"] == {"team": "data"}
    assert body["links"] == [{"href": "https://wiki.example.com/runbooks/app-errors", "text": "Runbook"},
                             {"href": "https://dash.example.com/x", "text": "Dashboards"}]
    resolve = event(note("resolved"), KEY, "host-1")
    assert resolve == {"routing_key": KEY, "event_action": "resolve", "dedup_key": body["dedup_key"]}
    assert event(note("acknowledged"), KEY, "h")["event_action"] == "acknowledge"  # type: ignore[index]
    assert event(note("action"), KEY, "h") is None
    assert event(note("error", severity="warning"), KEY, "h")["payload"]["severity"] == "error"  # type: ignore[index]


def test_dedup_keys_differ_per_episode_and_routing_key_and_hide_the_key() -> None:
    keys = {dedup_key("r", "g", "e1", KEY), dedup_key("r", "g", "e2", KEY), dedup_key("r", "g", "e1", KEY + "x"),
            dedup_key("r", "g2", "e1", KEY)}
    assert len(keys) == 4
    assert all(KEY not in k and len(k) <= 255 for k in keys)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=3000), st.text(max_size=50), st.sampled_from(["info", "warning", "critical", "bogus"]))
def test_any_alert_makes_a_valid_trigger(text: str, group: str, severity: str) -> None:
    """Whatever the data, the event is one PagerDuty accepts: a one-line summary of at most 1,024 characters."""
    body = event(note(text=text, group=group, severity=severity), KEY, "host")
    assert PagerDutyServer.validate(PagerDutyServer.__new__(PagerDutyServer), json.dumps(body).encode()) is None
    assert body is not None
    summary = body["payload"]["summary"]
    assert len(summary) <= 1024 and "\n" not in summary and "\r" not in summary


def test_pagerduty_answers(pagerduty: PagerDutyServer) -> None:
    pd = PagerDutyNotifier(PagerDutyReceiver(name="pager", routing_key=KEY, url=pagerduty.url + "/v2/enqueue"), "host")
    assert pd.send(note(), None).ok
    pagerduty.script = [(500, {}), (429, {"Retry-After": "7"}), (400, {})]
    failed = pd.send(note(), None)
    assert not failed.ok and failed.retryable and "HTTP 500" in (failed.error or "")
    limited = pd.send(note(), None)
    assert limited.retryable and limited.retry_after == 7.0
    refused = pd.send(note(), None)
    assert not refused.ok and not refused.retryable and "HTTP 400" in (refused.error or "")
    assert KEY not in (refused.error or "")
    assert [e["event_action"] for e in pagerduty.events()] == ["trigger"]


def test_pagerduty_paces_each_routing_key() -> None:
    pd = PagerDutyNotifier(PagerDutyReceiver(name="pager", routing_key=KEY, url="http://127.0.0.1:9/", events_per_minute=2))
    assert pd.paced_until("") == 0.0
    pd.sent.extend([1e12, 1e12])  # two events "just now" (far in the monotonic future: not yet expired)
    assert pd.paced_until("") == 1e12 + 60
    answer = pd.send(note(), None)
    assert answer.retryable and answer.retry_after is not None and "2 events a minute" in (answer.error or "")


def test_no_answer_is_retried() -> None:
    pd = PagerDutyNotifier(PagerDutyReceiver(name="pager", routing_key=KEY, url="http://127.0.0.1:9/v2/enqueue",
                                             timeout=timedelta(seconds=2)))
    answer = pd.send(note(), None)
    assert answer.retryable and "no answer" in (answer.error or "")


# --- webhook --------------------------------------------------------------------------------------------------


def test_webhook_payload_and_signature(webhook: WebhookServer) -> None:
    hook = WebhookNotifier(WebhookReceiver(name="ops-hook", url=webhook.url + "/hook", secret="webhook-secret-for-tests",
                                           headers={"X-Team": "data"}), clock=lambda: AT)
    assert hook.send(note(), None).ok
    (got,) = webhook.received
    assert got.headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"webhook-secret-for-tests", got.raw,
                                                                 hashlib.sha256).hexdigest()
    assert got.headers[TIMESTAMP_HEADER] == str(int(AT.timestamp())) and got.headers["X-Team"] == "data"
    body = got.json
    assert (body["version"], body["receiver"], body["status"], body["sentAt"]) == ("1", "ops-hook", "firing",
                                                                                    "2026-11-28T02:15:00Z")
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "app-errors", "rule": "app-errors", "group": "team-a",
                               "severity": "critical", "type": "threshold", "team": "data"}
    assert alert["startsAt"] == "2026-11-28T02:10:00Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert body["groupKey"] == "app-errors/team-a" and alert["episode"] == "ep-1"
    webhook.script = [(503, {}), (404, {}), (401, {})]
    assert hook.send(note(), None).retryable
    gone = hook.send(note(), None)
    assert not gone.ok and not gone.retryable
    assert hook.send(note(), None).refused


def test_a_digest_is_one_payload_with_every_alert() -> None:
    entries = [{**note(group=g).payload, "kind": k, "episode": f"ep-{g}", "id": i}
               for i, (g, k) in enumerate([("a", "firing"), ("b", "resolved")], start=1)]
    body = payload("hook", entries, AT)
    assert [a["status"] for a in body["alerts"]] == ["firing", "resolved"]
    assert body["alerts"][1]["endsAt"] == "2026-11-28T02:15:00Z"
    assert body["status"] == "firing" and body["commonLabels"]["rule"] == "app-errors"
    assert "group" not in body["commonLabels"]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
       st.text(min_size=1, max_size=40))
def test_any_payload_is_json_and_its_signature_verifies(text: str, labels: dict[str, str], secret: str) -> None:
    body = json.dumps(payload("hook", [{**note(text=text).payload, "labels": labels, "kind": "firing"}], AT)).encode()
    assert json.loads(body)["alerts"][0]["annotations"].get("summary", "") == text
    assert hmac.compare_digest(sign(secret, body), "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest())


# --- email ----------------------------------------------------------------------------------------------------


def mail_receiver(port: int, **smtp: Any) -> EmailReceiver:
    server = SmtpConfig(host="127.0.0.1", port=port, starttls=False, username="watchdog",
                        password="smtp-password-for-tests", timeout=timedelta(seconds=5))
    return EmailReceiver(name="data-mail", smtp=server if not smtp else SmtpConfig(**{**server.__dict__, **smtp}),
                         from_="watchdog@example.com", to=("data@example.com", "oncall@example.com"))


def test_an_episode_is_one_thread(smtp: SmtpServer) -> None:
    mail = EmailNotifier(mail_receiver(smtp.port))
    assert mail.send(note(), None).ok
    resolved = note("resolved", note_id=2)
    resolved = Notification(**{**resolved.__dict__, "payload": {**resolved.payload, "title": "RESOLVED: app-errors [team-a]"}})
    assert mail.send(resolved, None).ok
    first, second = smtp.messages
    assert first["Subject"] == "[CRITICAL] FIRING: app-errors [team-a]"
    assert second["Subject"] == "[OK] RESOLVED: app-errors [team-a]"
    assert first["Message-ID"] == thread_id("ep-1", "example.com")
    assert second["In-Reply-To"] == first["Message-ID"] == second["References"]
    assert smtp.envelopes[0] == ("watchdog@example.com", ["data@example.com", "oncall@example.com"])
    plain = first.get_body(("plain",)).get_content()
    html = first.get_body(("html",)).get_content()
    assert "Threshold: above 50" in plain and "Runbook: https://wiki.example.com/runbooks/app-errors" in plain
    assert '<a href="https://wiki.example.com/runbooks/app-errors">Runbook</a>' in html


def test_wrong_credentials_are_a_refusal_and_4xx_is_retried(smtp: SmtpServer) -> None:
    wrong = EmailNotifier(mail_receiver(smtp.port, password="not-the-password"))
    answer = wrong.send(note(), None)
    assert not answer.ok and answer.refused and "refused the credentials" in (answer.error or "")
    assert "not-the-password" not in (answer.error or "")
    mail = EmailNotifier(mail_receiver(smtp.port))
    smtp.refuse = [451, 554]
    assert mail.send(note(), None).retryable
    final = mail.send(note(), None)
    assert not final.ok and not final.retryable
    assert mail.send(note(), None).ok and len(smtp.messages) == 1


def test_no_server_is_retried() -> None:
    from tests.servers.receivers import _free_port

    answer = EmailNotifier(mail_receiver(_free_port())).send(note(), None)
    assert answer.retryable


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.text(max_size=40))
def test_data_is_never_markup_or_a_header(text: str, group: str) -> None:
    """Hostile text in the alert stays text: no header can be added, no HTML written."""
    n = note(text=text, group=group, title=f"FIRING: app-errors [{group}]")
    msg = render(n, mail_receiver(25))
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert set(msg.keys()) == {"Subject", "From", "To", "Date", "Message-ID", "X-Watchdog-Kind", "Content-Type",
                               "MIME-Version"}
    html = msg.get_body(("html",)).get_content()
    assert "<script" not in html.lower() and "<img" not in html.lower()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls"])
def test_starttls_and_tls_verify_the_server(tmp_path: Path, implicit: bool) -> None:
    cert, key = self_signed(str(tmp_path))
    server = SmtpServer("watchdog", "smtp-password-for-tests", cert=(cert, key), implicit_tls=implicit)
    try:
        verified = EmailNotifier(mail_receiver(server.port, starttls=not implicit, tls=implicit, ca_certs=cert))
        assert verified.send(note(), None).ok and len(server.messages) == 1
        unverified = EmailNotifier(mail_receiver(server.port, starttls=not implicit, tls=implicit))  # system CAs only
        answer = unverified.send(note(), None)
        assert not answer.ok and "CERTIFICATE_VERIFY_FAILED" in (answer.error or "") and len(server.messages) == 1
    finally:
        server.close()
