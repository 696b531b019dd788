"""Sessions known to be complete (``server.store.sessions``): a flush learns
them, later flushes skip them, and the sessions and bounces stored are the
same as when every session is looked up, whichever writer knew what."""

import asyncio
import uuid
from collections.abc import Callable
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

IMPRESSION = 1


def _row(org: str, campaign: str, session: str | None, event_id: bytes | None = None) -> EventRow:
    return (org, event_id or uuid_utils.uuid7().bytes, campaign, IMPRESSION, now_us(),
            2_000, session, None, None)  # fmt: skip


Write = Callable[[list[EventRow], CompleteSessions], list[Any]]


@pytest.fixture(params=["direct", "staged"])
def write(request: pytest.FixtureRequest, database_url: str) -> Write:
    """Writes a flush one of the two ways (``server.store.events``): in one
    statement, or through the staging table; returns the duplicates."""

    async def flush(rows: list[EventRow], known: CompleteSessions) -> list[Any]:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
            await event_store.prepare(conn)
            return await write_flush(conn, rows, known, direct=request.param == "direct")

    return lambda rows, known: asyncio.run(flush(rows, known))


def _stored(url: str, org: str) -> tuple[dict[str, int], tuple[int, int, int]]:
    """Event counts per session, and the rollups' (sessions, bounced, impressions)."""
    with psycopg.connect(libpq_url(url)) as conn:
        counts = dict(
            conn.execute(
                "SELECT session_id, event_count FROM campaign_sessions WHERE organization_id = %s",
                (org,),
            ).fetchall()
        )
        totals = conn.execute(
            "SELECT sum(sessions), sum(bounced_sessions), sum(impressions) "
            "FROM campaign_rollups WHERE organization_id = %s",
            (org,),
        ).fetchone()
    assert totals is not None
    return counts, tuple(int(t or 0) for t in totals)  # type: ignore[return-value]


def test_flushes_learn_complete_sessions_and_skip_them(database_url: str, write: Write) -> None:
    org, campaign = f"org_{uuid.uuid4().hex[:8]}", "c1"
    known = CompleteSessions()
    # x: one event (a bounce so far); y: two at once (complete).
    write([_row(org, campaign, "x"), _row(org, campaign, "y"),
                                      _row(org, campaign, "y")], known)  # fmt: skip
    assert (org, campaign, "y") in known and (org, campaign, "x") not in known
    assert _stored(database_url, org) == ({"x": 1, "y": 2}, (2, 1, 3))

    # x's second event completes it; y's third is skipped (staged as not open).
    write([_row(org, campaign, "x"), _row(org, campaign, "y")], known)
    assert (org, campaign, "x") in known
    assert _stored(database_url, org) == ({"x": 2, "y": 2}, (2, 0, 5))

    # Another writer (process) that knows nothing looks them up, learns
    # both, and changes nothing either; a new session z counts.
    other = CompleteSessions()
    rows = [_row(org, campaign, "x"), _row(org, campaign, "y"), _row(org, campaign, "z")]
    write(rows, other)
    assert {(org, campaign, "x"), (org, campaign, "y")} <= set(other)
    assert (org, campaign, "z") not in other
    assert _stored(database_url, org) == ({"x": 2, "y": 2, "z": 1}, (3, 1, 8))


def test_a_batch_with_stored_events_adds_only_the_new_ones(database_url: str, write: Write) -> None:
    org, campaign = f"org_{uuid.uuid4().hex[:8]}", "c1"
    known = CompleteSessions()
    first = _row(org, campaign, "a")
    write([first], known)
    # The retried event (same id) is a duplicate: session a keeps one event,
    # and only the new event (session b) is counted.
    duplicates = write([first, _row(org, campaign, "b")], known)
    assert duplicates == [(org, first[1])]
    assert _stored(database_url, org) == ({"a": 1, "b": 1}, (2, 2, 2))
    assert len(known) == 0


def test_memory_is_bounded() -> None:
    known = CompleteSessions(capacity=100)
    known.add(("o", "c", str(i)) for i in range(100))
    assert len(known) == 100 and ("o", "c", "0") in known
    known.add([("o", "c", "new")])
    # Past capacity the oldest quarter goes; the newest stay.
    assert len(known) == 75
    assert ("o", "c", "0") not in known and ("o", "c", "new") in known
    assert ("o", "c", "99") in known
