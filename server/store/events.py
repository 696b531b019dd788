"""Writing a batch of events: one transaction for raw events, rollups (per
second, minute and hour), the daily CampaignAnalytics rows and sessions.

Several batches may be written at once (on separate connections); each
upsert takes its rows in key order, so two flushes meeting on the same rows
wait for each other instead of deadlocking.

The rows are copied (binary COPY, encoded by ``server.store.staging_copy``)
into a temporary staging table. ``INSERT_EVENTS`` inserts them into
``events`` (``ON CONFLICT DO NOTHING`` drops event ids already stored): the
plain deduplicating insert. When it inserted fewer rows than were staged,
``DROP_DUPLICATES`` takes the already-stored ones out of staging (and names
them), so that ``AGGREGATE`` adds only what this batch stored to the
rollups, the daily rows and the sessions: a retried event changes nothing.

A small batch (up to ``DIRECT_WRITE_MAX`` events: single events under load
come in flushes of a few) skips staging: ``WRITE_DIRECT`` does all of it in
one statement, committed on its own, its rows sent as one array per column
(encoded by ``server.store.binary_arrays``).
One round trip instead of seven, and no staging table to empty at commit:
a flush of 4 events took 0.9 ms instead of 1.7 (a third less of
PostgreSQL's CPU, two thirds less of ours), measured against the same
PostgreSQL; past a few hundred events COPY is the cheaper. The statement is
prepared once per connection (``prepare``) and run through the connection's
libpq handle (``run_prepared``).
``tests/server/test_write_paths.py`` holds the two paths to the same result.
"""

import asyncio
import logging
import operator
import os
import socket
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import pq

from server.store.binary_arrays import (
    bool_array,
    bytea_array,
    float8_array,
    int2_array,
    int8_array,
    text_array,
    utf8_text_array,
)
from server.store.schema import COUNTERS, ROLLUP_SUMS
from server.store.sessions import CompleteSessions
from server.store.staging_copy import encode_rows

log = logging.getLogger(__name__)

# The columns of an event as stored, in order: what the ingest path hands the
# writer (an ``EventRow``).
EVENT_COLUMNS = (
    "organization_id",
    "event_id",
    "campaign_id",
    "event_type",
    "occurred_at",
    "value_micros",
    "session_id",
    "duration",
    "metadata",
)
# The tables a flush writes.
FLUSH_TABLES = (
    "events",
    "campaign_rollups",
    "campaign_rollups_minute",
    "campaign_rollups_hour",
    "campaign_analytics",
    "campaign_sessions",
)
# Staged with them: whether the event's session may still change
# (``server.store.sessions``).
STAGING_COLUMNS = (*EVENT_COLUMNS, "session_open")
STAGING_TYPES = (
    "text",
    "uuid",
    "text",
    "int2",
    "timestamptz",
    "int8",
    "text",
    "float8",
    "jsonb",
    "bool",
)

# organization_id, event_id (the UUID's 16 bytes), campaign_id, event_type,
# occurred_at (microseconds since the Unix epoch), value_micros, session_id,
# duration, metadata (in jsonb's binary form: ``staging_copy.jsonb``)
EventRow = tuple[str, bytes, str, int, int, int | None, str | None, float | None, bytes | None]


