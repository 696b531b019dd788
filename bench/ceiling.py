"""PostgreSQL's own ceiling: the service's rows, bulk-inserted with no service.

The rows are those the service's writer would stage for the load clients'
events (``server.store.events.STAGING_COLUMNS``: same organization, campaigns,
type mix, values, sessions and metadata; UUIDv7 ids). They are pre-encoded in
PostgreSQL's binary COPY format outside the timed part, so what is timed is
PostgreSQL's work for one batch, on one connection as the service's writer
uses: ``COPY`` into the service's temporary staging table, one statement, and
the commit. Two statements are timed:

- ``dedup``: ``INSERT INTO events ... SELECT ... FROM staging_events ON
  CONFLICT (organization_id, event_id) DO NOTHING``: the deduplicating bulk
  insert, the least any durable, exactly-once ingest of these rows costs;
- ``flush``: the service's own ``FLUSH`` statement (events, per-second
  rollups, daily CampaignAnalytics, sessions), to show what the aggregates cost.

Both run against fresh copies of the service's tables (``CREATE TABLE ... (LIKE
public.<table> INCLUDING ALL)``: same columns, keys and indexes) in a schema of
their own, dropped afterwards.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import uuid_utils

from loadgen.events import EventEncoder, MixedEvent
from server.store import events as event_store
from server.store.database import libpq_url

SCHEMA = "bench_ceiling"
TABLES = (
    "events",
    "campaign_rollups",
    "campaign_rollups_minute",
    "campaign_rollups_hour",
    "campaign_analytics",
    "campaign_sessions",
)
_STAGED = event_store.STAGING_COLUMNS
# Like the service's statement, received_at is the commit's time when the
# writer does not stage it.
_RECEIVED = ("", "") if "received_at" in _STAGED else (", received_at", ", now()")
DEDUP = (
    f"INSERT INTO events ({', '.join(_STAGED)}{_RECEIVED[0]}) "
    f"SELECT {', '.join(_STAGED)}{_RECEIVED[1]} FROM staging_events "
    "ON CONFLICT (organization_id, event_id) DO NOTHING"
)
STATEMENTS = {"dedup": DEDUP, "flush": event_store.FLUSH}

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
_EVENT_TYPES = {"impression": 1, "click": 2, "conversion": 3, "view": 4,
                "engagement": 5, "completion": 6, "skip": 7}  # fmt: skip
# Binary COPY encodings of the staging table's types.
_ENCODE: dict[str, Callable[[Any], bytes]] = {
    "text": lambda v: v.encode(),
    "uuid": lambda v: v,  # the 16 bytes
    "int2": struct.Struct(">h").pack,
    "int8": struct.Struct(">q").pack,
    "float8": struct.Struct(">d").pack,
    "timestamptz": struct.Struct(">q").pack,  # microseconds since 2000-01-01
    "jsonb": lambda v: b"\x01" + orjson.dumps(v),
}
_PER_ROW = object()  # a column whose value is made per row (the event id)
_PER_BATCH = object()  # ... or per batch (the times)


def _field(value: Any, kind: str) -> bytes:
    if value is None:
        return _NULL
    data = _ENCODE[kind](value)
    return struct.pack(">i", len(data)) + data


def _values(organization_id: str, m: MixedEvent) -> dict[str, Any]:
    """The staged columns of an event, by name, as the service's writer stages them."""
    metadata: dict[str, Any] = {"sessionId": m.session_id, "deviceType": m.device_type}
    if m.duration is not None:
        metadata["duration"] = m.duration
    return {
        "organization_id": organization_id,
        "event_id": _PER_ROW,
        "campaign_id": m.campaign_id,
        "event_type": _EVENT_TYPES[m.event_type],
        "occurred_at": _PER_BATCH,
        "received_at": _PER_BATCH,
        "value_micros": None if m.value is None else round(m.value * 1_000_000),
        "session_id": m.session_id,
        "duration": m.duration,
        "metadata": metadata,
    }


