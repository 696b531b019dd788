"""The ingest benchmark: durable events per second, against its ceilings.

    python -m bench.ingest [--seconds S] [--quick] [--json PATH] [--workers N]

One run starts PostgreSQL (embedded in a fresh folder, or a fresh database on
``$BENCH_DATABASE_URL``), measures PostgreSQL's own bulk-insert ceiling, a
discarding gRPC server's ceiling, then the real gRPC server and REST gateway
(each a process of its own) under load from worker processes; after every
scenario it checks that what was acknowledged is what is stored. It prints a
table, the targets with PASS or MISS, and the machine. bench/README.md tells
how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from bench import ceiling, machine, processes
from clients import make_event, pb
from loadgen.engine import LoadSpec
from loadgen.events import check_encoding
from loadgen.workers import Load, Workers, share
from server import admin
from server.auth import create_key
from server.domain import Role
from server.settings import ServerSettings
from server.store import database

DEFAULT_SECONDS = 10.0
QUICK_SECONDS = 3.0
STREAMS = 4
UNARY_BATCHES_IN_FLIGHT = 4
SINGLES_IN_FLIGHT = 16
REST_CONNECTIONS = 4
OVERLOAD_FACTOR = 2.0
OVERLOAD_IN_FLIGHT = 512  # calls outstanding per worker, at most
OVERLOAD_MIN_SECONDS = 8.0  # long enough to fill the buffer and then hold
CEILING_BATCHES = (1_000, 5_000)

# Targets: the least share of the ceiling, and the longest p99 at light load.
STREAM_TARGET = 0.5
SINGLE_TARGET = 0.5
LATENCY_P99_TARGET_MS = 20.0

SCENARIO_GROUPS = (
    "ceiling", "discard", "latency", "stream", "unary-batch", "unary-single", "rest", "overload",
)  # fmt: skip


# -- results -----------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the table."""

    name: str
    events: int
    seconds: float
    ceiling: str = ""
    ceiling_rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mib: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core
    check: str = ""
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        return self.rate / self.ceiling_rate if self.ceiling_rate else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_second"] = round(self.rate, 1)
        data["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        return data


@dataclass(slots=True)
class Target:
    name: str
    passed: bool | None  # None: not measured
    text: str


# -- organizations -------------------------------------------------------------


@dataclass(slots=True)
class Tenant:
    organization_id: str
    campaign_ids: list[str]
    api_key: str
    warmup_events: int = 0

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.api_key}"),)


def create_tenant(database_url: str, label: str, campaigns: int) -> Tenant:
    """An organization with ``campaigns`` campaigns and an admin key."""
    organization_id = f"bench_{label}_{uuid.uuid4().hex[:6]}"
    campaign_ids = [f"{organization_id}_c{i:03d}" for i in range(campaigns)]

    async def create() -> str:
        engine = create_async_engine(database.sqlalchemy_url(database_url))
        try:
            await admin.create_organization(engine, organization_id)
            for campaign_id in campaign_ids:
                await admin.create_campaign(engine, organization_id, campaign_id)
            return await create_key(engine, organization_id, Role.ADMIN, "bench")
        finally:
            await engine.dispose()

    return Tenant(organization_id, campaign_ids, asyncio.run(create()))