_COLLATED = {"text": 'text COLLATE "C"'}  # ids compare bytewise, as in the tables
_STAGING_DDL = (
    f"{column} {_COLLATED.get(kind, kind)}"
    for column, kind in zip(STAGING_COLUMNS, STAGING_TYPES, strict=True)
)
CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS staging_events ({", ".join(_STAGING_DDL)})
ON COMMIT DELETE ROWS
"""

COPY_STAGING = f"COPY staging_events ({', '.join(STAGING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_COUNTS_AS = ",\n            ".join(
    f"count(*) FILTER (WHERE event_type = {n}) AS {c}" for n, c in enumerate(COUNTERS, 1)
)


def _add(table: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)


def _first(numerator: str, denominator: str, scale: str = "") -> str:
    return f"CASE WHEN g.{denominator} > 0 THEN g.{numerator}{scale} / g.{denominator} ELSE 0 END"


def _ratio(table: str, numerator: str, denominator: str, scale: str = "") -> str:
    num = f"({table}.{numerator} + excluded.{numerator})"
    den = f"({table}.{denominator} + excluded.{denominator})"
    return f"CASE WHEN {den} > 0 THEN {num}{scale} / {den} ELSE 0 END"


def _rollup(name: str, table: str, bucket: str) -> str:
    """A CTE adding the batch's ``changes`` to a rollup table, by ``bucket``."""
    return f"""{name} AS (
    INSERT INTO {table} AS r (organization_id, campaign_id, bucket, {", ".join(ROLLUP_SUMS)})
    SELECT organization_id, campaign_id, {bucket}, {", ".join(f"sum({c})" for c in ROLLUP_SUMS)}
    FROM changes
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, campaign_id, bucket) DO UPDATE SET
        {_add("r", ROLLUP_SUMS)}"""


# The NOTIFY channel on which each commit names the campaigns it changed.
UPDATES_CHANNEL = "campaign_analytics_updates"
_NOTIFY_LIMIT = 7_900  # bytes; PostgreSQL refuses payloads of 8,000 or more

_CA = "campaign_analytics"
_STORED = ", ".join(EVENT_COLUMNS)

INSERT_EVENTS = f"""
INSERT INTO events ({_STORED}, received_at)
SELECT {_STORED}, now() FROM staging_events
ON CONFLICT (organization_id, event_id) DO NOTHING
"""

# The staged events that were already stored (their row is not this
# transaction's), out of staging: their organization and event id.
DROP_DUPLICATES = """
DELETE FROM staging_events st USING events e
WHERE e.organization_id = st.organization_id AND e.event_id = st.event_id
  AND e.xmin <> pg_current_xact_id()::xid
RETURNING st.organization_id, uuid_send(st.event_id)
"""


