"""When each rule runs next. Pure arithmetic: every function takes ``now``.

Each rule gets a small stable jitter (derived from its name) so that 200 rules
at ``every: 1m`` do not all start in the same second. Planned times advance
from the previous planned time, not from when a run finished, so they never
drift; after downtime a rule runs once, with no storm of missed runs.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from watchdog.rule import Schedule

MAX_JITTER = timedelta(seconds=15)
# A valid expression may fire only on 29 February, which can be 8 years apart (2096 -> 2104).
CRON_HORIZON_YEARS = 9
CRON_NICKNAMES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_CRON_FORM = "five fields: minute hour day-of-month month day-of-week"


def cron_problem(expression: str, now: datetime | None = None) -> str | None:
    """What is wrong with the cron ``expression``, or None when it is usable.

    Usable means five fields (or a nickname such as ``@daily``; croniter's
    seconds and year fields are refused, so what validates is what runs) and
    at least one run within CRON_HORIZON_YEARS of ``now``: ``0 0 31 2 *``
    never fires.
    """
    fields = expression.split()
    nickname = len(fields) == 1 and fields[0].lower() in CRON_NICKNAMES
    shown = expression if len(expression) <= 80 else expression[:80] + "..."
    try:
        valid = (len(fields) == 5 or nickname) and croniter.is_valid(expression)
    except Exception:  # croniter raises more than its documented errors on odd input
        valid = False
    if not valid:
        return f"'{shown}' is not a valid cron expression ({_CRON_FORM})"
    try:
        croniter(expression, now or datetime.now(UTC), max_years_between_matches=CRON_HORIZON_YEARS).get_next(datetime)
    except Exception:
        return f"'{shown}' never fires (no time matches it within {CRON_HORIZON_YEARS} years)"
    return None


def timezone_problem(name: str) -> str | None:
    """What is wrong with the time zone ``name``, or None when it is an IANA zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name that is a directory of zones
        shown = name if len(name) <= 80 else name[:80] + "..."
        return f"unknown time zone '{shown}' (use an IANA name such as UTC or Europe/Berlin)"
    return None


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
    following: datetime = croniter(schedule.cron, local, max_years_between_matches=CRON_HORIZON_YEARS).get_next(datetime)
    return following.astimezone(after.tzinfo)


def first_run(name: str, schedule: Schedule, now: datetime, stored_next: datetime | None) -> datetime:
    """The first planned run after start.

    A rule never run, or whose stored next run has passed (downtime), runs
    once now (plus jitter); otherwise it keeps its stored time.
    """
    if stored_next is not None and stored_next > now:
        return clamp(schedule, stored_next, now)  # stored before the clock was set back: not a whole step away
    if schedule.cron is not None and stored_next is None:
        return following_run(name, schedule, now, now)
    return now + jitter(name, schedule)


def following_run(name: str, schedule: Schedule, planned: datetime, now: datetime) -> datetime:
    """The next planned run after the run planned at ``planned``.

    An interval rule whose run ended less than one period past its next slot
    (a slow search, a busy CPU) runs that slot at once, late, rather than
    skipping it: skipping would leave events unseen for a whole extra period.
    Further behind (a stall, a suspend), the slots already past are skipped
    and the rule runs at the next one, with no storm of missed runs.
    """
    if schedule.every is not None:
        step = schedule.every
        following = planned + step
        if following <= now and now - following >= step:
            missed = (now - following) // step + 1
            following += step * missed
        return following
    offset = jitter(name, schedule)
    base = max(planned, now) - offset
    return _cron_after(schedule, base) + offset


def clamp(schedule: Schedule, planned: datetime, now: datetime) -> datetime:
    """``planned``, but an interval rule's next run never lies more than one period (plus jitter) after ``now``.

    A planned time further away can only come from a wall clock set back
    since it was planned; cron rules are left as planned.
    """
    if schedule.every is None:
        return planned
    return min(planned, now + schedule.every + MAX_JITTER)
