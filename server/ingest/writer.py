"""The batched writer: a bounded buffer of validated events, written to
PostgreSQL by group commit.

A flush takes everything buffered and commits it in one transaction
(``server.store.events.write_batch``). One starts when the buffer holds
``flush_threshold`` events, when ``flush_interval`` has passed (once no
flush is running), or at once when a caller is waiting and no flush is
running: started by the worker task, or by the flush that just ended. Up to
``connections`` flushes run at once, so one batch is copied while PostgreSQL
works on another; but while one runs, the next starts only for a full
buffer (``flush_threshold`` events): small flushes written side by side
would each carry half the events for the same cost per flush (with 16
single-event calls in flight, a second small flush cut throughput by a
quarter: ``python -m bench.ingest``). What arrives during a flush waits for
the next one, so batches grow with load; that one starts as the flush
commits, before its callers are answered, so PostgreSQL writes it while
their answers go out. And as PostgreSQL's
``commit_delay`` does, a small flush that already has company (at least
``COMMIT_SIBLINGS`` callers waiting) waits ``commit_delay`` for more before
it starts: a lone caller is never delayed, while many small callers share
fewer, larger flushes (16 single-event calls in flight: 1.5 to 2 times as
many events per flush and about a quarter more calls per second, at a
lower median latency). A caller's ``submit`` returns only after its events
are committed: acknowledged means durable.

The buffer is bounded: past ``capacity`` events (buffered or being written)
``submit`` raises ``ResourceExhausted`` at once (or waits for room, if asked)
instead of growing memory. When
PostgreSQL cannot be reached the writer keeps the batch, reports itself
degraded and retries with exponential backoff and jitter until it commits;
callers stop waiting at their own deadlines.
"""

import asyncio
import contextlib
import logging
import operator
import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import psycopg
import psycopg.errors

from server.errors import InvalidArgument, ResourceExhausted, Unavailable
from server.observability.metrics import ServerMetrics
from server.store import events as event_store
from server.store.database import unreachable_cause
from server.store.events import EventRow
from server.store.sessions import CompleteSessions

log = logging.getLogger(__name__)


# Callers waiting, at least, for a small flush to wait ``commit_delay`` for more.
COMMIT_SIBLINGS = 2


@dataclass(slots=True)
class WriterStats:
    events_accepted: int = 0
    events_duplicate: int = 0
    flushes: int = 0
    last_flush: datetime | None = None
    last_flush_events: int = 0
    last_flush_duration_ms: float = 0.0
    degraded_reason: str = ""
    degraded_since: datetime | None = None
    commit_errors: int = 0


@dataclass(slots=True)
class _Submission:
    rows: Sequence[EventRow]
    done: asyncio.Future[int]  # how many of the rows were already stored


# A caller's future and what it is to hear: how many of its events were
# duplicates, or why they were not stored.
_Outcome = tuple[asyncio.Future[int], int | BaseException]


@dataclass(slots=True)
class _Backoff:
    initial: float = 0.05
    maximum: float = 5.0
    attempt: int = field(default=0)

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)