def _aggregates(source: str) -> str:
    """The CTEs that add the events of ``source`` (a relation with the
    staging columns: the events this flush stored) to the rollups, the
    daily rows and the sessions. The sessions now known to be complete are
    those of ``probed`` with ``known_count = 2`` and of ``sessions`` with
    ``event_count = 2``."""
    return f"""per_second AS (
    SELECT organization_id, campaign_id, date_trunc('second', occurred_at) AS bucket,
        {_COUNTS_AS},
        coalesce(sum(value_micros) FILTER (WHERE event_type <> 3), 0) AS spent_micros,
        coalesce(sum(value_micros) FILTER (WHERE event_type = 3), 0)
            AS conversion_value_micros,
        coalesce(sum(duration) FILTER (WHERE event_type = 4), 0) AS view_time_sum,
        count(duration) FILTER (WHERE event_type = 4) AS view_time_count
    FROM {source} GROUP BY 1, 2, 3
), probed AS (
    -- Open sessions seen in this batch, with what is known of them: nothing,
    -- one event, or two or more (complete: nothing about them can change).
    -- (A lateral probe with LIMIT keeps this an index lookup per session
    -- whatever the planner thinks of the table's size.)
    SELECT seen.*, known.event_count AS known_count FROM (
        SELECT organization_id, campaign_id, session_id,
               min(occurred_at) AS first_event_at, count(*) AS events
        FROM {source} WHERE session_open GROUP BY 1, 2, 3
    ) seen
    LEFT JOIN LATERAL (
        SELECT k.event_count FROM campaign_sessions k
        WHERE k.organization_id = seen.organization_id AND k.campaign_id = seen.campaign_id
          AND k.session_id = seen.session_id
        LIMIT 1
    ) known ON true
), sessions AS (
    INSERT INTO campaign_sessions AS s (
        organization_id, campaign_id, session_id, first_event_at, event_count)
    SELECT organization_id, campaign_id, session_id, first_event_at, least(events, 2)
    FROM probed WHERE known_count IS DISTINCT FROM 2 ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, campaign_id, session_id) DO UPDATE SET event_count = 2
    WHERE s.event_count < 2
    RETURNING organization_id, campaign_id, session_id, first_event_at, event_count,
              xmax = 0 AS created
), session_changes AS (
    -- A new session counts where its first event falls, as a bounce while it
    -- has one event; a known one-event session stops being a bounce.
    SELECT organization_id, campaign_id, date_trunc('second', first_event_at) AS bucket,
           count(*) FILTER (WHERE created) AS sessions,
           count(*) FILTER (WHERE created AND event_count = 1)
             - count(*) FILTER (WHERE NOT created) AS bounced_sessions
    FROM sessions GROUP BY 1, 2, 3
), changes AS (
    SELECT *, 0 AS sessions, 0 AS bounced_sessions FROM per_second
    UNION ALL
    SELECT organization_id, campaign_id, bucket, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           sessions, bounced_sessions
    FROM session_changes
), {_rollup("rollups", "campaign_rollups", "bucket")}
), {_rollup("minute_rollups", "campaign_rollups_minute", "date_trunc('minute', bucket)")}
), {_rollup("hour_rollups", "campaign_rollups_hour", "date_trunc('hour', bucket)")}
), daily AS (
    INSERT INTO {_CA} AS ca (
        organization_id, campaign_id, date, {", ".join(COUNTERS)}, spent, conversion_value,
        ctr, conversion_rate, cpc, cpa, engagement_rate, completion_rate, skip_rate, updated_at)
    SELECT g.*,
        {_first("clicks", "impressions", " * 100.0")},
        {_first("conversions", "clicks", " * 100.0")},
        {_first("spent", "clicks")},
        {_first("spent", "conversions")},
        {_first("engagements", "views", " * 100.0")},
        {_first("completions", "views", " * 100.0")},
        {_first("skips", "views", " * 100.0")},
        now()
    FROM (
        SELECT organization_id, campaign_id, (bucket AT TIME ZONE 'UTC')::date AS date,
            {", ".join(f"sum({c}) AS {c}" for c in COUNTERS)},
            sum(spent_micros) / 1000000.0 AS spent,
            sum(conversion_value_micros) / 1000000.0 AS conversion_value
        FROM per_second GROUP BY 1, 2, 3
    ) g
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, campaign_id, date) DO UPDATE SET
        {_add("ca", (*COUNTERS, "spent", "conversion_value"))},
        ctr = {_ratio("ca", "clicks", "impressions", " * 100.0")},
        conversion_rate = {_ratio("ca", "conversions", "clicks", " * 100.0")},
        cpc = {_ratio("ca", "spent", "clicks")},
        cpa = {_ratio("ca", "spent", "conversions")},
        engagement_rate = {_ratio("ca", "engagements", "views", " * 100.0")},
        completion_rate = {_ratio("ca", "completions", "views", " * 100.0")},
        skip_rate = {_ratio("ca", "skips", "views", " * 100.0")},
        updated_at = now()
)"""


# Adds what is staged (the events this transaction stored) to the aggregates;
# answers with the sessions now known to be complete.
AGGREGATE = f"""
WITH {_aggregates("staging_events")}
SELECT organization_id, campaign_id, session_id FROM probed WHERE known_count = 2
UNION ALL
SELECT organization_id, campaign_id, session_id FROM sessions WHERE event_count = 2
"""

