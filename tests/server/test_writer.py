"""The writer against a real PostgreSQL: what PostgreSQL refuses fails only
the submission that carried it, and the writer goes on; small flushes with
several callers wait for company, a lone caller never waits."""

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uuid_utils
from support import ServerThread, make_tenant

from server.errors import InvalidArgument, Unavailable
from server.ingest.validation import now_us
from server.ingest.writer import BatchWriter, WriterStats, _connection_fault, _Wakeup
from server.store import events as event_store
from server.store.database import libpq_url


def test_a_refused_row_fails_only_its_own_submission(analytics_server: ServerThread) -> None:
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    writer = analytics_server.components.writer

    def row(session: str | None) -> tuple:  # type: ignore[type-arg]
        return (org, uuid_utils.uuid7().bytes, campaign, 1, now_us(), None, session, None, None)

    async def both() -> list[object]:
        # Submitted together, so that they meet in one flush.
        return await asyncio.gather(
            writer.submit([row("good"), row(None)]),
            writer.submit([row("bad\x00session")]),
            return_exceptions=True,
        )

    good, bad = analytics_server.call(both())
    assert good == 0  # committed, no duplicates
    assert isinstance(bad, InvalidArgument)
    assert "refused" in bad.message and "\x00" not in bad.message
    assert not writer.degraded
    assert analytics_server.call(writer.submit([row("after")])) == 0


def test_the_buffer_refuses_what_it_cannot_hold(analytics_server: ServerThread) -> None:
    writer = analytics_server.components.writer
    rows = [("o", uuid_utils.uuid7().bytes, "c", 1, now_us(), None, None, None, None)]
    with pytest.raises(Exception, match="buffer is full"):
        analytics_server.call(writer.submit(rows * (writer.capacity + 1)))


def _rows(org: str, campaign: str, count: int = 1, event_type: int = 1) -> list[tuple]:  # type: ignore[type-arg]
    return [
        (org, uuid_utils.uuid7().bytes, campaign, event_type, now_us(), None, None, None, None)
        for _ in range(count)
    ]


def test_a_small_flush_with_company_waits_for_more(
    analytics_server: ServerThread, database_url: str
) -> None:
    """Two callers waiting together make the flush wait ``commit_delay``: a
    third caller arriving meanwhile is written in the same flush."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]

    async def run() -> WriterStats:
        writer = BatchWriter(libpq_url(database_url), commit_delay=2.0)
        await writer.start()
        try:
            together = asyncio.gather(
                writer.submit(_rows(org, campaign)), writer.submit(_rows(org, campaign))
            )
            await asyncio.sleep(0.05)  # well within the delay
            assert writer.stats.flushes == 0
            await asyncio.gather(together, writer.submit(_rows(org, campaign)))
            return writer.stats
        finally:
            await writer.shutdown(10)

    stats = asyncio.run(run())
    assert (stats.flushes, stats.last_flush_events, stats.events_accepted) == (1, 3, 3)


def test_a_lone_caller_is_never_delayed(analytics_server: ServerThread, database_url: str) -> None:
    """With a commit delay far longer than the test may run, a lone caller's
    flush starts at once; so does a large one's, whoever waits with it."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]

    async def run() -> WriterStats:
        writer = BatchWriter(libpq_url(database_url), flush_threshold=10, commit_delay=3600)
        await writer.start()
        try:
            await asyncio.wait_for(writer.submit(_rows(org, campaign)), 60)
            await asyncio.wait_for(
                asyncio.gather(
                    writer.submit(_rows(org, campaign, 10)), writer.submit(_rows(org, campaign))
                ),
                60,
            )
            return writer.stats
        finally:
            await writer.shutdown(10)

    stats = asyncio.run(run())
    assert stats.events_accepted == 12 and stats.flushes == 2


