"""Demo data: a small star schema with ETL runs (one source stale)."""

from __future__ import annotations

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
create or replace procedure analytics.refresh() language sql as $$
    update analytics.fact_logins_daily set updated_at = now();
    insert into etl.runs (source, finished_at) values ('dms', now());
$$;
"""