# A small batch is written by one statement, committed on its own: its rows
# come as arrays (one per column, sent in binary), no staging table, one
# round trip. The events it stored (``inserted``) feed the aggregates. It
# answers one row per fact: a session now known to be complete (1), an event
# already stored (2), and the count of notifications sent (3).
WRITE_DIRECT = f"""
WITH staged AS (
    SELECT * FROM unnest(
        $1::text[], $2::bytea[], $3::text[], $4::int2[], $5::int8[], $6::int8[], $7::text[],
        $8::float8[], $9::text[], $10::bool[]
    ) AS s(organization_id, event_id, campaign_id, event_type, occurred_us, value_micros,
           session_id, duration, metadata, session_open)
), inserted AS (
    INSERT INTO events ({_STORED}, received_at)
    SELECT organization_id, encode(event_id, 'hex')::uuid, campaign_id, event_type,
           -- (exact to the microsecond from 1685 to 2255: the product goes
           -- through float8; validation keeps times near the present)
           timestamptz 'epoch' + occurred_us * interval '1 microsecond', value_micros,
           session_id, duration, metadata::jsonb, now()
    FROM staged
    ON CONFLICT (organization_id, event_id) DO NOTHING
    RETURNING organization_id, uuid_send(event_id) AS event_id, campaign_id, event_type,
              occurred_at, value_micros, session_id, duration
), stored AS (
    SELECT i.*, s.session_open FROM inserted i JOIN staged s USING (organization_id, event_id)
), {_aggregates("stored")}
SELECT 1 AS fact, organization_id, campaign_id, session_id, NULL::bytea AS event_id
FROM probed WHERE known_count = 2
UNION ALL
SELECT 1, organization_id, campaign_id, session_id, NULL FROM sessions WHERE event_count = 2
UNION ALL
SELECT 2, organization_id, NULL, NULL, event_id FROM staged s
WHERE NOT EXISTS (
    SELECT FROM inserted i WHERE i.organization_id = s.organization_id AND i.event_id = s.event_id)
UNION ALL
SELECT 3, NULL, NULL, count(pg_notify('{UPDATES_CHANNEL}', payload))::text, NULL
FROM unnest($11::text[]) payload WHERE EXISTS (SELECT FROM inserted)
"""
# The name ``WRITE_DIRECT`` is prepared under on each writer connection.
WRITE_DIRECT_NAME = "write_direct"
# Up to this many events a flush is written by ``WRITE_DIRECT``, past it by
# COPY into staging (cheaper for large batches, dearer for small ones: six
# round trips more and the staging table emptied at each commit).
DIRECT_WRITE_MAX = 128


async def prepare(conn: psycopg.AsyncConnection[Any]) -> None:
    """Sets up a writer connection: a send buffer for a flush's data at once
    (``widen_send_buffer``), autocommit (``WRITE_DIRECT`` commits on its own;
    the COPY path opens its transaction), generic plans (the direct write's
    arrays are small whatever their values), ``WRITE_DIRECT`` prepared and
    the staging table."""
    widen_send_buffer(conn)
    await conn.set_autocommit(True)
    await conn.execute("SET plan_cache_mode TO force_generic_plan")
    # (Its parameters' types are those of their casts.)
    await conn.execute(f"PREPARE {WRITE_DIRECT_NAME} AS {WRITE_DIRECT}")
    await conn.execute(CREATE_STAGING)