class RowEncoder:
    """Binary COPY data of staged event rows, for ``COPY staging_events``,
    column by column as ``server.store.events.STAGING_COLUMNS`` names them."""

    def __init__(self, encoder: EventEncoder) -> None:
        unknown = set(_STAGED) - set(_values("", encoder.mix[0]))
        if unknown:
            raise RuntimeError(f"the bench cannot fill staging columns {sorted(unknown)}")
        # Per mix position: the encoded row, split where the id and times go.
        self._templates = []
        count = struct.pack(">h", len(_STAGED))
        for m in encoder.mix:
            values = _values(encoder.organization_id, m)
            parts: list[Any] = [count]
            for column, kind in zip(_STAGED, event_store.STAGING_TYPES, strict=True):
                value = values[column]
                if value is _PER_ROW or value is _PER_BATCH:
                    parts.append(value)
                    parts.append(b"")
                else:
                    parts[-1] += _field(value, kind)
            self._templates.append(parts)
        self._position = 0

    def batch(self, count: int) -> bytes:
        since = datetime.now(UTC) - _EPOCH_2000
        micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
        stamp = _field(micros - micros % 1_000_000, "timestamptz")  # whole seconds, as sent
        out = [_HEADER]
        n = len(self._templates)
        for i in range(self._position, self._position + count):
            for part in self._templates[i % n]:
                if part is _PER_ROW:
                    out.append(_field(uuid_utils.uuid7().bytes, "uuid"))
                elif part is _PER_BATCH:
                    out.append(stamp)
                else:
                    out.append(part)
        self._position = (self._position + count) % n
        out.append(_TRAILER)
        return b"".join(out)


@dataclass(slots=True)
class CeilingResult:
    statement: str
    batch: int
    events: int  # rows inserted (and verified by counting)
    batches: int
    seconds: float  # PostgreSQL time: COPY + statement + commit, summed
    wall_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def measure(
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
    sql = STATEMENTS[statement]
    rows = RowEncoder(EventEncoder(organization_id, campaign_ids, seed=1))
    # Planned afresh each time (never prepared): a plan made while the tables
    # are empty would not fit them once they have grown.
    with psycopg.connect(libpq_url(database_url), prepare_threshold=None) as conn:
        _fresh_tables(conn)
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute(event_store.CREATE_STAGING)
        conn.commit()
        busy = 0.0
        inserted = batches = 0
        wall_start = time.perf_counter()
        # Wall time bounds the run too, in case encoding is slow.
        while busy < seconds and inserted < max_events:
            if time.perf_counter() - wall_start > 3 * seconds + 10:
                break
            data = rows.batch(batch)
            started = time.perf_counter()
            with conn.cursor() as cur:
                with cur.copy(event_store.COPY_STAGING) as copy:
                    copy.write(data)
                cur.execute(sql)
                # The flush statement answers with the count of rows it inserted.
                written = cur.rowcount if statement == "dedup" else cur.fetchone()[0]  # type: ignore[index]
            conn.commit()
            busy += time.perf_counter() - started
            inserted += written
            batches += 1
        wall = time.perf_counter() - wall_start
        on_done()
        stored = conn.execute(
            "SELECT count(*) FROM events WHERE organization_id = %s", (organization_id,)
        ).fetchone()
        assert stored is not None
        if stored[0] != inserted or inserted != batches * batch:
            raise RuntimeError(
                f"ceiling {statement}: {batches * batch} rows sent, {inserted} reported "
                f"inserted, {stored[0]} stored"
            )
        conn.execute("RESET search_path")
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        conn.commit()
    return CeilingResult(statement, batch, inserted, batches, busy, wall)


def _fresh_tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    conn.execute(f"CREATE SCHEMA {SCHEMA}")
    for table in TABLES:
        conn.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
    conn.commit()


def check_rows(database_url: str, organization_id: str, campaign_ids: list[str]) -> None:
    """Raises unless the binary rows read back as the values they encode."""
    encoder = EventEncoder(organization_id, campaign_ids, seed=1)
    rows = RowEncoder(encoder)
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(event_store.CREATE_STAGING)
        with conn.cursor() as cur:
            with cur.copy(event_store.COPY_STAGING) as copy:
                copy.write(rows.batch(3))
            cur.execute(f"SELECT {', '.join(event_store.STAGING_COLUMNS)} FROM staging_events")
            read = cur.fetchall()
        conn.rollback()
    now = datetime.now(UTC)
    for row, m in zip(read, encoder.mix, strict=False):
        got = dict(zip(_STAGED, row, strict=True))
        want = _values(organization_id, m)
        for column, value in got.items():
            if column == "event_id":
                assert isinstance(value, uuid.UUID) and value.version == 7, got
            elif column in ("occurred_at", "received_at"):
                assert abs((value - now).total_seconds()) < 5, got
            else:
                assert value == want[column], (column, value, want[column])
    assert len(read) == 3
