"""The two ways a flush is written (``server.store.events``): a small batch
in one statement (``write_direct``), a large one through the staging table
(``write_staged``). The same events, in the same batches, must leave the
same rows in every table, name the same duplicates and notify the same
campaigns."""

import asyncio
import json
import random
import select
import struct
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
import uuid_utils
from support import write_flush

from server.ingest.validation import now_us
from server.store import events as event_store
from server.store.database import libpq_url
from server.store.events import EventRow
from server.store.sessions import CompleteSessions
from server.store.staging_copy import jsonb

# Columns that say when a row was written, not what it holds.
WRITTEN_AT = ("received_at", "updated_at")


def _events(count: int, seed: int) -> list[EventRow]:
    """Events of every type over three days, two campaigns and a few
    sessions, with and without value, duration and metadata; the
    organization is filled in per path."""
    rng = random.Random(seed)
    day_us = 86_400_000_000
    start = now_us() - 2 * day_us
    rows: list[EventRow] = []
    for _ in range(count):
        metadata = rng.choice(
            [None, {"placement": "feed"}, {"note": "é ✓", "depth": {"list": [1, 2.5, None]}}]
        )
        rows.append(
            (
                "",
                uuid_utils.uuid7().bytes,
                rng.choice(["c1", "c2"]),
                rng.randint(1, 7),
                start + rng.randrange(2 * day_us),
                rng.choice([None, 0, 1_500_000, 2_000]),
                rng.choice([None, "s1", "s2", "s3", f"s{rng.randrange(100)}"]),
                rng.choice([None, 0.0, 12.5]),
                None if metadata is None else jsonb(json.dumps(metadata).encode()),
            )
        )
    return rows


def _for(organization: str, rows: Sequence[EventRow]) -> list[EventRow]:
    return [(organization, *row[1:]) for row in rows]  # type: ignore[misc]


async def _write(
    url: str, organization: str, batches: list[list[EventRow]], direct: bool
) -> list[list[tuple[str, bytes]]]:
    known = CompleteSessions()
    duplicates = []
    async with await psycopg.AsyncConnection.connect(libpq_url(url)) as conn:
        await event_store.prepare(conn)
        for batch in batches:
            found = await write_flush(conn, _for(organization, batch), known, direct=direct)
            duplicates.append(sorted(event_id for _, event_id in found))
    return duplicates


def _stored(url: str, organization: str) -> dict[str, list[str]]:
    """Every row of the organization in each table, as JSON, sorted."""
    stored = {}
    with psycopg.connect(libpq_url(url)) as conn:
        for table in event_store.FLUSH_TABLES:
            rows = conn.execute(
                f"SELECT to_jsonb(t) - 'organization_id' - %s::text[] FROM {table} t "
                "WHERE organization_id = %s",
                (list(WRITTEN_AT), organization),
            ).fetchall()
            stored[table] = sorted(json.dumps(row, sort_keys=True) for (row,) in rows)
    return stored


def test_both_write_paths_store_the_same(database_url: str) -> None:
    first, second = _events(400, seed=1), _events(100, seed=2)
    # Batches of one, a few, many; then a retry of stored events mixed with
    # new ones, and events repeated from two batches before.
    batches = [first[:1], first[1:8], first[8:136], first[136:264], first[264:400]]
    batches += [first[:5] + second[:20], second[:20] + second[20:100], first[100:228]]
    direct_org, staged_org = (f"org_{uuid.uuid4().hex[:8]}" for _ in range(2))

    direct = asyncio.run(_write(database_url, direct_org, batches, direct=True))
    staged = asyncio.run(_write(database_url, staged_org, batches, direct=False))

    assert direct == staged
    assert direct[5] == sorted(row[1] for row in first[:5])
    assert direct[6] == sorted(row[1] for row in second[:20])
    assert direct[7] == sorted(row[1] for row in first[100:228])
    direct_rows, staged_rows = _stored(database_url, direct_org), _stored(database_url, staged_org)
    assert len(direct_rows["events"]) == 500
    for table in event_store.FLUSH_TABLES:
        assert direct_rows[table], table
        assert direct_rows[table] == staged_rows[table], table


def test_a_batch_without_optional_values(database_url: str) -> None:
    """Columns that are all NULL in a batch travel as arrays of NULLs."""
    organization = f"org_{uuid.uuid4().hex[:8]}"
    rows = [(organization, uuid_utils.uuid7().bytes, "c1", 1, now_us(), None, None, None, None)]
    asyncio.run(_write(database_url, organization, [rows], direct=True))
    stored = _stored(database_url, organization)
    assert len(stored["events"]) == 1 and not stored["campaign_sessions"]
    (daily,) = stored["campaign_analytics"]
    assert json.loads(daily)["impressions"] == 1


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "staged"])
def test_a_write_notifies_the_campaigns_it_changed(database_url: str, direct: bool) -> None:
    organization = f"org_{uuid.uuid4().hex[:8]}"
    rows = _for(organization, _events(20, seed=3))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {event_store.UPDATES_CHANNEL}")
        asyncio.run(_write(database_url, organization, [rows], direct=direct))
        payloads = _notifications(listener)
        # A batch of stored events changes nothing and notifies nothing.
        asyncio.run(_write(database_url, organization, [rows], direct=direct))
        again = _notifications(listener)
    mine = [p for p in payloads if p.startswith(organization)]
    assert mine == event_store.update_notices(rows)
    assert not [p for p in again if p.startswith(organization)]


def _notifications(conn: psycopg.Connection[Any]) -> list[str]:
    """The payloads that arrived within half a second."""
    payloads = []
    while select.select([conn.fileno()], [], [], 0.5)[0]:
        payloads += [n.payload for n in conn.notifies(timeout=0, stop_after=100)]
    return payloads


def test_a_refused_direct_statement_raises_its_error_and_the_connection_goes_on(
    database_url: str,
) -> None:
    """The direct write runs its statement through libpq itself
    (``run_prepared``): a statement PostgreSQL refuses raises the error a
    psycopg cursor would (its class and SQLSTATE, which tell the writer
    whether to retry), and the connection serves the next one."""

    async def run() -> tuple[BaseException, bytes | None]:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
            await event_store.prepare(conn)
            await conn.execute("PREPARE divide AS SELECT 10 / $1::int4")
            with pytest.raises(psycopg.Error) as refused:
                await event_store.run_prepared(conn, "divide", [(0).to_bytes(4, "big")])
            result = await event_store.run_prepared(conn, "divide", [(5).to_bytes(4, "big")])
            return refused.value, result.get_value(0, 0)

    error, value = asyncio.run(run())
    assert isinstance(error, psycopg.errors.DivisionByZero)
    assert error.sqlstate == "22012"
    assert "division by zero" in str(error)
    assert value == (2).to_bytes(4, "big")


def test_a_direct_statement_cancelled_midway_closes_its_connection(database_url: str) -> None:
    """A statement whose result was left unread (its caller cancelled: the
    server stopping) leaves a connection that cannot serve another; it is
    closed, so that the writer opens a new one instead of failing on it."""

    async def run() -> bool:
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url))
        try:
            await event_store.prepare(conn)
            await conn.execute("PREPARE slow AS SELECT pg_sleep($1::float8)")
            sleep = asyncio.ensure_future(
                event_store.run_prepared(conn, "slow", [struct.pack(">d", 5.0)])
            )
            await asyncio.sleep(0.2)
            sleep.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sleep
            return conn.closed
        finally:
            await conn.close()

    assert asyncio.run(run())
