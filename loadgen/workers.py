"""The coordinator's side of the load clients: worker processes, their live
counters, and their results merged into one ``Load``.

Workers are spawned (gRPC does not survive fork) once and run one
``LoadSpec`` each per load, so a benchmark reuses them across scenarios. Each
has an array of counters in shared memory (``engine.COUNTERS``) that it
updates while it runs, and all share one stop flag: setting it ends the load
early (calls in flight still finish and are counted).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from loadgen.engine import COUNTERS, READY, LoadResult, LoadSpec, worker_main

START_TIMEOUT = 60.0  # seconds a worker may take to start (imports)


@dataclass(frozen=True, slots=True)
class Counters:
    """The workers' counters summed, as they stand (``engine.COUNTERS``)."""

    sent: int = 0  # events handed to calls so far
    acked: int = 0
    rejected: int = 0
    refused: int = 0
    unknown: int = 0
    calls: int = 0  # answered
    errors: int = 0  # calls not answered


@dataclass(slots=True)
class Load:
    """The merged results of the workers of one load."""

    acked: int = 0
    duplicates: int = 0
    rejected: int = 0
    sent: int = 0
    refused: int = 0
    unknown: int = 0
    calls: int = 0
    throttled: int = 0
    unattributed: int = 0
    first_refused_at: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    acked_by_campaign: dict[str, dict[str, int]] = field(default_factory=dict)
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @classmethod
    def merge(cls, results: list[LoadResult]) -> Load:
        load = cls()
        for r in results:
            load.acked += r.acked
            load.duplicates += r.duplicates
            load.rejected += r.rejected
            load.sent += r.sent
            load.refused += r.refused
            load.unknown += r.unknown
            load.calls += r.calls
            load.throttled += r.throttled
            load.unattributed += r.unattributed
            load.cpu_seconds += r.cpu_seconds
            load.latencies += r.latencies
            load.first_error = load.first_error or r.first_error
            _add(load.errors, r.errors)
            _add(load.rejections, r.rejections)
            for campaign_id, types in r.acked_by_campaign.items():
                _add(load.acked_by_campaign.setdefault(campaign_id, {}), types)
        load.latencies.sort()
        refusals = [r.first_refused_at for r in results if r.first_refused_at]
        load.first_refused_at = min(refusals, default=0.0)
        load.started = min(r.started for r in results)
        load.seconds = max(r.ended for r in results) - load.started
        return load

    def percentile_ms(self, fraction: float) -> float | None:
        if not self.latencies:
            return None
        index = min(len(self.latencies) - 1, math.ceil(fraction * len(self.latencies)) - 1)
        return self.latencies[max(0, index)] * 1000


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` cut into ``parts`` as equal as can be."""
    return total // parts + (1 if index < total % parts else 0)


class Workers:
    """Load-client processes (spawned: gRPC does not survive fork)."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._counters: list[Any] = []
        self._stop = context.RawValue("b", 0)
        self._procs = []
        self._started = False
        self.interrupted = False  # the last load was stopped by Ctrl+C
        for _ in range(count):
            parent, child = context.Pipe()
            counters = context.RawArray("q", len(COUNTERS))
            proc = context.Process(
                target=worker_main, args=(child, counters, self._stop), daemon=True
            )
            proc.start()
            self._conns.append(parent)
            self._counters.append(counters)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def counters(self) -> Counters:
        """The counters of all workers, summed."""
        return Counters(*(sum(c[i] for c in self._counters) for i in range(len(COUNTERS))))

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Waits until every worker has started (spawning one takes a second
        or so), so that a load's start time is not spent on imports."""
        if self._started:
            return
        deadline = time.monotonic() + timeout
        for conn in self._conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a load worker did not start within {timeout:g} s")
            try:
                message = conn.recv()
            except EOFError:
                raise RuntimeError("a load worker exited while starting") from None
            if message != READY:
                raise RuntimeError(f"a load worker failed to start: {message!r}")
        self._started = True

    def stop(self) -> None:
        """Ends the running load early: no new calls; those in flight finish."""
        self._stop.value = 1

    def run(
        self,
        specs: list[LoadSpec],
        timeout: float,
        on_progress: Callable[[Counters], None] | None = None,
        interval: float = 0.25,
        stop_on_interrupt: bool = False,
    ) -> list[LoadResult]:
        """Runs one spec per worker and returns their results; calls
        ``on_progress`` with the counters every ``interval`` seconds meanwhile.

        With ``stop_on_interrupt``, a first Ctrl+C stops the load (calls in
        flight finish, their results are returned; ``interrupted`` tells) and
        a second one raises KeyboardInterrupt.
        """
        if len(specs) > len(self._conns):
            raise ValueError(f"{len(specs)} specs for {len(self._conns)} workers")
        self.wait_started()
        self._stop.value = 0
        self.interrupted = False
        for counters in self._counters:
            counters[:] = [0] * len(COUNTERS)
        for conn, spec in zip(self._conns, specs, strict=False):
            conn.send(spec)
        results: dict[int, LoadResult] = {}
        deadline = time.monotonic() + timeout
        while len(results) < len(specs):
            try:
                self._collect(results, len(specs), deadline, interval)
                if on_progress is not None:
                    on_progress(self.counters())
            except KeyboardInterrupt:
                if not stop_on_interrupt or self.interrupted:
                    raise
                self.interrupted = True
                self.stop()
        return [results[i] for i in range(len(specs))]

    def _collect(
        self, results: dict[int, LoadResult], count: int, deadline: float, interval: float
    ) -> None:
        """Receives the results that arrive within ``interval`` seconds."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("a load worker did not answer in time")
        waiting = [c for i, c in enumerate(self._conns[:count]) if i not in results]
        for ready in wait(waiting, min(left, interval)):
            conn = cast(Connection, ready)
            index = self._conns.index(conn)
            try:
                reply = conn.recv()
            except EOFError:
                raise RuntimeError("a load worker exited unexpectedly") from None
            if isinstance(reply, str):
                raise RuntimeError(f"a load worker failed:\n{reply}")
            results[index] = reply

    def close(self) -> None:
        for conn in self._conns:
            with suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
