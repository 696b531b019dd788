"""Load clients: worker processes that send events and count what is acknowledged.

Each worker is a process of its own (so the load does not share a GIL with the
server or with other workers) running one asyncio loop. The coordinator
(``loadgen.workers``) sends it a ``LoadSpec``; it waits for the common start
time, drives its share of the load until the time or its event budget is
spent (or the coordinator asks it to stop), waits for every call still in
flight to answer, and sends back a ``LoadResult``. While it runs it keeps its
counters in memory shared with the coordinator, so progress shows live. The
gRPC methods are called with pre-serialised requests (``loadgen.events``) and
the REST route over plain HTTP/1.1 keep-alive connections written here, so
that a worker spends little of the machine's cores.

Modes of load:

- ``stream``: ``concurrency`` client streams (StreamEvents), each sending
  messages of ``batch`` events until the time is up (or ``stream_events`` were
  sent, then a new stream); the events count as acknowledged when the stream's
  reply says so.
- ``unary`` / ``unary-single``: ``concurrency`` callers each sending one
  IngestEvents call (``batch`` events, or one ``event``) after the other.
- ``rest``: ``concurrency`` keep-alive connections each POSTing
  ``{"events": [...]}`` bodies to ``/api/analytics/real-time`` one after the other.
- ``paced``: one caller sending single events at ``rate`` calls per second
  (for latency at light load).
- ``overload``: IngestEvents calls of ``batch`` events started at ``rate`` calls
  per second without waiting for earlier ones (at most ``max_in_flight``
  outstanding); refusals (RESOURCE_EXHAUSTED) are counted, not retried.

What was acknowledged is also counted per campaign and event type (a
``Tally`` of mix positions): every event of a reply that accepted all of its
events. A reply that reports duplicates or rejections leaves its accepted
events ``unattributed``: the reply does not say which they were.
Latencies are per call, and for a stream per message: from its write to the
stream's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
import grpc.aio
import orjson

from clients import DEFAULT_TIMEOUT, pb
from loadgen.events import EventEncoder, Tally
from server.app import MAX_MESSAGE_BYTES

INGEST_METHOD = "/analytics.v1.IngestService/IngestEvents"
STREAM_METHOD = "/analytics.v1.IngestService/StreamEvents"
REST_PATH = "/api/analytics/real-time"
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A connection of its own for every channel, as separate clients would have.
    ("grpc.use_local_subchannel_pool", 1),
)
# Outcomes after which nothing of the call was stored.
REFUSED = frozenset({"RESOURCE_EXHAUSTED", "HTTP 429"})
# The counters a worker shares while it runs, in this order.
COUNTERS = ("sent", "acked", "rejected", "refused", "unknown", "calls", "errors")
COUNTERS_INTERVAL = 0.1  # seconds between two updates of the shared counters
READY = "ready"  # a worker's first message: imported and waiting for specs


@dataclass(slots=True)
class LoadSpec:
    mode: str
    target: str  # host:port of the gRPC server, or of the REST gateway
    api_key: str
    organization_id: str
    campaign_ids: list[str]
    batch: int
    concurrency: int
    seconds: float
    max_events: int
    start_at: float  # time.monotonic() (system-wide on Linux) when the load starts
    rate: float = 0.0
    max_in_flight: int = 0
    call_timeout: float = DEFAULT_TIMEOUT  # a call's deadline: the product client's default
    stream_events: int = 500_000
    seed: int = 0


@dataclass(slots=True)
class LoadResult:
    acked: int = 0  # events the replies counted as accepted
    duplicates: int = 0
    rejected: int = 0
    sent: int = 0  # events in calls that were answered or failed
    refused: int = 0  # events in calls refused as a whole (RESOURCE_EXHAUSTED, 429)
    unknown: int = 0  # events in calls that failed otherwise: stored or not
    calls: int = 0  # calls answered
    errors: dict[str, int] = field(default_factory=dict)  # calls not answered, by status
    first_error: str = ""
    rejections: dict[str, int] = field(default_factory=dict)  # rejected events, by code
    latencies: list[float] = field(default_factory=list)  # seconds, answered calls
    tally: Tally = field(default_factory=Tally)  # acknowledged mix positions
    acked_by_campaign: dict[str, dict[str, int]] = field(default_factory=dict)
    unattributed: int = 0  # acknowledged, but in replies that do not say which
    throttled: int = 0  # overload: starts delayed because max_in_flight calls were out
    first_refused_at: float = 0.0  # time.monotonic() of the first refusal
    started: float = 0.0
    ended: float = 0.0
    cpu_seconds: float = 0.0

    def fail(self, code: str, events: int, detail: str = "") -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.sent += events
        if code in REFUSED:
            self.refused += events
            self.first_refused_at = self.first_refused_at or time.monotonic()
        else:
            self.unknown += events
            if not self.first_error:
                self.first_error = f"{code}: {detail}"[:500]

    def answered(
        self,
        events: int,
        accepted: int,
        duplicates: int,
        rejected: Iterable[str],
        batches: Iterable[tuple[int, int]],
    ) -> None:
        """A reply to ``events`` events sent as ``batches`` (mix position,
        events); ``rejected`` holds the code of each rejected event."""
        self.calls += 1
        self.sent += events
        self.acked += accepted
        self.duplicates += duplicates
        for code in rejected:
            self.rejected += 1
            self.rejections[code] = self.rejections.get(code, 0) + 1
        if accepted == events:
            for position, count in batches:
                self.tally.add(position, count)
        else:
            self.unattributed += accepted

    def counters(self) -> list[int]:
        """The values of ``COUNTERS`` but ``sent``."""
        return [
            self.acked, self.rejected, self.refused, self.unknown, self.calls,
            sum(self.errors.values()),
        ]  # fmt: skip


class _Bounds:
    """Events a worker may still send, until when, and whether it was asked to stop."""

    def __init__(self, events: int, deadline: float, stop: Any = None) -> None:
        self.left = events
        self.taken = 0
        self.deadline = deadline
        self._stop = stop  # a shared value the coordinator sets to stop the load

    def open(self) -> bool:
        return time.monotonic() < self.deadline and not (self._stop and self._stop.value)

    def take(self, events: int) -> int:
        """Events granted of ``events`` (the last grant may be smaller); 0 when
        the time is up, the budget spent or the load stopped."""
        granted = min(events, self.left) if self.open() else 0
        self.left -= granted
        self.taken += granted
        return granted


# -- the worker process ------------------------------------------------------


def worker_main(conn: Connection, counters: Any = None, stop: Any = None) -> None:
    """Entry point of a worker process: runs specs until it receives None.

    ``counters`` (a shared array of ``COUNTERS``) shows the running spec's
    progress; ``stop`` (a shared value) ends its load early. Ctrl+C is left to
    the coordinator, which stops the load through ``stop``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    conn.send(READY)
    asyncio.run(_serve(conn, counters, stop))