class BatchWriter:
    def __init__(
        self,
        database_url: str,
        *,
        flush_threshold: int = 100,
        flush_interval: float = 5.0,
        capacity: int = 100_000,
        max_flush_events: int = 20_000,
        connections: int = 2,
        commit_delay: float = 0.001,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._url = database_url
        self.flush_threshold = flush_threshold
        self.flush_interval = flush_interval
        self.capacity = capacity
        self.max_flush_events = max_flush_events
        self.connections = connections
        self.commit_delay = commit_delay
        self._pending: list[_Submission] = []
        self._pending_events = 0
        self._in_flight_events = 0
        self._wake = _Wakeup()
        self._flushed = asyncio.Event()
        self._closing = False
        self._delay: asyncio.Future[None] | None = None  # a commit delay under way
        self._conns: dict[int, psycopg.AsyncConnection[Any]] = {}
        self._worker: asyncio.Task[None] | None = None
        # Flushes under way, and the submissions each carries.
        self._flushes: dict[asyncio.Task[None], list[_Submission]] = {}
        self._free = list(range(connections))  # connection slots no flush holds
        self._complete_sessions = CompleteSessions()
        self.stats = WriterStats()
        # Gauges are read when scraped, on another thread: plain reads only.
        self._metrics = metrics = metrics or ServerMetrics()
        metrics.buffered_events.set_function(lambda: self._pending_events)
        metrics.events_in_flight.set_function(lambda: self._in_flight_events)
        metrics.buffer_capacity.set(capacity)
        metrics.writer_degraded.set_function(lambda: 1 if self.stats.degraded_reason else 0)

    # -- state ---------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Events waiting for the next flush."""
        return self._pending_events

    @property
    def is_processing(self) -> bool:
        return self._in_flight_events > 0

    @property
    def degraded(self) -> bool:
        return bool(self.stats.degraded_reason)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Starts the worker; connections open with the first flush (and are
        opened again, with backoff, whenever PostgreSQL goes away)."""
        self._worker = asyncio.create_task(self._run(), name="batch-writer")

    async def shutdown(self, timeout: float) -> bool:
        """Stops taking events and commits what is buffered, for at most
        ``timeout`` seconds; returns whether everything was committed."""
        self._closing = True
        self._wake.set()
        _resolve(self._delay)
        drained = True
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            except TimeoutError:
                drained = False
                flushes = dict(self._flushes)
                for task in (self._worker, *flushes):
                    task.cancel()
                await asyncio.gather(self._worker, *flushes, return_exceptions=True)
                # A flush cancelled before its first step never answered its callers.
                stopped = "the server stopped while these events were being written"
                _deliver(_failures(list(chain(*flushes.values())), _unknown_outcome(stopped)))
        _deliver(
            _failures(
                self._pending, Unavailable("the server stopped before these events were committed")
            )
        )
        self._pending.clear()
        self._flushed.set()  # callers waiting for room hear that the server stopped
        for conn in self._conns.values():
            await conn.close()
        self._conns.clear()
        return drained

    # -- submitting ----------------------------------------------------------

    async def submit(
        self,
        rows: Sequence[EventRow],
        wait: bool = True,
        wait_for_room: bool = False,
        timeout: float | None = None,
    ) -> int:
        """Buffers ``rows`` and, with ``wait``, returns once they are committed:
        how many of them were duplicates (their event id was already stored).

        Event ids must be unique within ``rows``. When the buffer is full it
        raises ``ResourceExhausted``, or with ``wait_for_room`` waits until a
        flush makes room. Raises ``Unavailable`` when shutting down, and
        ``TimeoutError`` when ``timeout`` seconds pass first (the events
        may still be committed).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closing:
                raise Unavailable("the server is shutting down; retry on another server")
            used = self._pending_events + self._in_flight_events
            if used + len(rows) <= self.capacity or (used == 0 and wait_for_room):
                break
            if not wait_for_room:
                raise ResourceExhausted(
                    f"the ingest buffer is full ({self.capacity} events); retry shortly",
                    retry_after=1.0,
                )
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError
            await self.wait_for_room(None if deadline is None else deadline - loop.time())
        done: asyncio.Future[int] = loop.create_future()
        self._pending.append(_Submission(rows, done))
        self._pending_events += len(rows)
        full = self._pending_events >= self.flush_threshold
        if full:
            _resolve(self._delay)
        # The worker is woken only when a flush can start now: otherwise the
        # flush under way starts the next one as it ends (``_flush``).
        if (wait or full) and self._startable():
            self._wake.set()
        if not wait:
            done.add_done_callback(_consume_exception)
            return 0
        # A caller that stops waiting (cancelled, or past its deadline) ends
        # ``done``, not the write: the events stay in the flush, which skips
        # results nobody waits for. (A timer, not ``asyncio.timeout``: a
        # third of the cost, on every call.)
        if deadline is None:
            return await done
        timer = loop.call_at(deadline, _time_out, done)
        try:
            return await done
        finally:
            timer.cancel()

    async def wait_for_room(self, timeout: float | None) -> None:
        """Waits until the next flush ends (room may have been made), for at
        most ``timeout`` seconds."""
        flushed = self._flushed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flushed.wait(), timeout)

    # -- the worker ----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._start_flushes():
                await self._commit_delay()
                if self._startable():
                    self._start_flush()
                continue
            if self._closing and not self._pending and not self._flushes:
                return
            await self._wake.wait(self.flush_interval)

    def _startable(self) -> bool:
        """Whether a flush is due: events wait, a connection is free, and no
        other flush runs (or the buffer is full, or the server is stopping)."""
        free = len(self._free)
        return (
            bool(self._pending)
            and free > 0
            and (
                free == self.connections
                or self._pending_events >= self.flush_threshold
                or self._closing
            )
        )

    def _start_flushes(self) -> bool:
        """Starts the flushes that are due; returns whether the next one
        should first wait ``commit_delay`` for company (the worker waits)."""
        while self._startable():
            if self._worth_delaying():
                return True
            self._start_flush()
        return False

    def _start_flush(self) -> None:
        # Up to ``connections`` flushes run at once, each on its own
        # connection: one batch is copied while PostgreSQL works on another.
        batch = self._take()
        task = asyncio.create_task(self._flush(self._free.pop(), batch), name="flush")
        self._flushes[task] = batch
        task.add_done_callback(self._flush_ended)

    def _flush_ended(self, task: asyncio.Task[None]) -> None:
        del self._flushes[task]
        if self._closing:
            self._wake.set()  # the worker waits for the last flush to end

    def _worth_delaying(self) -> bool:
        """Whether the next flush should wait ``commit_delay`` for company:
        it would be small, and other callers are waiting with it."""
        return (
            self.commit_delay > 0
            and not self._closing
            and len(self._free) == self.connections
            and len(self._pending) >= COMMIT_SIBLINGS
            and self._pending_events < self.flush_threshold
        )

    async def _commit_delay(self) -> None:
        """Waits ``commit_delay``, or less: a full buffer or shutdown ends the wait."""
        self._delay = asyncio.get_running_loop().create_future()
        try:
            await _wait(self._delay, self.commit_delay)
        finally:
            self._delay = None

    def _take(self) -> list[_Submission]:
        """Takes whole submissions, up to ``max_flush_events`` (at least one)."""
        taken: list[_Submission] = []
        count = 0
        while self._pending:
            size = len(self._pending[0].rows)
            if taken and count + size > self.max_flush_events:
                break
            taken.append(self._pending.pop(0))
            count += size
        self._pending_events -= count
        self._in_flight_events += count
        return taken

    async def _flush(self, slot: int, batch: list[_Submission]) -> None:
        try:
            outcomes = await self._write(slot, batch)
        except Exception:
            # A fault of the server's own: its callers hear of it instead of
            # waiting for ever, and the writer goes on.
            log.exception("a flush of %d submissions failed", len(batch))
            outcomes = _failures(
                batch, _unknown_outcome("the server failed while writing these events")
            )
        except asyncio.CancelledError:
            self._release(slot, batch)
            stopped = "the server stopped while these events were being written"
            _deliver(_failures(batch, _unknown_outcome(stopped)))
            raise
        # The next flush starts before the callers of this one hear back:
        # PostgreSQL writes it while their answers are sent.
        self._release(slot, batch)
        if self._start_flushes():
            self._wake.set()  # the next flush waits for company: the worker's to do
        _deliver(outcomes)

    def _release(self, slot: int, batch: list[_Submission]) -> None:
        """Ends a flush's hold on its connection and on its room in the buffer."""
        self._free.append(slot)
        self._in_flight_events -= sum(len(submission.rows) for submission in batch)
        self._flushed.set()
        self._flushed = asyncio.Event()

    async def _write(self, slot: int, batch: list[_Submission]) -> list[_Outcome]:
        """Commits ``batch``; returns what each of its callers is to hear."""
        # An event id may repeat across the submissions of one flush (a retry
        # racing its original): the first is written, the others are
        # duplicates. Usually no id repeats (the ids, whatever their
        # organization, are all distinct) and every row is written.
        total = sum(len(submission.rows) for submission in batch)
        ids: set[bytes] = set()
        for submission in batch:
            ids.update(map(_event_id, submission.rows))
        written: list[list[tuple[str, bytes]]] | None = None  # None: all of their rows
        if len(ids) == total:
            rows = list(chain.from_iterable(submission.rows for submission in batch))
            repeats = [0] * len(batch)
        else:
            rows, written, repeats = _first_occurrences(batch)

        backoff = _Backoff()
        started = time.perf_counter()
        while True:
            try:
                conn = await self._connection(slot)
                stored = await event_store.write_batch(conn, rows, self._complete_sessions)
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                # Two flushes met on the same rows; the transaction was rolled
                # back, so writing the batch again is safe.
                log.info("flush of %d events met another flush; writing it again", len(rows))
                self.stats.commit_errors += 1
                self._metrics.commit_errors.labels("conflict").inc()
                self._metrics.commit_retries.inc()
            except _UNSENDABLE as exc:
                # A value the rows' encoding cannot hold: refused as PostgreSQL
                # refuses one, so that only its submission fails.
                return await self._write_apart(slot, batch, exc)
            except (psycopg.Error, OSError) as exc:
                if not _connection_fault(exc, self._conns.get(slot)):
                    return await self._write_apart(slot, batch, exc)
                await self._lost_connection(slot, exc)
                self._metrics.commit_retries.inc()
                await asyncio.sleep(backoff.next_delay())

        already = set(stored)
        duplicates = 0
        outcomes: list[_Outcome] = []
        for number, (submission, repeated) in enumerate(zip(batch, repeats, strict=True)):
            count = repeated
            if already:
                keys = _keys(submission.rows) if written is None else written[number]
                count += sum(1 for key in keys if key in already)
            duplicates += count
            outcomes.append((submission.done, count))

        stats = self.stats
        stats.events_accepted += total - duplicates
        if total > duplicates:
            self._metrics.events_accepted.inc(total - duplicates)
        stats.events_duplicate += duplicates
        if duplicates:
            self._metrics.events_duplicate.inc(duplicates)
        stats.flushes += 1
        stats.last_flush = datetime.now(UTC)
        stats.last_flush_events = len(rows)
        elapsed = time.perf_counter() - started
        stats.last_flush_duration_ms = elapsed * 1000
        self._metrics.flush_events.observe(len(rows))
        self._metrics.flush_duration.observe(elapsed)
        return outcomes

    async def _write_apart(
        self, slot: int, batch: list[_Submission], exc: BaseException
    ) -> list[_Outcome]:
        """PostgreSQL refused the batch for its content, not for a fault: each
        submission is written on its own, so only the offending one fails."""
        if len(batch) > 1:
            # Each caller hears as soon as its own events are committed (or refused).
            outcomes: list[_Outcome] = []
            for submission in batch:
                written = await self._write(slot, [submission])
                _deliver(written)
                outcomes += written
            return outcomes
        log.error("PostgreSQL refused %d events: %s", len(batch[0].rows), exc)
        self.stats.commit_errors += 1
        self._metrics.commit_errors.labels("refused").inc()
        return _failures(
            batch,
            InvalidArgument(
                f"PostgreSQL refused these events ({type(exc).__name__}); nothing was "
                "stored: look for characters or sizes it cannot hold"
            ),
        )

    async def _connection(self, slot: int) -> psycopg.AsyncConnection[Any]:
        conn = self._conns.get(slot)
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=5)
            await event_store.prepare(conn)
            self._conns[slot] = conn
            if self.stats.degraded_reason:
                log.info("PostgreSQL reachable again; the writer recovered")
            self.stats.degraded_reason = ""
            self.stats.degraded_since = None
        return conn

    async def _lost_connection(self, slot: int, exc: BaseException) -> None:
        # The status says since when and why, in short; the log has the whole message.
        stats = self.stats
        if stats.degraded_since is None:
            stats.degraded_since = datetime.now(UTC)
        since = stats.degraded_since.strftime("%Y-%m-%dT%H:%M:%SZ")
        reason = (
            f"PostgreSQL unreachable since {since}: {unreachable_cause(exc)}; "
            "the writer keeps the events and retries"
        )
        if reason != stats.degraded_reason:
            log.warning("cannot write to PostgreSQL: %s; retrying", str(exc).strip())
        stats.degraded_reason = reason
        stats.commit_errors += 1
        self._metrics.commit_errors.labels("unreachable").inc()
        conn = self._conns.pop(slot, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


_event_id = operator.itemgetter(1)


def _keys(rows: Sequence[EventRow]) -> list[tuple[str, bytes]]:
    """(organization_id, event_id) of each row: what identifies a stored event."""
    return [(row[0], row[1]) for row in rows]


def _first_occurrences(
    batch: list[_Submission],
) -> tuple[list[EventRow], list[list[tuple[str, bytes]]], list[int]]:
    """The rows to write (first occurrence of each id), the keys each
    submission wrote, and how many of its events repeated an earlier one."""
    seen: set[tuple[str, bytes]] = set()
    rows: list[EventRow] = []
    written: list[list[tuple[str, bytes]]] = []
    repeats: list[int] = []
    for submission in batch:
        mine = []
        submission_keys = _keys(submission.rows)
        for row, key in zip(submission.rows, submission_keys, strict=True):
            if key not in seen:
                seen.add(key)
                rows.append(row)
                mine.append(key)
        written.append(mine)
        repeats.append(len(submission_keys) - len(mine))
    return rows, written, repeats


# Raised while encoding rows whose values their columns cannot hold (an int2
# out of range, text that is not Unicode, ...).
_UNSENDABLE = (struct.error, UnicodeEncodeError, OverflowError)

# SQLSTATEs of a lost server connection (class 08) or a server going away.
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})


