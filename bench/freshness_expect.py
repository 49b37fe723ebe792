"""Freshness with ``expect:`` on a large table: a grouped max() against one indexed max() per expected group.

Run: .venv/bin/python -m bench.freshness_expect [--rows 2000000] [--sources 20] [--repeats 9]

A local PostgreSQL, ``etl.runs (source text, finished_at timestamptz)`` with
``--rows`` rows over ``--sources`` sources and an index on (source,
finished_at), analyzed. Times, alternately and through the postgres source as
the rule reads it: before, the grouped ``max()`` every table check ran
(``freshness_sql.table_statement``); after, the statement a check with
``expect:`` runs now (``freshness_sql.expected_statement``). Medians.
"""

from __future__ import annotations

import argparse
import time

from bench.common import median, save
from tests.servers.postgres import LocalPostgres
from watchdog.config import PostgresSource as PostgresConfig
from watchdog.ruletypes.freshness_sql import expected_statement, table_statement
from watchdog.sources.postgres import PostgresSource


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    pg = LocalPostgres.create()
    try:
        pg.psql("create schema etl; create table etl.runs (source text, finished_at timestamptz)")
        pg.psql(f"insert into etl.runs select 'source-' || (i % {args.sources}), now() - (i || ' seconds')::interval "
                f"from generate_series(1, {args.rows}) as i")
        pg.psql("create index runs_source_finished on etl.runs (source, finished_at); analyze etl.runs")
        source = PostgresSource(PostgresConfig(name="warehouse", dsn=pg.dsn))
        expect = [f"source-{i}" for i in range(args.sources)]
        statements = {"before": table_statement(("etl", "runs"), "finished_at", "source", None),
                      "after": expected_statement(("etl", "runs"), "finished_at", "source", None, expect)}
        times: dict[str, list[float]] = {"before": [], "after": []}
        answers = {}
        for _ in range(args.repeats):
            for label, statement in statements.items():
                start = time.perf_counter()
                reading = source.read_at_now(statement)
                times[label].append(time.perf_counter() - start)
                answers[label] = dict(reading.rows)
        assert answers["before"] == answers["after"], "the two statements disagree"
        source.close()
    finally:
        pg.destroy()
    before, after = median(times["before"]), median(times["after"])
    print(f"freshness expect over {args.rows:,} rows, {args.sources} sources: grouped max() {before * 1000:.1f} ms, "
          f"indexed max() per expected source {after * 1000:.2f} ms (median of {args.repeats}; {before / after:.0f}x)")
    save("freshness_expect", {"rows": args.rows, "sources": args.sources, "repeats": args.repeats,
                              "before_ms": before * 1000, "after_ms": after * 1000,
                              "before_all_ms": [t * 1000 for t in times["before"]],
                              "after_all_ms": [t * 1000 for t in times["after"]]})


if __name__ == "__main__":
    main()