async def _serve(conn: Connection, counters: Any, stop: Any) -> None:
    loop = asyncio.get_running_loop()
    while True:
        spec = await loop.run_in_executor(None, conn.recv)
        if spec is None:
            return
        try:
            reply: LoadResult | str = await run(spec, counters, stop)
        except Exception:
            reply = traceback.format_exc()
        conn.send(reply)


async def run(spec: LoadSpec, counters: Any = None, stop: Any = None) -> LoadResult:
    encoder = EventEncoder(spec.organization_id, spec.campaign_ids, seed=spec.seed)
    result = LoadResult()
    bounds = _Bounds(spec.max_events, spec.start_at + spec.seconds, stop)
    publisher = None
    if counters is not None:
        publisher = asyncio.create_task(_publish(result, bounds, counters))
    try:
        if spec.mode == "rest":
            await _start(spec, result, _rest(spec, encoder, result, bounds))
        else:
            channel = grpc.aio.insecure_channel(spec.target, options=CHANNEL_OPTIONS)
            try:
                await asyncio.wait_for(channel.channel_ready(), 10)
                drive = _GRPC_DRIVERS[spec.mode](spec, channel, encoder, result, bounds)
                await _start(spec, result, drive)
            finally:
                await channel.close()
    finally:
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            counters[:] = [bounds.taken, *result.counters()]
    result.acked_by_campaign = result.tally.by_campaign(encoder.mix)
    return result


async def _publish(result: LoadResult, bounds: _Bounds, counters: Any) -> None:
    """Copies the counters into shared memory every ``COUNTERS_INTERVAL``."""
    while True:
        counters[:] = [bounds.taken, *result.counters()]
        await asyncio.sleep(COUNTERS_INTERVAL)


async def _start(spec: LoadSpec, result: LoadResult, drive: Awaitable[None]) -> None:
    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    cpu = _cpu()
    result.started = time.monotonic()
    await drive
    result.ended = time.monotonic()
    result.cpu_seconds = _cpu() - cpu


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _metadata(spec: LoadSpec) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {spec.api_key}"),)


def _code(exc: grpc.aio.AioRpcError) -> str:
    return exc.code().name


# -- gRPC --------------------------------------------------------------------


async def _stream(
    spec: LoadSpec,
    channel: grpc.aio.Channel,
    encoder: EventEncoder,
    result: LoadResult,
    bounds: _Bounds,
) -> None:
    method = channel.stream_unary(
        STREAM_METHOD,
        request_serializer=None,
        response_deserializer=pb.StreamEventsResponse.FromString,
    )
    metadata = _metadata(spec)

    async def one_stream() -> bool:
        """One stream, as long as the bounds allow; False when they allowed none."""
        events = bounds.take(min(spec.batch, spec.stream_events))
        if not events:
            return False
        call = method(metadata=metadata, timeout=spec.seconds + spec.call_timeout)
        batches: list[tuple[int, int]] = []  # (mix position, events) of each message
        written: list[float] = []  # when each message was written
        sent = 0
        try:
            while events:
                batches.append((encoder.position, events))
                message = encoder.stream_message(events)
                written.append(time.perf_counter())
                sent += events
                await call.write(message)
                events = bounds.take(min(spec.batch, spec.stream_events - sent))
            await call.done_writing()
            reply: pb.StreamEventsResponse = await call
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            code = await call.code()
            result.fail(code.name, sent, await call.details() or str(exc))
            return True
        answered_at = time.perf_counter()
        result.latencies.extend(answered_at - t for t in written)
        rejected = (r.code for r in reply.rejected)
        result.answered(sent, reply.accepted, reply.duplicates, rejected, batches)
        return True

    async def slot() -> None:
        while await one_stream():
            pass

    await asyncio.gather(*(slot() for _ in range(spec.concurrency)))


