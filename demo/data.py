"""Demo data: a small star schema with ETL runs (one source stale), application logs, a failed DMS task."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

LOG_MAPPINGS = {"properties": {
    "@timestamp": {"type": "date"}, "level": {"type": "keyword"}, "team": {"type": "keyword"},
    "service": {"type": "keyword"}, "userId": {"type": "keyword"}, "event": {"type": "keyword"},
    "error": {"type": "keyword"}, "duration_ms": {"type": "long"}, "message": {"type": "text"}}}


def log_events(now: datetime) -> list[dict[str, Any]]:
    """An hour of key=value application logs: team-a has an error burst, billing went quiet, the API is slow.

    A few errors in the same hour a day earlier are the baseline of the spike example.
    """
    rng = random.Random(7)
    events = []

    def add(minutes_ago: float, team: str, service: str, level: str, event: str, error: str = "", duration: int = 120) -> None:
        at = now - timedelta(minutes=minutes_ago)
        user = f"u{rng.randint(1, 300)}"
        text = f"userId={user} team={team} event={event}" + (f" error={error}" if error else "") + f" took {duration}ms"
        events.append({"@timestamp": at.isoformat().replace("+00:00", "Z"), "level": level, "team": team,
                       "service": service, "userId": user, "event": event, "error": error or None,
                       "duration_ms": duration, "message": text})

    for i in range(600):  # steady traffic on the API
        add(rng.uniform(0, 60), rng.choice(["team-a", "team-b", "team-c"]), "api", "info", "request",
            duration=int(rng.lognormvariate(5, 0.4)) + (900 if i % 7 == 0 else 0))
    for _ in range(80):  # team-a's error burst inside [now-6m, now-1m]
        add(rng.uniform(1.5, 5.5), "team-a", "api", "error", "login", error="Timeout")
    for _ in range(6):
        add(rng.uniform(1.5, 5.5), "team-b", "api", "error", "export", error="ClientAbort")
    for _ in range(40):  # billing logged until 40 minutes ago, then stopped
        add(rng.uniform(40, 60), "team-c", "billing", "info", "invoice")
    for _ in range(12):  # the same hour yesterday: a few API errors, the baseline of the spike rule
        add(24 * 60 + rng.uniform(0, 60), rng.choice(["team-a", "team-b"]), "api", "error", "login", error="Timeout")
    return events

WAREHOUSE_SQL = """
create schema analytics;
create schema etl;
create table analytics.dim_dates (date_key date primary key, year int, month int, day int);
create table analytics.dim_users (user_id int primary key, team text not null, updated_at timestamptz not null);
create table analytics.fact_logins_daily (
    date_key date references analytics.dim_dates, user_id int references analytics.dim_users,
    logins int not null, updated_at timestamptz not null, primary key (date_key, user_id));
create table etl.runs (id serial primary key, source text not null, finished_at timestamptz not null);

insert into analytics.dim_dates
    select d::date, extract(year from d), extract(month from d), extract(day from d)
    from generate_series(now() - interval '30 days', now(), interval '1 day') d;
insert into analytics.dim_users
    select u, (array['team-a', 'team-b', 'team-c'])[1 + u % 3], now() - interval '20 minutes'
    from generate_series(1, 30) u;
insert into analytics.fact_logins_daily
    select d.date_key, u.user_id, 1 + (u.user_id * 7 + extract(day from d.date_key)::int) % 5, now() - interval '25 minutes'
    from analytics.dim_dates d cross join analytics.dim_users u;
insert into etl.runs (source, finished_at) values
    ('logs', now() - interval '10 minutes'),
    ('dms', now() - interval '40 minutes'),
    ('google-analytics', now() - interval '9 hours');  -- stale: the demo's freshness alert
create table etl.loads (day date not null, source text not null, rows_loaded bigint not null);
insert into etl.loads  -- rows loaded per source and day; crm loaded a fraction of its usual volume yesterday
    select d::date, s, case when s = 'crm' and d::date = current_date - 1 then 610 else base + (extract(day from d)::int % 7) * 40 end
    from generate_series(current_date - 14, current_date - 1, interval '1 day') d,
         (values ('google-analytics', 48000), ('crm', 5200), ('ads', 9100)) v(s, base);
create or replace procedure analytics.refresh() language sql as $$
    update analytics.fact_logins_daily set updated_at = now();
    insert into etl.runs (source, finished_at) values ('dms', now());
$$;
"""

# The role watchdog's checks read as: it can read every table and write none (README, "The warehouse role").
READER_SQL = "create role watchdog_reader login; grant pg_read_all_data to watchdog_reader;"
