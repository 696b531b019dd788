"""Health follows PostgreSQL: NOT_SERVING while it is unreachable, SERVING
again once it is back, and ingest recovers without a restart."""

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import ServerThread, event, make_tenant

from clients import pb
from server.domain import Role
from server.store import migrate
from server.store.database import start_embedded

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_for(stub: health_pb2_grpc.HealthStub, status: int, limit: float = 20) -> None:
    """Follows the Watch stream until ``status`` arrives (bounded in time)."""
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=limit)
    try:
        for reply in stream:
            if reply.status == status:
                return
    finally:
        stream.cancel()
    raise AssertionError(f"health never reached {status}")


def test_health_tracks_the_database_and_ingest_recovers(tmp_path: Path) -> None:
    pgserver = pytest.importorskip("pgserver")
    data = tmp_path / "pg"
    url = start_embedded(data, "health")
    migrate.upgrade(url)
    instance = pgserver.get_server(data.resolve())
    server = ServerThread(url)
    try:
        tenant = make_tenant(server, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ingest = pb.IngestServiceStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING

            pgserver.postgres_server.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=instance.pgdata, user=instance.system_user
            )
            _wait_for(health, NOT_SERVING)
            with pytest.raises(grpc.RpcError) as raised:
                ingest.IngestEvents(
                    pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                    metadata=tenant.auth(Role.INGEST),
                    timeout=2,
                )
            assert raised.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

            instance.ensure_postgres_running()
            _wait_for(health, SERVING)
            started = time.monotonic()
            reply = ingest.IngestEvents(
                pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                metadata=tenant.auth(Role.INGEST),
                timeout=30,
            )
            assert reply.accepted == 1
            assert time.monotonic() - started < 30
    finally:
        server.stop()
