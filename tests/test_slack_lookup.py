"""A lost Slack answer is looked for among the channel's messages since the first attempt, page after page.

Regression: the lookup read the 200 newest messages only, so in a busy
channel a post whose answer was lost was not found and went out twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import scripted_rule
from tests.helpers import Clock
from tests.servers.slack_api import SlackServer
from tests.test_delivery_truth import ids_in_slack, sent_ids
from watchdog.config import SlackConfig
from watchdog.lifecycle import Health, Kind, Notice
from watchdog.notify import slack as slack_module
from watchdog.notify.base import Notification
from watchdog.notify.outbox import Outbox
from watchdog.notify.render import render
from watchdog.notify.slack import SlackNotifier
from watchdog.state import StateStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("watchdog.notify.slack.MIN_SECONDS_BETWEEN_POSTS", 0.0)


def notifier(slack: SlackServer) -> SlackNotifier:
    return SlackNotifier(SlackConfig(token="xoxb-test", channel="#alerts", base_url=slack.base_url,
                                     group_wait=timedelta(0)))


def record_firing(store: StateStore, now: datetime) -> None:
    rule_ = scripted_rule("busy")
    payload = render(rule_, Notice(kind=Kind.FIRING, group="", at=now, severity=rule_.severity, value=50,
                                   summary="value 50", episode="e1"))
    store.record_evaluation("busy", ran_at=now, next_run=now + timedelta(minutes=1), duration=0.0, health=Health(),
                            states={}, notifications=[("", Kind.FIRING.value, "e1", payload)])


def test_a_lost_answer_followed_by_300_messages_is_posted_once(tmp_path: Path, slack: SlackServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    store = StateStore(str(tmp_path / "state.db"))
    outbox = Outbox(store, notifier(slack), clock=clock)
    record_firing(store, T0)
    slack.fail_next({"status": 500, "taken": True, "method": "chat.postMessage"})  # Slack took it; the answer is lost
    outbox.deliver_due(final=True)
    assert sum(ids_in_slack(slack).values()) == 1 and not sent_ids(store)
    for i in range(300):  # a busy channel: more than a page of other messages since
        slack.post("#alerts", f"chatter {i}")

    clock.now = T0 + timedelta(hours=1)  # the retry is due
    outbox.deliver_due(final=True)
    assert len(sent_ids(store)) == 1
    assert set(ids_in_slack(slack).values()) == {1}  # found by its metadata, not posted again
    assert len(slack.calls("chat.postMessage")) == 1
    lookups = slack.calls("conversations.history")
    assert len(lookups) >= 2 and all(call.body.get("oldest") for call in lookups)  # bounded in time, paged
    assert "page limit" not in caplog.text


def test_the_page_limit_is_said_and_the_message_posted(slack: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    since = datetime.now(UTC)
    for i in range(12):
        slack.post("#alerts", f"chatter {i}")
    note = Notification(id=1, rule="busy", group="", kind="firing", episode="e1", payload={}, attempts=1, ids=(1,),
                        since=since)
    with (patch.object(slack_module, "LOOKUP_PAGE_SIZE", 5), patch.object(slack_module, "LOOKUP_MAX_PAGES", 2),
          caplog.at_level(logging.WARNING, "watchdog.slack")):
        assert notifier(slack).held(note, None) == {}
    assert len(slack.calls("conversations.history")) == 2
    assert "lookup of a lost Slack post stopped at its page limit" in caplog.text


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 20), after=st.integers(0, 120), page=st.integers(1, 60), pages=st.integers(1, 8))
def test_a_held_post_is_found_whenever_its_pages_fit(slack: SlackServer, before: int, after: int, page: int,
                                                     pages: int) -> None:
    """Chatter before and after a post whose answer was lost: found iff the messages since its first attempt
    (newest first) reach it within the page limit."""
    slack.reset()
    for i in range(before):
        slack.post("#alerts", f"before {i}")
    since = datetime.now(UTC)
    sender = notifier(slack)
    note = Notification(id=7, rule="busy", group="", kind="firing", episode="e7", payload={"title": "busy", "text": "busy"},
                        attempts=1, ids=(7,), since=since)
    assert sender.send(note, None).ok
    for i in range(after):
        slack.post("#alerts", f"after {i}")
    with patch.object(slack_module, "LOOKUP_PAGE_SIZE", page), patch.object(slack_module, "LOOKUP_MAX_PAGES", pages):
        found = sender.held(note, None)
    # Everything here is within the margin before ``since``: all of it is in range, the post at position after + 1.
    assert (7 in found) == (after + 1 <= page * pages)
    assert len(slack.calls("conversations.history")) == min(pages, -(-(after + 1) // page))  # (none past it)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 40), limit=st.integers(1, 15), lo=st.integers(0, 45), hi=st.integers(0, 45),
       inclusive=st.booleans(), history=st.booleans())
def test_the_slack_stand_in_pages_like_slack(count: int, limit: int, lo: int, hi: int, inclusive: bool,
                                             history: bool) -> None:
    """Every page of conversations.history (newest first) or .replies (oldest first) together: each message between
    ``oldest`` and ``latest`` once, in order, the ends only when ``inclusive``."""
    server = SlackServer.__new__(SlackServer)  # (its pages only: no HTTP server needed)
    server.messages = {("C1", f"{1000 + i}.000000"): {"text": str(i), **({} if history else {"thread_ts": "1000.000000"})}
                       for i in range(count)}
    method = "conversations.history" if history else "conversations.replies"
    body = {"channel": "C1", "limit": limit, "oldest": f"{1000 + lo}.000000", "latest": f"{1000 + hi}.000000",
            "inclusive": "true" if inclusive else "false", "ts": "1000.000000"}
    seen: list[str] = []
    for _ in range(100):
        answer = server._conversation(method, body)
        assert len(answer["messages"]) <= limit
        seen += [m["ts"] for m in answer["messages"]]
        if not answer["response_metadata"]["next_cursor"]:
            assert not answer["has_more"]
            break
        body = {**body, "cursor": answer["response_metadata"]["next_cursor"]}
    wanted = [f"{1000 + i}.000000" for i in range(count) if (lo <= i <= hi if inclusive else lo < i < hi)]
    assert seen == (wanted[::-1] if history else wanted)
