"""EventSource-like subscribers on raw asyncio sockets, in worker processes.

A worker opens ``count`` HTTP/1.1 connections (``GET path``, ``Accept:
text/event-stream``), de-chunks the responses and splits them into SSE frames,
and notes for every frame with an ``id:`` the moment it arrived
(``time.monotonic()``, the same clock in every process on Linux). It parses a
frame's JSON once per id and process (for the ``timestamp`` the publisher
wrote), not once per connection, so that a worker costs little per delivery.
With ``updates=True`` (the latency scenario, one connection) it also keeps
every update's campaign and impressions.

The coordinator sends a spec dict; the worker connects, answers
``("connected", n, failures)``, then reads until the coordinator sends
``"stop"`` or the spec's deadline passes, closes everything and answers with
its results. Everything is bounded: connection attempts by a timeout, the run
by ``deadline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
import traceback
from array import array
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import orjson


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time like 2026-01-01T00:00:00.123Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Recorder:
    """What one worker saw, over all its connections."""

    def __init__(self, updates: bool) -> None:
        self.arrivals: dict[bytes, array] = {}  # frame id -> arrival times (monotonic)
        self.stamps: dict[bytes, float] = {}  # frame id -> its "timestamp" (epoch seconds)
        self.sizes: dict[bytes, int] = {}
        self.origins: dict[bytes, float] = {}  # frame id -> the update's own "timestamp"
        self.updates: list[tuple[float, str, int]] | None = [] if updates else None
        self.sample = b""

    def frame(self, data: bytes, now: float) -> None:
        if not data.startswith(b"id: "):
            return
        end = data.index(b"\n")
        fid = data[4:end]
        times = self.arrivals.get(fid)
        if times is None:
            times = self.arrivals[fid] = array("d")
            self._first(fid, data[end + 1 :], now)
        times.append(now)

    def _first(self, fid: bytes, rest: bytes, now: float) -> None:
        self.sizes[fid] = len(rest) + len(fid) + 5
        payload: Any = None
        for line in rest.split(b"\n"):
            if line.startswith(b"data: "):
                with contextlib.suppress(ValueError):
                    payload = orjson.loads(line[6:])
                if not self.sample:
                    self.sample = line[6:]
        if not isinstance(payload, dict):
            return
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            self.stamps[fid] = parse_timestamp(payload["timestamp"])
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            # An update's own time: when the server published it.
            self.origins[fid] = parse_timestamp(payload["data"]["timestamp"])
        if self.updates is not None and payload.get("type") == "update":
            update = payload["data"]
            metrics = update.get("data", {}).get("metrics", {})
            self.updates.append((now, update["campaignId"], int(metrics.get("impressions", 0))))


class Subscriber(asyncio.Protocol):
    """One EventSource-like connection."""

    def __init__(self, request: bytes, recorder: Recorder, ready: asyncio.Future[bool]) -> None:
        self.request = request
        self.recorder = recorder
        self.ready = ready
        self.head = b""
        self.headers_done = False
        self.chunked = False
        self.raw = b""  # chunked body not yet de-chunked
        self.text = b""  # de-chunked body not yet split into frames
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.headers_done = True
            ok = head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            if not self.ready.done():
                self.ready.set_result(ok)
            if not ok:
                self.transport.close()  # type: ignore[union-attr]
                return
        if self.chunked:
            data = self._dechunk(data)
        text = self.text + data if self.text else data
        start = 0
        frame = self.recorder.frame
        while True:
            end = text.find(b"\n\n", start)
            if end < 0:
                break
            frame(text[start:end], now)
            start = end + 2
        self.text = text[start:]

    def _dechunk(self, data: bytes) -> bytes:
        raw = self.raw + data if self.raw else data
        out = []
        pos = 0
        while True:
            line_end = raw.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(raw[pos:line_end].split(b";")[0], 16)
            if len(raw) < line_end + 2 + size + 2:
                break
            out.append(raw[line_end + 2 : line_end + 2 + size])
            pos = line_end + 2 + size + 2
            if size == 0:
                break
        self.raw = raw[pos:]
        return b"".join(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_result(False)


def main(conn: Connection) -> None:
    """Entry point of a subscriber process."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        spec = conn.recv()
        result: Any = asyncio.run(_run(conn, spec))
    except Exception:
        result = traceback.format_exc()
    conn.send(("result", result))


async def _run(conn: Connection, spec: dict[str, Any]) -> dict[str, Any]:
    raise_nofile(spec["count"] + 256)
    loop = asyncio.get_running_loop()
    recorder = Recorder(spec.get("updates", False))
    host, port = spec["host"], spec["port"]
    request = (
        f"GET {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    subscribers: list[Subscriber] = []
    failures = 0
    semaphore = asyncio.Semaphore(spec.get("connect_concurrency", 200))
    connect_deadline = time.monotonic() + spec.get("connect_timeout", 60.0)

    async def connect() -> None:
        nonlocal failures
        async with semaphore:
            ready: asyncio.Future[bool] = loop.create_future()
            left = connect_deadline - time.monotonic()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Subscriber(request, recorder, ready), host, port
                    ),
                    max(0.1, left),
                )
                subscribers.append(protocol)
                if not await asyncio.wait_for(ready, max(0.1, connect_deadline - time.monotonic())):
                    failures += 1
            except (OSError, TimeoutError):
                failures += 1

    cpu0 = _cpu()
    await asyncio.gather(*(connect() for _ in range(spec["count"])))
    connected = sum(1 for s in subscribers if s.headers_done and not s.closed)
    conn.send(("connected", connected, failures))
    deadline = time.monotonic() + spec["max_seconds"]
    while time.monotonic() < deadline:
        if await loop.run_in_executor(None, conn.poll, 0.2) and conn.recv() == "stop":
            break
    still_open = sum(1 for s in subscribers if not s.closed)
    for s in subscribers:
        if s.transport is not None:
            s.transport.close()
    await asyncio.sleep(0.1)
    return {
        "pid": os.getpid(),
        "connected": connected,
        "failures": failures,
        "still_open": still_open,
        "arrivals": {k: v.tobytes() for k, v in recorder.arrivals.items()},
        "stamps": recorder.stamps,
        "sizes": recorder.sizes,
        "origins": recorder.origins,
        "updates": recorder.updates,
        "sample": recorder.sample,
        "cpu_seconds": _cpu() - cpu0,
    }


def _cpu() -> float:
    t = os.times()
    return t.user + t.system