# -- the benchmark -------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seconds: float = args.seconds
        self.rows: list[Row] = []
        self.failures: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        self.database_url = ""
        self._drop_database: Callable[[], None] | None = None
        self.workers: Workers | None = None
        self.server: processes.Process | None = None
        self.server_target = ""
        self.gateway: processes.Process | None = None
        self.gateway_target = ""
        self.server_exit_code: int | None = None
        self.server_settings: dict[str, Any] = {}
        self.machine: dict[str, Any] = {}

    def wants(self, group: str) -> bool:
        return not self.args.only or group in self.args.only

    # -- setup and teardown --

    def start_database(self) -> None:
        self.database_url, self._drop_database = processes.start_database(self.tmp / "pg")

    def close(self) -> None:
        for process in (self.gateway, self.server):
            if process is not None and process.popen.poll() is None:
                process.stop()
        if self.workers is not None:
            self.workers.close()
        if self._drop_database is not None:
            self._drop_database()
        for server in database._embedded_servers:
            server.cleanup()
        database._embedded_servers.clear()
        if self.args.keep_logs:
            print(f"Logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> int:
        try:
            self.start_database()
            self.machine = machine.describe(self.database_url)
            campaigns = [f"check_c{i}" for i in range(self.args.campaigns)]
            check_encoding("check_org", campaigns)
            self.workers = Workers(self.args.workers)
            if self.wants("ceiling"):
                self.ceilings()
            if self.wants("discard"):
                self.discard()
            self.service()
        finally:
            self.close()
        return self.report()

    # -- ceilings --

    def ceilings(self) -> None:
        seconds = max(QUICK_SECONDS, self.seconds / 2)
        campaign_ids = [f"ceiling_c{i:03d}" for i in range(self.args.campaigns)]
        for statement in ("dedup", "flush"):
            for batch in CEILING_BATCHES:
                self.rows.append(self.ceiling_row(statement, batch, seconds, campaign_ids))

    def ceiling_row(
        self, statement: str, batch: int, seconds: float, campaign_ids: list[str]
    ) -> Row:
        title = "dedup insert" if statement == "dedup" else "full flush SQL"
        name = f"postgres: {title} b{batch}"
        print(f"{name} ...", flush=True)
        pg0, t0 = processes.postgres_cpu(), time.monotonic()
        pg_seconds: list[float] = []

        def done() -> None:
            pg_seconds.append(processes.postgres_cpu_since(pg0))

        result = ceiling.measure(
            self.database_url, "ceiling_org", campaign_ids, statement=statement, batch=batch,
            seconds=seconds, max_events=5_000_000, on_done=done,
        )  # fmt: skip
        wall = time.monotonic() - t0
        row = Row(name, result.events, result.seconds, check="ok: stored = inserted")
        # PostgreSQL works only in the timed part: its CPU share of that time.
        row.cpu["postgres"] = pg_seconds[0] / result.seconds * 100
        row.details.update(statement=statement, batch=batch, batches=result.batches,
                           wall_seconds=wall)  # fmt: skip
        row.notes.append(
            f"{result.batches} transactions of {batch}; timed: COPY + statements + commit "
            f"({result.seconds:.1f} s of {wall:.1f} s wall, the rest is encoding rows)"
        )
        return row

    def ceiling_rate(self, statement: str) -> tuple[str, float | None]:
        best: Row | None = None
        for row in self.rows:
            if row.details.get("statement") == statement and (best is None or row.rate > best.rate):
                best = row
        return ("", None) if best is None else (best.name.removeprefix("postgres: "), best.rate)

    # -- discard server --

    def discard(self) -> None:
        process, target = processes.start_discard(self.tmp / "discard.log")
        tenant = Tenant("discard_org", [f"discard_c{i:03d}" for i in range(self.args.campaigns)],
                        "none")  # fmt: skip
        try:
            rows = [
                self.load_row(
                    f"discard: stream b100 x{STREAMS}", "stream", target, tenant, process.pid,
                    batch=100, concurrency=STREAMS, max_events=20_000_000,
                ),
                self.load_row(
                    f"discard: unary single x{SINGLES_IN_FLIGHT}", "unary-single", target,
                    tenant, process.pid, batch=1, concurrency=SINGLES_IN_FLIGHT,
                    max_events=2_000_000,
                ),
            ]  # fmt: skip
            for row in rows:
                row.check = "n/a (discarded)"
        finally:
            process.stop()

    # -- the service --

    def service(self) -> None:
        settings = dict(self.args.server_setting or [])
        # The settings the server runs with: its defaults, the environment and
        # the --server-setting values, read as the server reads them.
        effective = ServerSettings(
            **{k.removeprefix("CAMPAIGN_ANALYTICS_").lower(): v for k, v in settings.items()}
        )
        self.server_settings = effective.model_dump(
            mode="json", exclude={"database_url", "data_dir", "host", "grpc_port", "migrate"}
        )
        self.server, self.server_target = processes.start_service(
            self.database_url, self.tmp / "server.log", settings
        )
        needs_gateway = self.wants("rest")
        if needs_gateway:
            self.gateway, self.gateway_target = processes.start_gateway(
                self.server_target, self.tmp / "gateway.log"
            )
        self._channel = grpc.insecure_channel(self.server_target)
        self._metrics = pb.MetricsServiceStub(self._channel)
        self._ingest = pb.IngestServiceStub(self._channel)
        try:
            self.service_scenarios()
        finally:
            self._channel.close()
            if self.gateway is not None:
                self.gateway.stop()
            assert self.server is not None
            self.server_exit_code = self.server.stop(60)
            if self.server_exit_code != 0:
                self.failures.append(
                    f"the gRPC server exited with {self.server_exit_code} on SIGTERM:\n"
                    f"{self.server.tail()}"
                )

    def service_scenarios(self) -> None:
        dedup = self.ceiling_rate("dedup")
        if self.wants("latency"):
            rate = self.args.latency_rate
            samples = self.args.latency_samples
            self.service_row(
                f"service: unary single 1 in flight @{rate:g}/s", "paced", "latency",
                batch=1, concurrency=1, max_events=samples, rate=rate, workers=1,
                seconds=samples / rate * 1.5 + 2,
            )  # fmt: skip
        if self.wants("stream"):
            for batch in (100, 1_000):
                self.service_row(
                    f"service: stream b{batch} x{STREAMS}", "stream", "stream",
                    batch=batch, concurrency=STREAMS, max_events=10_000_000, ceiling=dedup,
                )  # fmt: skip
        if self.wants("unary-batch"):
            self.service_row(
                f"service: unary b1000 x{UNARY_BATCHES_IN_FLIGHT}", "unary", "unary-batch",
                batch=1_000, concurrency=UNARY_BATCHES_IN_FLIGHT, max_events=10_000_000,
                ceiling=dedup,
            )  # fmt: skip
        if self.wants("unary-single"):
            discard_single = next(
                (r for r in self.rows if r.name == "discard: unary single x16"), None
            )
            self.service_row(
                f"service: unary single x{SINGLES_IN_FLIGHT}", "unary-single", "unary-single",
                batch=1, concurrency=SINGLES_IN_FLIGHT, max_events=2_000_000,
                ceiling=("discard unary single x16", discard_single.rate)
                if discard_single else ("", None),
            )  # fmt: skip
        if self.wants("rest"):
            self.service_row(
                f"gateway: REST b1000 x{REST_CONNECTIONS}", "rest", "rest",
                batch=1_000, concurrency=REST_CONNECTIONS, max_events=10_000_000, ceiling=dedup,
            )  # fmt: skip
        if self.wants("overload"):
            self.overload()

    def overload(self) -> None:
        # Twice the best rate the service wrote in the batch scenarios.
        batches = [
            r for r in self.rows if r.name.startswith(("service: stream", "service: unary b"))
        ]
        reference = max(batches, key=lambda r: r.rate, default=None)
        writes = reference.rate if reference is not None and reference.rate > 0 else 50_000.0
        offered = OVERLOAD_FACTOR * writes
        workers = self.args.workers
        self.service_row(
            f"service: overload b1000 {OVERLOAD_FACTOR:g}x", "overload", "overload",
            batch=1_000, concurrency=workers, max_events=10_000_000, rate=offered / 1_000,
            workers=workers, max_in_flight=OVERLOAD_IN_FLIGHT,
            seconds=max(self.seconds, OVERLOAD_MIN_SECONDS),
        )  # fmt: skip
        row = self.rows[-1]
        row.details["offered_events_per_second"] = offered
        row.notes.insert(
            0,
            f"offered {offered:,.0f} events/s ({OVERLOAD_FACTOR:g} x the {writes:,.0f}/s "
            f"of {reference.name if reference else 'a guess'}) in calls of 1,000 not waiting "
            f"for replies; buffer capacity {self.server_settings.get('buffer_capacity')} events",
        )

    def service_row(
        self,
        name: str,
        mode: str,
        group: str,
        *,
        batch: int,
        concurrency: int,
        max_events: int,
        ceiling: tuple[str, float | None] = ("", None),
        rate: float = 0.0,
        workers: int | None = None,
        seconds: float | None = None,
        max_in_flight: int = 0,
    ) -> None:
        assert self.server is not None
        tenant = create_tenant(self.database_url, group.replace("-", "_"), self.args.campaigns)
        self.warm_up(tenant)
        before = self.status(tenant)
        target = self.gateway_target if mode == "rest" else self.server_target
        watch = {"server": self.server.pid}
        if mode == "rest" and self.gateway is not None:
            watch["gateway"] = self.gateway.pid
        row = self.load_row(
            name, mode, target, tenant, self.server.pid, batch=batch, concurrency=concurrency,
            max_events=max_events, rate=rate, workers=workers, seconds=seconds,
            max_in_flight=max_in_flight, watch=watch, ceiling=ceiling,
        )  # fmt: skip
        self.verify(row, tenant, before)

    def load_row(
        self,
        name: str,
        mode: str,
        target: str,
        tenant: Tenant,
        pid: int,
        *,
        batch: int,
        concurrency: int,
        max_events: int,
        rate: float = 0.0,
        workers: int | None = None,
        seconds: float | None = None,
        max_in_flight: int = 0,
        watch: dict[str, int] | None = None,
        ceiling: tuple[str, float | None] = ("", None),
    ) -> Row:
        """Runs one load scenario and appends its row."""
        assert self.workers is not None
        print(f"{name} ...", flush=True)
        seconds = self.seconds if seconds is None else seconds
        count = min(workers or self.args.workers, concurrency)
        start_at = time.monotonic() + 1.0
        specs = []
        for i in range(count):
            slots = share(concurrency, count, i)
            specs.append(
                LoadSpec(
                    mode, target, tenant.api_key, tenant.organization_id, tenant.campaign_ids,
                    batch=batch, concurrency=slots, seconds=seconds,
                    max_events=share(max_events, count, i), start_at=start_at,
                    rate=rate * slots / concurrency, max_in_flight=max_in_flight, seed=i,
                )
            )  # fmt: skip
        watch = watch or {"server": pid}
        with self.observe(name, watch, start_at, seconds) as observed:
            load = Load.merge(self.workers.run(specs, timeout=seconds + 120))
        row = Row(
            name, load.acked, load.seconds, ceiling=ceiling[0], ceiling_rate=ceiling[1],
            p50_ms=load.percentile_ms(0.50), p99_ms=load.percentile_ms(0.99),
            peak_rss_mib=observed["peak_rss"][pid] / 2**20,
            cpu={**observed["cpu"], "clients": load.cpu_seconds / load.seconds * 100},
        )  # fmt: skip
        row.details.update(
            calls=load.calls, sent=load.sent, duplicates=load.duplicates, rejected=load.rejected,
            refused=load.refused, unknown=load.unknown, errors=load.errors,
            throttled=load.throttled, workers=count,
            rss_samples=len(observed["rss"]),
        )  # fmt: skip
        main_thread = observed["main_thread"].get("server")
        if main_thread and load.calls and batch == 1:
            # One event a call: the server's event loop, one thread, is what
            # limits, so its CPU per call is the figure to compare.
            running, waiting, wall = main_thread
            row.details["server_main_thread"] = {
                "cpu_us_per_call": running / load.calls * 1e6,
                "running_share": running / wall,
                "waiting_share": waiting / wall,
            }
            row.notes.append(
                f"server main thread (its event loop): {running / load.calls * 1e6:,.0f} µs "
                f"of CPU per call; on a core {running / wall:.0%} of the time, waiting for "
                f"one {waiting / wall:.0%}"
            )
        if load.errors:
            row.notes.append(
                "errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(load.errors.items()))
            )
        if load.first_error:
            row.notes.append(f"first unexpected error: {load.first_error}")
        if mode == "overload":
            self.check_overload(row, load, observed["rss"])
        self.rows.append(row)
        return row

    @contextmanager
    def observe(
        self, name: str, pids: dict[str, int], start_at: float, seconds: float
    ) -> Iterator[dict[str, Any]]:
        """Peak RSS and CPU of ``pids`` (and PostgreSQL) over a scenario."""
        observed: dict[str, Any] = {}
        for pid in pids.values():
            processes.reset_peak_rss(pid)
        sampler = processes.RssSampler(next(iter(pids.values())))
        cpu0 = {k: processes.cpu_seconds(p) for k, p in pids.items()}
        main0 = {k: processes.main_thread_seconds(p) for k, p in pids.items()}
        pg0 = processes.postgres_cpu()
        profilers = self.start_profilers(name, pids, start_at, seconds)
        t0 = time.monotonic()
        yield observed
        wall = time.monotonic() - max(t0, start_at)
        observed["cpu"] = {k: (processes.cpu_seconds(p) - cpu0[k]) / wall * 100
                           for k, p in pids.items()}  # fmt: skip
        observed["cpu"]["postgres"] = processes.postgres_cpu_since(pg0) / wall * 100
        observed["main_thread"] = {}
        for k, p in pids.items():
            before, after = main0[k], processes.main_thread_seconds(p)
            if before is not None and after is not None:
                observed["main_thread"][k] = (after[0] - before[0], after[1] - before[1], wall)
        observed["peak_rss"] = {p: processes.peak_rss_bytes(p) for p in pids.values()}
        observed["rss"] = sampler.stop()
        for profiler in profilers:
            profiler.wait(seconds + 30)

    def start_profilers(
        self, name: str, pids: dict[str, int], start_at: float, seconds: float
    ) -> list[subprocess.Popen[bytes]]:
        if not self.args.profile:
            return []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        folder = Path(self.args.profile)
        folder.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        time.sleep(max(0.0, start_at - time.monotonic()))
        profilers = []
        for what, pid in pids.items():
            if what in ("server", "gateway"):
                output = folder / f"{slug}.{what}.txt"
                argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                        "--duration", str(max(1, int(seconds))), "--nonblocking",
                        "--output", str(output)]  # fmt: skip
                profilers.append(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        return profilers

    # -- checks --

    def warm_up(self, tenant: Tenant) -> None:
        """One batch over every campaign: fills the key and campaign caches."""
        events = [make_event("impression", c, tenant.organization_id) for c in tenant.campaign_ids]
        reply = self._ingest.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=tenant.auth, timeout=30
        )
        tenant.warmup_events = reply.accepted
        if reply.accepted != len(events):
            raise RuntimeError(f"warm-up: {reply.accepted} of {len(events)} accepted: {reply}")

    def status(self, tenant: Tenant) -> pb.PipelineStatus:
        reply = self._metrics.GetPipelineStatus(
            pb.GetPipelineStatusRequest(), metadata=tenant.auth, timeout=30
        )
        return reply.status

    def wait_idle(self, tenant: Tenant, timeout: float = 120) -> pb.PipelineStatus:
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            status = self.status(tenant)
            quiet = quiet + 1 if status.buffer_size == 0 and not status.is_processing else 0
            if quiet >= 2:
                return status
            time.sleep(0.1)
        raise RuntimeError("the writer did not become idle")

    def verify(self, row: Row, tenant: Tenant, before: pb.PipelineStatus) -> None:
        """Acknowledged = stored, by the events table, the pipeline's counter
        and the daily CampaignAnalytics counters."""
        after = self.wait_idle(tenant)
        counters = " + ".join(
            ("impressions", "clicks", "conversions", "views", "engagements", "completions", "skips")
        )
        with psycopg.connect(database.libpq_url(self.database_url)) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM events WHERE organization_id = %s", (tenant.organization_id,)
            ).fetchone()[0]  # type: ignore[index]
            daily = conn.execute(
                f"SELECT coalesce(sum({counters}), 0) FROM campaign_analytics "
                "WHERE organization_id = %s",
                (tenant.organization_id,),
            ).fetchone()[0]  # type: ignore[index]
        d = row.details
        acked = row.events
        expected = acked + tenant.warmup_events
        counted = after.events_accepted - before.events_accepted
        flushes = after.flushes - before.flushes
        d.update(
            stored=stored, daily_counters=int(daily), pipeline_accepted=counted,
            flushes=flushes, warmup_events=tenant.warmup_events,
        )  # fmt: skip
        if flushes:
            d["mean_flush_events"] = counted / flushes
            row.notes.append(
                f"{flushes:,} flushes, {counted / flushes:,.0f} events each on average"
            )
        problems = []
        unknown = d.get("unknown", 0)
        if not expected <= stored <= expected + unknown:
            problems.append(
                f"MISMATCH: {acked:,} acknowledged (+{tenant.warmup_events} warm-up) but "
                f"{stored:,} stored"
            )
        if int(daily) != stored:
            problems.append(f"MISMATCH: {stored:,} events stored but daily counters sum to {daily}")
        if not acked <= counted <= acked + unknown:
            problems.append(
                f"MISMATCH: {acked:,} acknowledged but the pipeline counted {counted:,} accepted"
            )
        if d.get("duplicates") or d.get("rejected"):
            problems.append(
                f"UNEXPECTED: {d.get('duplicates')} duplicates, {d.get('rejected')} rejected"
            )
        if problems:
            row.ok = False
            row.check = "MISMATCH"
            row.notes += problems
            self.failures += [f"{row.name}: {p}" for p in problems]
        elif stored > expected:
            row.check = f"ok (+{stored - expected} of {unknown} unacked stored)"
        else:
            row.check = "ok: acked = stored"

    def check_overload(self, row: Row, load: Load, rss: list[tuple[float, int]]) -> None:
        refused_calls = load.errors.get("RESOURCE_EXHAUSTED", 0)
        row.details["resource_exhausted_calls"] = refused_calls
        row.notes.append(
            f"{refused_calls:,} calls refused with RESOURCE_EXHAUSTED "
            f"({load.refused:,} events), {load.calls:,} calls answered; client throttled "
            f"{load.throttled:,} starts at {OVERLOAD_IN_FLIGHT} in flight per worker"
        )
        # Memory grows while the buffer fills; once it is full (the first
        # refusal) it must stop growing: compare the later half of that time
        # with the earlier half. When nothing was refused, the same over the
        # last two thirds of the run.
        full = load.first_refused_at
        since = full or load.started + load.seconds / 3
        window = [(t, v) for t, v in rss if t >= since]
        bounded = None
        if len(window) >= 10:
            middle = window[0][0] + (window[-1][0] - window[0][0]) / 2
            first = max(v for t, v in window if t <= middle)
            second = max(v for t, v in window if t > middle)
            bounded = second <= first * 1.10 + 32 * 2**20
            row.details["rss_first_half_mib"] = first / 2**20
            row.details["rss_second_half_mib"] = second / 2**20
            what = "once the buffer was full" if full else "over the last two thirds"
            row.notes.append(
                f"{what} ({window[-1][0] - window[0][0]:.1f} s): RSS peak {first / 2**20:,.0f} MiB "
                f"in the first half, {second / 2**20:,.0f} MiB in the second: "
                f"{'bounded' if bounded else 'STILL GROWING'}"
            )
        else:
            row.notes.append("too little time after the buffer filled to judge memory")
        row.details["rss_bounded"] = bounded
        if refused_calls == 0:
            row.notes.append(
                "no RESOURCE_EXHAUSTED: the writer's buffer never filled, because the server "
                f"took requests in at only {row.rate:,.0f} events/s; the excess waited in the "
                "clients and in gRPC flow control"
            )

    # -- the report --

    def targets(self) -> list[Target]:
        targets = []
        by_name = {r.name: r for r in self.rows}
        for batch in (100, 1_000):
            row = by_name.get(f"service: stream b{batch} x{STREAMS}")
            targets.append(self._ratio_target(f"stream b{batch}", row, STREAM_TARGET))
        row = by_name.get(f"service: unary single x{SINGLES_IN_FLIGHT}")
        targets.append(self._ratio_target("unary single x16", row, SINGLE_TARGET))
        row = next((r for r in self.rows if "1 in flight" in r.name), None)
        if row is None or row.p99_ms is None:
            targets.append(Target("unary single p99", None, "not measured"))
        else:
            passed = row.p99_ms <= LATENCY_P99_TARGET_MS
            targets.append(Target(
                "unary single p99", passed,
                f"p99 {row.p99_ms:.1f} ms at light load (target <= {LATENCY_P99_TARGET_MS:g} ms)",
            ))  # fmt: skip
        row = next((r for r in self.rows if "overload" in r.name), None)
        if row is not None:
            bounded = row.details.get("rss_bounded")
            refused = row.details.get("resource_exhausted_calls", 0)
            targets.append(Target(
                "overload stays bounded", bool(bounded) and row.ok,
                f"peak RSS {row.peak_rss_mib:,.0f} MiB, {refused:,} RESOURCE_EXHAUSTED replies, "
                f"RSS {'bounded' if bounded else 'not shown bounded'}, acked = stored: {row.ok}",
            ))  # fmt: skip
        return targets

    @staticmethod
    def _ratio_target(name: str, row: Row | None, least: float) -> Target:
        if row is None or row.ratio is None:
            return Target(name, None, "not measured (or its ceiling was not)")
        return Target(
            name, row.ratio >= least,
            f"{row.rate:,.0f} events/s = {row.ratio:.0%} of {row.ceiling} "
            f"({row.ceiling_rate:,.0f}/s); target >= {least:.0%}",
        )  # fmt: skip

    def report(self) -> int:
        targets = self.targets()
        print()
        print(render_table(self.rows))
        notes = [(r.name, n) for r in self.rows for n in r.notes]
        flush = self.ceiling_rate("flush")
        if flush[1]:
            for r in self.rows:
                if r.ceiling.startswith("dedup") and r.rate:
                    notes.append((r.name, f"{r.rate / flush[1]:.0%} of the full flush SQL "
                                          f"ceiling ({flush[0]}, {flush[1]:,.0f}/s)"))  # fmt: skip
        if notes:
            print("\nNotes")
            for name, note in notes:
                print(f"  {name}: {note}")
        print("\nTargets")
        for t in targets:
            verdict = "----" if t.passed is None else ("PASS" if t.passed else "MISS")
            print(f"  {verdict}  {t.name}: {t.text}")
        print()
        print(machine.summary(self.machine))
        settings = ", ".join(f"{k}={v}" for k, v in self.server_settings.items())
        print(
            f"Server settings: {settings or '-'}; load: {self.args.workers} worker processes, "
            f"{self.seconds:g} s per scenario; server exit on SIGTERM: {self.server_exit_code}"
        )
        if self.failures:
            print("\nFAILURES")
            for failure in self.failures:
                print(f"  {failure}")
        if self.args.json:
            document = {
                "command": "python -m bench.ingest " + shlex.join(sys.argv[1:]),
                "seconds": self.seconds,
                "workers": self.args.workers,
                "campaigns": self.args.campaigns,
                "machine": self.machine,
                "server_settings": self.server_settings,
                "server_exit_code": self.server_exit_code,
                "rows": [r.as_json() for r in self.rows],
                "targets": [asdict(t) for t in targets],
                "failures": self.failures,
            }
            Path(self.args.json).write_text(json.dumps(document, indent=2, default=str) + "\n")
            print(f"\nResults written to {self.args.json}")
        return 1 if self.failures else 0