async def run_prepared(
    conn: psycopg.AsyncConnection[Any], name: str, parameters: Sequence[bytes | None]
) -> pq.abc.PGresult:
    """Runs the statement prepared as ``name`` on ``conn`` with ``parameters``
    already in PostgreSQL's binary form, and returns its result, in binary
    form too. It speaks libpq's asynchronous protocol itself: the statement is
    sent (``PQsendQueryPrepared``), then its result read as the socket turns
    readable. A psycopg cursor around the same exchange adapts each parameter
    and each value of the result in Python, and cost the writer a third more
    of its CPU per flush of a few events (measured in a loop of direct
    writes of 5 events: 158 µs against 108, the server's share). Raises the
    psycopg error of a statement PostgreSQL refused, as a cursor would."""
    pgconn = conn.pgconn
    formats = [pq.Format.BINARY] * len(parameters)
    pgconn.send_query_prepared(name.encode(), parameters, formats, pq.Format.BINARY)
    loop = asyncio.get_running_loop()
    fileno = pgconn.socket
    result: pq.abc.PGresult | None = None
    error: psycopg.Error | None = None
    try:
        while pgconn.flush():  # (the connection is nonblocking: data may remain)
            await _ready(loop.add_writer, loop.remove_writer, fileno)
        while True:
            while pgconn.is_busy():
                await _ready(loop.add_reader, loop.remove_reader, fileno)
                pgconn.consume_input()
            last = pgconn.get_result()
            if last is None:
                break
            if last.status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = psycopg.errors.error_from_result(last, encoding=conn.info.encoding)
            result = last
    except BaseException:
        # Cancelled, or the connection failed, with the statement's result
        # unread: the connection cannot serve another statement. Closed, so
        # that its owner sees it so (``conn.closed``) and opens another.
        pgconn.finish()
        raise
    if error is not None:
        raise error
    if result is None or result.status != pq.ExecStatus.TUPLES_OK:
        raise psycopg.InterfaceError(f"{name} returned no rows: {result and result.status}")
    return result


async def _ready(add: Any, remove: Any, fileno: int) -> None:
    """Waits until ``fileno`` is ready (``add``: the loop's ``add_reader`` or
    ``add_writer``; ``remove``: its counterpart)."""
    ready = asyncio.get_running_loop().create_future()
    add(fileno, _resolve, ready)
    try:
        await ready
    finally:
        remove(fileno)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# The socket send buffer a writer connection asks the kernel for, when it
# reaches PostgreSQL over a Unix socket (the embedded one, or one on the same
# machine): room for a large flush's COPY data (about 125 bytes an event, up
# to 20,000 events a flush) at once. The writer's connections share the event
# loop with the ingest path; with the kernel's default (about 200 KiB) a
# flush's data went out in a dozen pieces, each waiting for a turn of a busy
# loop, and streams of 100-event messages ran a sixth slower (``python -m
# bench.ingest``). TCP connections are left alone: setting a size turns the
# kernel's own tuning of their buffer off, and that tuning grows it as far.
SEND_BUFFER_BYTES = 4 * 2**20
_send_buffer_capped = False  # logged once


def widen_send_buffer(conn: psycopg.AsyncConnection[Any], size: int = SEND_BUFFER_BYTES) -> int:
    """Asks for a send buffer of at least ``size`` bytes on ``conn``'s socket
    if it is a Unix socket; returns the size the kernel reports (Linux
    reports twice what it grants, and grants at most ``net.core.wmem_max``)."""
    global _send_buffer_capped
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        if sock.family != socket.AF_UNIX or granted >= size:
            return granted
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    if granted < size and not _send_buffer_capped:
        _send_buffer_capped = True
        log.info(
            "the kernel grants the writer's connections a send buffer of %d bytes, not %d: "
            "large flushes go out in pieces (raise net.core.wmem_max for more)",
            granted,
            size,
        )
    return granted


_CAMPAIGN = operator.itemgetter(0, 2)  # an EventRow's (organization_id, campaign_id)


