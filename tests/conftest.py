"""Shared fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is
set), real gRPC servers on port 0, and organizations with keys and campaigns."""

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import json_format
from sqlalchemy.engine import make_url
from support import GatewayThread, ServerThread, Stubs, Tenant, make_tenant

from clients import pb
from server.domain import Role
from server.store import migrate
from server.store.database import create_database, libpq_url, start_embedded

# Servers in tests (in this process or started as commands) serve no
# /metrics unless a test asks for a port: the default one would collide.
os.environ.setdefault("CAMPAIGN_ANALYTICS_METRICS_PORT", "0")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    name = f"ca_test_{uuid.uuid4().hex[:10]}"
    base = os.environ.get("TEST_DATABASE_URL")
    if base:
        create_database(base, name)
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    else:
        url = start_embedded(Path(tmp_path_factory.mktemp("pg")) / "data", name)
    migrate.upgrade(url)
    yield url
    if base:
        with psycopg.connect(libpq_url(base), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def analytics_server(database_url: str) -> Iterator[ServerThread]:
    running = ServerThread(database_url)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def channel(analytics_server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(analytics_server.target) as ch:
        yield ch


@pytest.fixture(scope="session")
def stubs(channel: grpc.Channel) -> Stubs:
    return Stubs(
        pb.IngestServiceStub(channel),
        pb.MetricsServiceStub(channel),
        pb.CampaignServiceStub(channel),
        pb.SimulationServiceStub(channel),
    )


@pytest.fixture
def tenant(analytics_server: ServerThread) -> Tenant:
    return make_tenant(analytics_server)


@pytest.fixture
def other_tenant(analytics_server: ServerThread) -> Tenant:
    return make_tenant(analytics_server)


@pytest.fixture(scope="session")
def gateway(analytics_server: ServerThread) -> Iterator[GatewayThread]:
    running = GatewayThread(analytics_server.target)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
def rest_sender(http: httpx.Client) -> Callable[[Tenant, Sequence[pb.Event]], tuple[int, int]]:
    """Sends events as the seed's JSON through the gateway, in batches."""

    def send(tenant: Tenant, events: Sequence[pb.Event]) -> tuple[int, int]:
        accepted = duplicates = 0
        for start in range(0, len(events), 500):
            body = {"events": [json_format.MessageToDict(e) for e in events[start : start + 500]]}
            for item in body["events"]:
                item["eventType"] = item["eventType"].removeprefix("EVENT_TYPE_").lower()
            reply = http.post(
                "/api/analytics/real-time", json=body, headers=tenant.headers(Role.INGEST)
            )
            assert reply.status_code == 200, reply.text
            data = reply.json()
            assert data["rejected"] == []
            accepted += data["accepted"]
            duplicates += data["duplicates"]
        return accepted, duplicates

    return send