def render_table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<38} {'events':>10} {'secs':>6} {'events/s':>10}  {'ceiling used':<26}"
        f" {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8}  {'CPU% srv/gw/pg/cli':<19}"
        f" check"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ceiling_text = f"{r.ceiling} {r.ceiling_rate:,.0f}" if r.ceiling_rate else "-"
        cpu = "/".join(
            f"{r.cpu[k]:.0f}" if k in r.cpu else "-"
            for k in ("server", "gateway", "postgres", "clients")
        )
        lines.append(
            f"{r.name:<38} {r.events:>10,} {r.seconds:>6.1f} {r.rate:>10,.0f}  {ceiling_text:<26}"
            f" {_fmt(r.ratio, '{:.0%}'):>6} {_fmt(r.p50_ms, '{:.2f}'):>7}"
            f" {_fmt(r.p99_ms, '{:.2f}'):>7} {_fmt(r.peak_rss_mib, '{:,.0f}'):>8}  {cpu:<19}"
            f" {r.check}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    name = name.upper()
    if not name.startswith("CAMPAIGN_ANALYTICS_"):
        name = "CAMPAIGN_ANALYTICS_" + name
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Durable ingest throughput, latency and memory of campaign-analytics, "
        "against PostgreSQL's and a discarding server's ceilings.",
    )
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"seconds per load scenario (default {DEFAULT_SECONDS:g}; "
                        f"{QUICK_SECONDS:g} with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short scenarios, fewer samples")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--workers", type=int, default=2, help="load client processes (2)")
    parser.add_argument("--campaigns", type=int, default=100, help="campaigns per organization")
    parser.add_argument("--latency-samples", type=int, default=None,
                        help="calls in the latency scenario (3000; 600 with --quick)")  # fmt: skip
    parser.add_argument("--latency-rate", type=float, default=200.0,
                        help="calls per second in the latency scenario (200)")  # fmt: skip
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        default=None,
        help="comma-separated scenario groups: " + ",".join(SCENARIO_GROUPS),
    )
    parser.add_argument(
        "--server-setting",
        type=_setting,
        action="append",
        metavar="NAME=VALUE",
        help="a server setting, e.g. buffer_capacity=50000 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the server (and gateway) with py-spy into DIR, per scenario",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.latency_samples is None:
        args.latency_samples = 600 if args.quick else 3_000
    if args.only and not args.only <= set(SCENARIO_GROUPS):
        parser.error(f"--only takes {', '.join(SCENARIO_GROUPS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.exit(Bench(args).run())


if __name__ == "__main__":
    main()