async def _unary(
    spec: LoadSpec,
    channel: grpc.aio.Channel,
    encoder: EventEncoder,
    result: LoadResult,
    bounds: _Bounds,
) -> None:
    method = _ingest_method(channel)
    metadata = _metadata(spec)
    single = spec.mode == "unary-single"

    async def slot() -> None:
        while events := bounds.take(1 if single else spec.batch):
            position = encoder.position
            message = encoder.unary_single() if single else encoder.unary_batch(events)
            await _unary_call(
                method, message, (position, events), metadata, spec.call_timeout, result
            )

    await asyncio.gather(*(slot() for _ in range(spec.concurrency)))


def _ingest_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """IngestEvents, called with pre-serialised requests."""
    return channel.unary_unary(
        INGEST_METHOD,
        request_serializer=None,
        response_deserializer=pb.IngestEventsResponse.FromString,
    )


async def _unary_call(
    method: grpc.aio.UnaryUnaryMultiCallable,
    message: bytes,
    batch: tuple[int, int],
    metadata: tuple[tuple[str, str]],
    timeout: float,
    result: LoadResult,
) -> None:
    """One IngestEvents call of the events at ``batch`` (mix position, events)."""
    events = batch[1]
    started = time.perf_counter()
    try:
        reply: pb.IngestEventsResponse = await method(message, metadata=metadata, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        result.fail(_code(exc), events, exc.details() or "")
        return
    result.latencies.append(time.perf_counter() - started)
    rejected = (r.code for r in reply.rejected)
    result.answered(events, reply.accepted, reply.duplicates, rejected, [batch])


async def _paced(
    spec: LoadSpec,
    channel: grpc.aio.Channel,
    encoder: EventEncoder,
    result: LoadResult,
    bounds: _Bounds,
) -> None:
    """One call at a time, started every 1/rate seconds (at once when late)."""
    method = _ingest_method(channel)
    metadata = _metadata(spec)
    interval = 1 / spec.rate
    due = time.monotonic()
    while bounds.take(1):
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        due = max(due + interval, time.monotonic())
        batch = (encoder.position, 1)
        await _unary_call(
            method, encoder.unary_single(), batch, metadata, spec.call_timeout, result
        )


async def _overload(
    spec: LoadSpec,
    channel: grpc.aio.Channel,
    encoder: EventEncoder,
    result: LoadResult,
    bounds: _Bounds,
) -> None:
    """Open loop: a call of ``batch`` events every 1/rate seconds, not waiting
    for earlier ones."""
    method = _ingest_method(channel)
    metadata = _metadata(spec)
    interval = 1 / spec.rate
    due = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()
    while events := bounds.take(spec.batch):
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        due += interval
        if len(in_flight) >= spec.max_in_flight:
            result.throttled += 1
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        batch = (encoder.position, events)
        call = _unary_call(
            method, encoder.unary_batch(events), batch, metadata, spec.call_timeout, result
        )
        task = asyncio.create_task(call)
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)


# -- REST over HTTP/1.1 --------------------------------------------------------


async def _rest(spec: LoadSpec, encoder: EventEncoder, result: LoadResult, bounds: _Bounds) -> None:
    host, _, port = spec.target.rpartition(":")
    head = (
        f"POST {REST_PATH} HTTP/1.1\r\nHost: {spec.target}\r\n"
        f"Authorization: Bearer {spec.api_key}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()

    async def slot() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while events := bounds.take(spec.batch):
            batch = (encoder.position, events)
            body = encoder.json_batch(events)
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = await _connect(host, int(port))
                reader, writer = connection
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status, headers, payload = await asyncio.wait_for(
                    _read_response(reader), spec.call_timeout
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                result.fail(f"HTTP {type(exc).__name__}", events, str(exc))
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            if status == 200:
                document = orjson.loads(payload)
                result.latencies.append(time.perf_counter() - started)
                rejected = (r.get("code", "") for r in document.get("rejected") or ())
                result.answered(
                    events,
                    document.get("accepted", 0),
                    document.get("duplicates", 0),
                    rejected,
                    [batch],
                )
            else:
                result.fail(f"HTTP {status}", events, payload[:300].decode(errors="replace"))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                connection = None
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(slot() for _ in range(spec.concurrency)))


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, b"".join(chunks)
            chunks.append(chunk[:-2])
    raise OSError("the response has neither Content-Length nor chunked encoding")


_GRPC_DRIVERS: dict[str, Callable[..., Awaitable[None]]] = {
    "stream": _stream,
    "unary": _unary,
    "unary-single": _unary,
    "paced": _paced,
    "overload": _overload,
}
