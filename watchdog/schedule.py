"""When each rule runs next. Pure arithmetic: every function takes ``now``.

Each rule gets a small stable jitter (derived from its name) so that 200 rules
at ``every: 1m`` do not all start in the same second. Planned times advance
from the previous planned time, not from when a run finished, so they never
drift; after downtime a rule runs once, with no storm of missed runs.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from watchdog.rule import Schedule

MAX_JITTER = timedelta(seconds=15)


def jitter(name: str, schedule: Schedule) -> timedelta:
    """A stable offset for rule ``name``: at most half its period, at most MAX_JITTER."""
    span = MAX_JITTER
    if schedule.every is not None:
        span = min(span, schedule.every / 2)
    fraction = zlib.crc32(name.encode()) / 2**32
    return timedelta(milliseconds=int(fraction * span.total_seconds() * 1000))


def _cron_after(schedule: Schedule, after: datetime) -> datetime:
    assert schedule.cron is not None
    local = after.astimezone(ZoneInfo(schedule.timezone))
    following: datetime = croniter(schedule.cron, local).get_next(datetime)
    return following.astimezone(after.tzinfo)


def first_run(name: str, schedule: Schedule, now: datetime, stored_next: datetime | None) -> datetime:
    """The first planned run after start.

    A rule never run, or whose stored next run has passed (downtime), runs
    once now (plus jitter); otherwise it keeps its stored time.
    """
    if stored_next is not None and stored_next > now:
        return stored_next
    if schedule.cron is not None and stored_next is None:
        return following_run(name, schedule, now, now)
    return now + jitter(name, schedule)


def following_run(name: str, schedule: Schedule, planned: datetime, now: datetime) -> datetime:
    """The next planned run after the run planned at ``planned``, skipping any already past ``now``."""
    if schedule.every is not None:
        step = schedule.every
        following = planned + step
        if following <= now:
            missed = (now - following) // step + 1
            following += step * missed
        return following
    offset = jitter(name, schedule)
    base = max(planned, now) - offset
    return _cron_after(schedule, base) + offset
