"""The trends benchmark: how long a trend takes on months of rollups.

    python -m bench.trends [--campaigns N] [--repeats N] [--json PATH]

It fills a fresh database (embedded, or a new one on ``$BENCH_DATABASE_URL``,
dropped afterwards) with the rollups a busy organization leaves behind:
``--campaigns`` campaigns (20) each with a row per second for the last day,
per minute for the last 31 days and per hour for the last 400 days, as the
service's flushes would have written them. Then it reads the trends a
dashboard asks for, the organization's and one campaign's, ``--repeats``
times each (after one warm-up read), and prints the median and worst time
with the rows each read summed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from bench import processes
from server.metrics.trends import TrendRange, read_trend
from server.store import database

ORGANIZATION = "org_bench"
# (label, seconds of history, step): what the dashboard page asks for.
CASES = (
    ("15 min by 5 s", 900, 5),
    ("1 hour by 15 s", 3_600, 15),
    ("1 day by 5 min", 86_400, 300),
    ("7 days by 1 hour", 7 * 86_400, 3_600),
    ("30 days by 1 hour", 30 * 86_400, 3_600),
    ("400 days by 1 day", 400 * 86_400, 86_400),
)
SUMS = (
    "impressions, clicks, conversions, views, engagements, completions, skips, spent_micros, "
    "conversion_value_micros, view_time_sum, view_time_count, sessions, bounced_sessions"
)


def fill(url: str, campaigns: int) -> dict[str, int]:
    """Writes the rollups; returns the rows per table."""
    # Varied counts (psycopg wants % written %%).
    values = (
        "(g %% 7) + 5, (g %% 3), (g %% 11 = 0)::int, (g %% 5), (g %% 4), (g %% 6), (g %% 9), "
        "(g %% 3) * 1200000, (g %% 11 = 0)::int * 30000000, (g %% 5) * 12.5, (g %% 5), "
        "(g %% 2), 0"
    )
    tables = {
        "campaign_rollups": ("1 second", "1 day"),
        "campaign_rollups_minute": ("1 minute", "31 days"),
        "campaign_rollups_hour": ("1 hour", "400 days"),
    }
    rows = {}
    with psycopg.connect(database.libpq_url(url), autocommit=True) as conn:
        for table, (unit, span) in tables.items():
            started = time.perf_counter()
            conn.execute(
                f"""
                INSERT INTO {table} (organization_id, campaign_id, bucket, {SUMS})
                SELECT %s, 'camp_' || c, b, {values}
                FROM generate_series(1, %s) c,
                     generate_series(date_trunc('{unit.split()[1]}', now()) - interval '{span}',
                                     now(), interval '{unit}') b,
                     LATERAL (SELECT extract(epoch FROM b)::bigint + c AS g) s
                """,
                (ORGANIZATION, campaigns),
            )
            conn.execute(f"VACUUM ANALYZE {table}")
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
            rows[table] = count
            print(
                f"  {table}: {count:,} rows in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return rows


async def measure(url: str, repeats: int) -> list[dict[str, object]]:
    engine = create_async_engine(database.sqlalchemy_url(url))
    results = []
    try:
        for label, seconds, step in CASES:
            for scope, campaign_id in (("organization", ""), ("campaign", "camp_1")):
                timings = []
                for attempt in range(repeats + 1):
                    span = TrendRange.ending_now(seconds, step, datetime.now(UTC))
                    started = time.perf_counter()
                    trend = await read_trend(engine, ORGANIZATION, campaign_id, span)
                    if attempt:  # the first read warms the cache
                        timings.append((time.perf_counter() - started) * 1000)
                results.append(
                    {
                        "trend": label,
                        "scope": scope,
                        "points": len(trend.points),
                        "rollup_table": span.table.name,
                        "events": trend.totals.totals.events,
                        "median_ms": round(statistics.median(timings), 1),
                        "max_ms": round(max(timings), 1),
                    }
                )
    finally:
        await engine.dispose()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trends", description=__doc__)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-trends-") as tmp:
        url, drop = processes.start_database(Path(tmp) / "pg")
        try:
            print(f"filling rollups for {args.campaigns} campaigns:", file=sys.stderr)
            rows = fill(url, args.campaigns)
            print("reading trends:", file=sys.stderr, flush=True)
            results = asyncio.run(measure(url, args.repeats))
        finally:
            if drop is not None:
                drop()

    print(
        f"\nTrends on {args.campaigns} campaigns' rollups ({rows['campaign_rollups']:,} "
        f"per-second, {rows['campaign_rollups_minute']:,} per-minute, "
        f"{rows['campaign_rollups_hour']:,} per-hour rows); {args.repeats} reads each\n"
    )
    header = f"{'trend':<20} {'scope':<13} {'points':>6} {'rollups':<24} {'median':>9} {'max':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['trend']:<20} {r['scope']:<13} {r['points']:>6} {r['rollup_table']:<24} "
            f"{r['median_ms']:>6.1f} ms {r['max_ms']:>6.1f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "results": results}, indent=2))


if __name__ == "__main__":
    main()