def test_shutdown_and_a_full_buffer_end_a_commit_delay(
    analytics_server: ServerThread, database_url: str
) -> None:
    """A commit delay far longer than the test may run: a full buffer ends
    it (one flush holds all), and so does shutdown (everything is committed)."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]

    async def run() -> tuple[WriterStats, bool, bool]:
        writer = BatchWriter(libpq_url(database_url), flush_threshold=10, commit_delay=3600)
        await writer.start()
        try:
            small = [asyncio.ensure_future(writer.submit(_rows(org, campaign))) for _ in range(2)]
            await asyncio.sleep(0.05)  # the flush is waiting for company
            await asyncio.wait_for(
                asyncio.gather(*small, writer.submit(_rows(org, campaign, 8))), 60
            )
            first = writer.stats.flushes == 1 and writer.stats.last_flush_events == 10
            waiting = [asyncio.ensure_future(writer.submit(_rows(org, campaign))) for _ in range(2)]
            await asyncio.sleep(0.05)
            drained = await writer.shutdown(60)
            await asyncio.gather(*waiting)
            return writer.stats, first, drained
        finally:
            await writer.shutdown(10)

    stats, first, drained = asyncio.run(run())
    assert first and drained
    assert (stats.flushes, stats.events_accepted) == (2, 12)


def test_a_value_psycopg_cannot_send_is_no_lost_connection() -> None:
    """Raised before anything reached PostgreSQL (no SQLSTATE): retrying
    cannot help, so the writer fails the batch instead of retrying forever."""

    class Open:
        closed = broken = False

    conn: Any = Open()
    assert not _connection_fault(psycopg.DataError("cannot dump"), conn)
    assert not _connection_fault(psycopg.ProgrammingError("wrong parameters"), conn)
    assert _connection_fault(psycopg.OperationalError("server closed the connection"), conn)
    assert _connection_fault(OSError("connection reset"), conn)


def test_the_worker_wakes_when_set_or_when_its_wait_ends() -> None:
    async def scenario() -> list[str]:
        wake = _Wakeup()
        loop = asyncio.get_running_loop()
        seen = []
        # Set before the wait: the wait returns at once, once.
        wake.set()
        await asyncio.wait_for(wake.wait(3600), 1)
        seen.append("set before")
        # Nothing set: the wait ends by itself after its timeout.
        started = loop.time()
        await wake.wait(0.05)
        seen.append("timed out" if loop.time() - started >= 0.04 else "too early")
        # Set while waiting: it wakes, long before its hour is up.
        loop.call_later(0.01, wake.set)
        await asyncio.wait_for(wake.wait(3600), 1)
        seen.append("set while waiting")
        return seen

    assert asyncio.run(scenario()) == ["set before", "timed out", "set while waiting"]


def test_a_value_its_column_cannot_hold_fails_only_its_own_submission(
    analytics_server: ServerThread,
) -> None:
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    writer = analytics_server.components.writer
    good = _rows(org, campaign)
    # An event type beyond int2: validation never lets one through, the
    # writer holds all the same.
    bad = _rows(org, campaign, event_type=40_000)

    async def both() -> list[object]:
        return await asyncio.gather(
            asyncio.wait_for(writer.submit(good), 30),
            asyncio.wait_for(writer.submit(bad), 30),
            return_exceptions=True,
        )

    stored, refused = analytics_server.call(both())
    assert stored == 0
    assert isinstance(refused, InvalidArgument), refused
    assert analytics_server.call(writer.submit(_rows(org, campaign))) == 0


def test_a_failing_flush_answers_its_callers_and_the_writer_goes_on(
    analytics_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    writer = analytics_server.components.writer
    real = event_store.write_batch
    calls = 0

    async def faulty(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real(*args)

    monkeypatch.setattr(event_store, "write_batch", faulty)
    with pytest.raises(Unavailable, match="may or may not be stored"):
        analytics_server.call(asyncio.wait_for(writer.submit(_rows(org, campaign)), 30))
    assert analytics_server.call(writer.submit(_rows(org, campaign))) == 0


def test_the_next_flush_starts_before_the_callers_of_the_last_hear_back(
    analytics_server: ServerThread, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What arrived during a flush is sent to PostgreSQL as soon as that
    flush commits, before its callers resume: PostgreSQL writes the next
    batch while their answers go out."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    seen: list[str] = []
    writing = asyncio.Event()  # (bound to the loop at its first wait)
    real = event_store.write_batch

    async def recorded(conn: Any, rows: Any, *args: Any) -> Any:
        seen.append(f"write {len(rows)}")
        writing.set()
        return await real(conn, rows, *args)

    monkeypatch.setattr(event_store, "write_batch", recorded)

    async def caller(name: str, count: int, writer: BatchWriter) -> None:
        await writer.submit(_rows(org, campaign, count))
        seen.append(f"{name} answered")

    async def run() -> None:
        writer = BatchWriter(libpq_url(database_url))
        await writer.start()
        try:
            first = asyncio.ensure_future(caller("first", 1, writer))
            await asyncio.wait_for(writing.wait(), 60)  # the first flush is under way
            second = asyncio.ensure_future(caller("second", 2, writer))
            await asyncio.wait_for(asyncio.gather(first, second), 60)
        finally:
            await writer.shutdown(10)

    asyncio.run(run())
    assert seen == ["write 1", "write 2", "first answered", "second answered"]


def test_writer_connections_take_a_large_flush_at_once(analytics_server: ServerThread) -> None:
    """A writer connection's Unix socket holds a large flush's COPY data, up
    to what the kernel grants (``net.core.wmem_max``): more than a socket
    holds by default, wherever the kernel allows more."""
    tenant = make_tenant(analytics_server, campaigns=1)
    writer = analytics_server.components.writer
    assert analytics_server.call(writer.submit(_rows(tenant.organization_id, "c"))) == 0
    allowed = int(Path("/proc/sys/net/core/wmem_max").read_text())
    fresh, other = socket.socketpair(socket.AF_UNIX)
    with fresh, other:
        default = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert writer._conns
    for conn in writer._conns.values():
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            assert sock.family == socket.AF_UNIX  # the embedded PostgreSQL's socket
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert granted >= min(event_store.SEND_BUFFER_BYTES, allowed)
        if allowed > default:
            assert granted > default


def test_shutdown_ends_once_the_last_flush_has_committed(
    analytics_server: ServerThread, database_url: str
) -> None:
    """With no timer to wake it for an hour, shutdown still returns as soon as
    the flushes under way have committed: everything was drained."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]

    async def run() -> tuple[bool, list[int]]:
        writer = BatchWriter(libpq_url(database_url), flush_interval=3600)
        await writer.start()
        callers = [asyncio.ensure_future(writer.submit(_rows(org, campaign))) for _ in range(3)]
        await asyncio.sleep(0)  # they submit
        drained = await writer.shutdown(60)
        return drained, await asyncio.gather(*callers)

    drained, answers = asyncio.run(run())
    assert drained and answers == [0, 0, 0]


