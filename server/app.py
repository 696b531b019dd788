"""The gRPC server: services, health, reflection, the writer, and their
start-up and orderly shutdown."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from clients import pb
from server import codec, tls
from server.auth import KeyStore
from server.ingest.campaigns import CampaignDirectory
from server.ingest.dead_letters import DeadLetters
from server.ingest.pipeline import IngestPipeline
from server.ingest.validation import Limits
from server.ingest.writer import BatchWriter
from server.limits import KeyLimits
from server.metrics.reader import MetricsReader
from server.metrics.retention import prune_periodically
from server.observability.condition import PipelineCondition
from server.observability.exposition import MetricsEndpoint
from server.observability.metrics import ServerMetrics
from server.revocation import RevocationListener
from server.services.campaigns import CampaignServicer
from server.services.ingest import IngestServicer
from server.services.metrics import MetricsServicer
from server.services.simulation import SimulationServicer
from server.services.subscriptions import SubscriptionServicer
from server.services.undecodable import DecodingServer
from server.settings import ServerSettings
from server.simulation.simulations import Simulations
from server.store import migrate
from server.store.database import libpq_url, sqlalchemy_url
from server.updates.hub import UpdateHub
from server.updates.publisher import UpdatePublisher

log = logging.getLogger(__name__)

# The default largest gRPC message (``max_message_bytes``), for clients too.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STEP_SECONDS = 2.0  # the longest a shutdown step may take, but for the grace
HEALTH_INTERVAL = 1.0


@dataclass(slots=True)
class Components:
    engine: AsyncEngine
    keys: KeyStore
    writer: BatchWriter
    pipeline: IngestPipeline
    reader: MetricsReader
    hub: UpdateHub
    publisher: UpdatePublisher
    simulations: Simulations
    metrics: ServerMetrics
    condition: PipelineCondition


class AnalyticsServer:
    """One server process. ``start`` returns the bound gRPC port."""

    def __init__(self, settings: ServerSettings, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._monitor: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.components: Components | None = None
        self._ingest: IngestServicer | None = None
        self._revocations: RevocationListener | None = None
        self.metrics = ServerMetrics(process=True)
        self._metrics_endpoint = MetricsEndpoint(self.metrics.registry)
        self.metrics_port = 0  # where /metrics is served; 0: nowhere

    async def start(self) -> int:
        s = self.settings
        if s.metrics_port:
            self.metrics_port = self._metrics_endpoint.start(s.host, s.metrics_port)
        if s.migrate:
            await asyncio.to_thread(migrate.upgrade, self.database_url)
        engine = create_async_engine(
            sqlalchemy_url(self.database_url), pool_size=8, max_overflow=8, pool_pre_ping=True
        )
        keys = KeyStore(
            engine,
            s.key_cache_seconds,
            KeyLimits(
                calls_per_second=s.rate_limit_calls_per_second,
                events_per_second=s.rate_limit_events_per_second,
                burst_seconds=s.rate_limit_burst_seconds,
            ),
        )
        campaigns = CampaignDirectory(engine)
        writer = BatchWriter(
            libpq_url(self.database_url),
            flush_threshold=s.buffer_size,
            flush_interval=s.flush_interval_ms / 1000,
            capacity=s.buffer_capacity,
            max_flush_events=s.max_flush_events,
            connections=s.writer_connections,
            commit_delay=s.commit_delay_ms / 1000,
            metrics=self.metrics,
        )
        pipeline = IngestPipeline(
            writer,
            campaigns,
            DeadLetters(engine),
            limits=Limits(
                max_event_bytes=s.max_event_bytes,
                max_future=timedelta(seconds=s.max_future_seconds),
                max_age=timedelta(seconds=s.max_age_seconds),
            ),
            max_batch_events=s.max_batch_events,
            payload_of=codec.event_payload,
            read_rows=codec.event_rows,
            decode=codec.decode_event,
            metrics=self.metrics,
        )
        reader = MetricsReader(engine)
        hub = UpdateHub(s.max_queue_size, s.subscription_idle_seconds, self.metrics)
        publisher = UpdatePublisher(
            hub,
            reader,
            libpq_url(self.database_url),
            min_interval=s.update_interval_ms / 1000,
            sweep_interval=min(30.0, s.subscription_idle_seconds / 2),
        )
        simulations = Simulations(pipeline, self.metrics)
        condition = PipelineCondition(pipeline)
        self.components = Components(
            engine,
            keys,
            writer,
            pipeline,
            reader,
            hub,
            publisher,
            simulations,
            self.metrics,
            condition,
        )
        await writer.start()
        await publisher.start()
        self._revocations = RevocationListener(keys, hub, libpq_url(self.database_url))
        await self._revocations.start()

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        # The analytics services decode their own requests (DecodingServer).
        analytics = cast(grpc.aio.Server, DecodingServer(server))
        self._ingest = IngestServicer(keys, pipeline)
        pb.add_IngestServiceServicer_to_server(self._ingest, analytics)
        pb.add_MetricsServiceServicer_to_server(
            MetricsServicer(keys, reader, campaigns, pipeline, condition), analytics
        )
        pb.add_CampaignServiceServicer_to_server(
            CampaignServicer(keys, engine, campaigns), analytics
        )
        pb.add_SubscriptionServiceServicer_to_server(
            SubscriptionServicer(keys, hub, publisher, campaigns, reader, s.heartbeat_seconds),
            analytics,
        )
        pb.add_SimulationServiceServicer_to_server(SimulationServicer(keys, simulations), analytics)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*pb.SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = tls.add_port(server, f"{s.host}:{s.grpc_port}", s.tls_cert, s.tls_key)
        if self.port == 0:
            raise OSError(f"cannot listen on {s.host}:{s.grpc_port}: the port is taken?")
        await server.start()
        self._server = server
        await self._check_health()
        self._monitor = asyncio.create_task(self._watch_health(), name="health-monitor")
        self._pruner = asyncio.create_task(prune_periodically(engine), name="rollup-pruner")
        log.info("gRPC server listening on %s:%d", s.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> bool:
        """Drains: health NOT_SERVING, stop taking calls (in-flight ones get
        ``grace`` seconds), commit what is buffered. Returns whether
        everything acknowledged-or-buffered was committed."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for task in (self._monitor, self._pruner):
            if task is not None:
                task.cancel()
                await _phase(f"ending {task.get_name()}", _ended(task), STEP_SECONDS)
        if self.components is not None:
            self.components.condition.stopping()
            self.metrics.serving.set(0)
        await self._health.enter_graceful_shutdown()
        if self.components is not None:
            # Simulations commit their batch in flight and end.
            close_simulations = self.components.simulations.close(timeout=min(5.0, grace))
            await _phase("stopping simulations", close_simulations, min(5.0, grace) + 1)
            # Update streams end now, cleanly, rather than at the grace's end.
            await _phase("stopping live updates", self.components.publisher.stop(), STEP_SECONDS)
            if self._revocations is not None:
                await _phase("stopping revocations", self._revocations.stop(), STEP_SECONDS)
            self.components.hub.close_all()
        if self._server is not None:
            # Streams end at their next message, committing what they read,
            # rather than at the grace's end with nothing said.
            if self._ingest is not None:
                self._ingest.drain()
            await _phase("ending calls", self._server.stop(grace), grace + STEP_SECONDS)
        drained = True
        if self.components is not None:
            remaining = max(0.1, deadline - loop.time())
            try:
                drained = await asyncio.wait_for(
                    self.components.writer.shutdown(remaining), remaining + STEP_SECONDS
                )
            except TimeoutError:
                log.warning("shutdown: committing buffered events did not finish in time")
                drained = False
            await _phase("closing database connections", self.components.engine.dispose(), 2)
        await _phase("stopping /metrics", self._metrics_endpoint.stop(), STEP_SECONDS)
        return drained

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            await self._check_health()

    async def _check_health(self) -> None:
        """SERVING while PostgreSQL answers and the writer is not degraded;
        the pipeline status says why not (``PipelineCondition``)."""
        assert self.components is not None
        condition = self.components.condition
        if not self.components.writer.degraded:
            try:
                async with asyncio.timeout(2):
                    async with self.components.engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                condition.database_answered()
            except Exception as exc:
                condition.database_failed(exc)
        healthy = condition.current().serving
        self.metrics.serving.set(1 if healthy else 0)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *pb.SERVICE_NAMES):
            await self._health.set(name, status)


async def _ended(task: "asyncio.Task[None]") -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _phase(name: str, step: Awaitable[object], seconds: float) -> None:
    """Awaits one step of the shutdown, for at most ``seconds``: a step that
    hangs is logged and left behind, so the process still exits."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning("shutdown: %s did not finish within %.1f s; going on", name, seconds)
        return
    took = time.monotonic() - started
    if took > 1:
        log.info("shutdown: %s took %.1f s", name, took)