def update_notices(rows: Sequence[EventRow]) -> list[str]:
    """NOTIFY payloads naming the (organization, campaign) pairs of ``rows``:
    one ``organization_id<TAB>campaign_id`` line each (ids hold no tabs or
    newlines), split to fit PostgreSQL's payload limit."""
    payloads: list[str] = []
    lines: list[str] = []
    size = 0
    for organization_id, campaign_id in sorted(set(map(_CAMPAIGN, rows))):
        line = f"{organization_id}\t{campaign_id}"
        length = len(line.encode()) + 1
        if lines and size + length > _NOTIFY_LIMIT:
            payloads.append("\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += length
    if lines:
        payloads.append("\n".join(lines))
    return payloads


async def write_batch(
    conn: psycopg.AsyncConnection[Any],
    rows: Sequence[EventRow],
    complete_sessions: CompleteSessions,
) -> list[tuple[str, bytes]]:
    """Commits ``rows`` (event ids unique within the batch); returns the
    (organization_id, event_id) of rows that were already stored. The commit
    notifies ``UPDATES_CHANNEL`` of the campaigns it changed. Sessions in
    ``complete_sessions`` are not looked up; those found complete are added
    to it once committed. ``conn`` is set up by ``prepare``."""
    if len(rows) <= DIRECT_WRITE_MAX:
        return await write_direct(conn, rows, complete_sessions)
    data = encode_rows(rows, complete_sessions)
    return await write_staged(conn, data, rows, complete_sessions)


async def write_direct(
    conn: psycopg.AsyncConnection[Any],
    rows: Sequence[EventRow],
    complete_sessions: CompleteSessions,
) -> list[tuple[str, bytes]]:
    """``write_batch`` in one statement (``WRITE_DIRECT``), on a connection
    in autocommit."""
    organizations, event_ids, campaigns, types, times, values, sessions, durations, metadata = zip(
        *rows, strict=True
    )
    parameters = (
        text_array(organizations),
        bytea_array(event_ids),
        text_array(campaigns),
        int2_array(types),
        int8_array(times),
        int8_array(values),
        text_array(sessions),
        float8_array(durations),
        # The JSON text of each document (jsonb's binary form less its version byte).
        utf8_text_array([None if document is None else document[1:] for document in metadata]),
        bool_array(
            session is not None and (organization, campaign, session) not in complete_sessions
            for organization, campaign, session in zip(
                organizations, campaigns, sessions, strict=True
            )
        ),
        text_array(update_notices(rows)),
    )
    result = await run_prepared(conn, WRITE_DIRECT_NAME, parameters)
    # Its rows, in binary: the fact (an integer), three texts and a bytea.
    complete: list[tuple[str, str, str]] = []
    stored_before: list[tuple[str, bytes]] = []
    for row in range(result.ntuples):
        fact = int.from_bytes(_field(result, row, 0), "big", signed=True)
        if fact == _COMPLETE:
            organization, campaign, session = (_field(result, row, c).decode() for c in (1, 2, 3))
            complete.append((organization, campaign, session))
        elif fact == _STORED_BEFORE:
            stored_before.append((_field(result, row, 1).decode(), _field(result, row, 4)))
    complete_sessions.add(complete)
    return stored_before


def _field(result: pq.abc.PGresult, row: int, column: int) -> bytes:
    """A value of ``result`` that the statement never makes NULL."""
    value = result.get_value(row, column)
    assert value is not None
    return value


_COMPLETE, _STORED_BEFORE = 1, 2  # WRITE_DIRECT's facts


async def write_staged(
    conn: psycopg.AsyncConnection[Any],
    data: bytes | bytearray,
    rows: Sequence[EventRow],
    complete_sessions: CompleteSessions,
) -> list[tuple[str, bytes]]:
    """``write_batch`` of rows already encoded (``encode_rows``) into ``data``."""
    complete: list[tuple[str, str, str]] = []
    duplicates: list[tuple[str, bytes]] = []
    async with conn.transaction(), conn.cursor() as cur:
        async with cur.copy(COPY_STAGING) as copy:
            await copy.write(data)
        await cur.execute(INSERT_EVENTS)
        inserted = cur.rowcount
        if inserted < len(rows):
            await cur.execute(DROP_DUPLICATES)
            duplicates = await cur.fetchall()  # type: ignore[assignment]
        if inserted:
            await cur.execute(AGGREGATE)
            complete = await cur.fetchall()  # type: ignore[assignment]
            # Delivered with the commit, to every server process listening.
            for payload in update_notices(rows):
                await cur.execute("SELECT pg_notify(%s, %s)", (UPDATES_CHANNEL, payload))
    complete_sessions.add(complete)
    return duplicates