def test_written_apart_a_committed_submission_hears_so_whatever_comes_after(
    analytics_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL refuses a batch, so each submission is written apart: the
    one committed is answered as committed, even when the write of the next
    then fails for a fault of the server's own."""
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    writer = analytics_server.components.writer
    real = event_store.write_batch
    calls = 0

    async def refusing_then_faulty(conn: Any, rows: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise psycopg.DataError("cannot send a value")  # the batch: refused for its content
        if calls == 3:
            raise RuntimeError("a bug")  # the second submission alone
        return await real(conn, rows, *args)

    monkeypatch.setattr(event_store, "write_batch", refusing_then_faulty)

    async def both() -> list[object]:
        return await asyncio.gather(
            asyncio.wait_for(writer.submit(_rows(org, campaign)), 30),
            asyncio.wait_for(writer.submit(_rows(org, campaign)), 30),
            return_exceptions=True,
        )

    committed, failed = analytics_server.call(both())
    assert calls == 3
    assert committed == 0
    assert isinstance(failed, Unavailable) and "may or may not be stored" in failed.message


def test_a_caller_stops_waiting_at_its_timeout_and_the_writer_keeps_its_events() -> None:
    """``submit``'s ``timeout`` bounds the wait for the commit and the wait
    for room alike; the events already taken stay in the writer, which goes
    on trying to commit them."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: PostgreSQL cannot be reached

    async def run() -> tuple[float, float, bool]:
        writer = BatchWriter(f"postgresql://127.0.0.1:{port}/none", capacity=2)
        await writer.start()
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(TimeoutError):
                await writer.submit(_rows("o", "c"), timeout=0.3)
            waited_for_commit = loop.time() - started
            kept = writer.is_processing or writer.buffered == 1
            started = loop.time()
            with pytest.raises(TimeoutError):  # 1 + 2 events do not fit in 2
                await writer.submit(_rows("o", "c", 2), wait_for_room=True, timeout=0.3)
            waited_for_room = loop.time() - started
        finally:
            await writer.shutdown(0.1)
        return waited_for_commit, waited_for_room, kept

    waited_for_commit, waited_for_room, kept = asyncio.run(run())
    assert 0.25 <= waited_for_commit < 5
    assert 0.25 <= waited_for_room < 5
    assert kept
