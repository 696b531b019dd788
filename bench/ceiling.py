"""PostgreSQL's own ceiling: the service's rows, bulk-inserted with no service.

The rows are those the service's writer stages for the load clients' events:
the load encoder's protobuf bytes (``loadgen.events``: same organization,
campaigns, type mix, values, sessions and metadata; UUIDv7 ids), read and
COPY-encoded by the service's own code (``server.codec.event_rows``, or for an
event it does not take straight the full decoding and
``server.ingest.validation``; ``server.store.staging_copy``) outside the timed
part. What is timed is PostgreSQL's work for one batch, on one connection as
the service's writer uses:

- ``dedup``: ``COPY`` into the service's temporary staging table, then
  ``INSERT INTO events ... SELECT ... FROM staging_events ON CONFLICT
  (organization_id, event_id) DO NOTHING`` (``server.store.events.INSERT_EVENTS``),
  commit: the deduplicating bulk insert, the least any durable, exactly-once
  ingest of these rows costs;
- ``flush``: the service's whole flush transaction
  (``server.store.events.write_staged``: the same COPY and insert, then the
  rollups, daily CampaignAnalytics rows, sessions and NOTIFY), with a
  writer's memory of complete sessions (``server.store.sessions``) kept from
  batch to batch as the service keeps it: what the aggregates cost.

Both run against fresh copies of the service's tables (``CREATE TABLE ... (LIKE
public.<table> INCLUDING ALL)``: same columns, keys and indexes) in a schema of
their own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from clients import pb
from loadgen.events import EventEncoder
from server.codec import decode_event, event_rows
from server.ingest.validation import Limits, now_us, validate
from server.store import events as event_store
from server.store.database import libpq_url
from server.store.events import EventRow
from server.store.sessions import CompleteSessions
from server.store.staging_copy import encode_rows

SCHEMA = "bench_ceiling"
STATEMENTS = ("dedup", "flush")


class ServiceRows:
    """Batches of the rows the service's writer stages for the load clients'
    events, read and checked by the service's own code."""

    def __init__(self, organization_id: str, campaign_ids: list[str]) -> None:
        self._encoder = EventEncoder(organization_id, campaign_ids, seed=1)
        self._owners: dict[str, str | None] = dict.fromkeys(campaign_ids, organization_id)
        self._limits = Limits()

    def batch(self, count: int) -> list[EventRow]:
        request = pb.StreamEventsRequest.FromString(self._encoder.stream_message(count))
        now = now_us()
        rows = []
        straight = event_rows(request.events, now, self._owners, self._limits)
        for index, (message, straight_row) in enumerate(zip(request.events, straight, strict=True)):
            row = straight_row or validate(
                decode_event(message, index), now, self._owners, self._limits
            )
            if not isinstance(row, tuple):
                raise RuntimeError(f"the service rejects the bench's event: {row}")
            rows.append(row)
        return rows


@dataclass(slots=True)
class CeilingResult:
    statement: str
    batch: int
    events: int  # rows inserted (and verified by counting)
    batches: int
    seconds: float  # PostgreSQL time: COPY + statements + commit, summed
    wall_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def measure(*args: Any, **kwargs: Any) -> CeilingResult:
    """``measure_async``, from code without an event loop."""
    return asyncio.run(measure_async(*args, **kwargs))


async def measure_async(
    database_url: str,
    organization_id: str,
    campaign_ids: list[str],
    *,
    statement: str,
    batch: int,
    seconds: float,
    max_events: int,
    on_done: Callable[[], None] = lambda: None,
) -> CeilingResult:
    """Inserts fresh batches until ``seconds`` of PostgreSQL time or
    ``max_events`` have passed; verifies the table holds every row.
    ``on_done`` runs when the last batch is committed, before the connection
    closes."""
    if statement not in STATEMENTS:
        raise ValueError(f"statement must be one of {STATEMENTS}")
    rows = ServiceRows(organization_id, campaign_ids)
    sessions = CompleteSessions()
    # Planned afresh each time (never prepared): a plan made while the tables
    # are empty would not fit them once they have grown.
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), prepare_threshold=None)
    async with conn:
        event_store.widen_send_buffer(conn)  # as the writer's connections
        await _fresh_tables(conn)
        await conn.execute(f"SET search_path TO {SCHEMA}")
        await conn.execute(event_store.CREATE_STAGING)
        await conn.commit()
        busy = 0.0
        inserted = batches = 0
        wall_start = time.perf_counter()
        # Wall time bounds the run too, in case encoding is slow.
        while busy < seconds and inserted < max_events:
            if time.perf_counter() - wall_start > 3 * seconds + 10:
                break
            staged = rows.batch(batch)
            data = encode_rows(staged, sessions)
            started = time.perf_counter()
            if statement == "dedup":
                async with conn.cursor() as cur:
                    async with cur.copy(event_store.COPY_STAGING) as copy:
                        await copy.write(data)
                    await cur.execute(event_store.INSERT_EVENTS)
                    written = cur.rowcount
                await conn.commit()
            else:
                duplicates = await event_store.write_staged(conn, data, staged, sessions)
                written = len(staged) - len(duplicates)
            busy += time.perf_counter() - started
            inserted += written
            batches += 1
        wall = time.perf_counter() - wall_start
        on_done()
        cursor = await conn.execute(
            "SELECT count(*) FROM events WHERE organization_id = %s", (organization_id,)
        )
        stored = await cursor.fetchone()
        assert stored is not None
        if stored[0] != inserted or inserted != batches * batch:
            raise RuntimeError(
                f"ceiling {statement}: {batches * batch} rows sent, {inserted} reported "
                f"inserted, {stored[0]} stored"
            )
        await conn.execute("RESET search_path")
        await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await conn.commit()
    return CeilingResult(statement, batch, inserted, batches, busy, wall)


async def _fresh_tables(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.execute(f"CREATE SCHEMA {SCHEMA}")
    for table in event_store.FLUSH_TABLES:
        await conn.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
    await conn.commit()