def _connection_fault(exc: BaseException, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether ``exc`` means PostgreSQL could not be reached (retry later), as
    opposed to PostgreSQL refusing what was sent (retrying cannot help)."""
    if isinstance(exc, OSError) or conn is None or conn.closed or conn.broken:
        return True
    state = getattr(exc, "sqlstate", None)
    if state is None and isinstance(exc, psycopg.DataError | psycopg.ProgrammingError):
        return False  # psycopg itself could not send a value: retrying cannot help
    return state is None or state.startswith("08") or state in _CONNECTION_STATES


def _unknown_outcome(what: str) -> Unavailable:
    """The error of a flush that may or may not have committed: ``what`` happened."""
    return Unavailable(
        f"{what}: they may or may not be stored; send them again with the same eventIds "
        "(stored ones count as duplicates)"
    )


def _failures(batch: list[_Submission], error: BaseException) -> list[_Outcome]:
    return [(submission.done, error) for submission in batch]


def _deliver(outcomes: list[_Outcome]) -> None:
    """Tells each caller still waiting what became of its events."""
    for done, outcome in outcomes:
        if done.done():
            continue
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
            done.add_done_callback(_consume_exception)
        else:
            done.set_result(outcome)


class _Wakeup:
    """Wakes the worker: ``set`` resumes its ``wait`` at the loop's next turn
    (``asyncio.wait_for`` on an ``asyncio.Event`` wraps the wait in a task:
    three turns, each as long as everything else ready on a busy loop)."""

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        _resolve(self._waiter)

    async def wait(self, timeout: float) -> None:
        """Returns once set (at once if set since the last wait), or after
        ``timeout`` seconds."""
        if not self._set:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(self._waiter, timeout)
            finally:
                self._waiter = None
        self._set = False


async def _wait(waiter: asyncio.Future[None], timeout: float) -> None:
    """Waits until ``waiter`` is resolved (``_resolve``), for at most ``timeout`` seconds."""
    timer = asyncio.get_running_loop().call_later(timeout, _resolve, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    """Ends a wait (a commit delay, the worker's), if any and not ended."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _time_out(done: asyncio.Future[int]) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


def _consume_exception(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
