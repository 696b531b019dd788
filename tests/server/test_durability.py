"""Acknowledged events survive a restart; a full buffer answers
RESOURCE_EXHAUSTED with a retry-after hint instead of growing."""

import time

import grpc
import psycopg
import pytest
from support import ServerThread, Tenant, event, make_tenant

from clients import pb
from server.domain import Role
from server.store.database import libpq_url


def test_acknowledged_events_survive_a_restart(database_url: str) -> None:
    first = ServerThread(database_url, flush_interval_ms=60_000, buffer_size=10_000)
    try:
        tenant = make_tenant(first, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        with grpc.insecure_channel(first.target) as channel:
            reply = pb.IngestServiceStub(channel).StreamEvents(
                iter(
                    [
                        pb.StreamEventsRequest(
                            events=[event("impression", campaign, org) for _ in range(300)]
                        )
                    ]
                ),
                metadata=tenant.auth(Role.INGEST),
            )
        assert reply.accepted == 300
    finally:
        assert first.stop()

    second = ServerThread(database_url)
    try:
        with grpc.insecure_channel(second.target) as channel:
            reply = pb.MetricsServiceStub(channel).GetCampaignMetrics(
                pb.GetCampaignMetricsRequest(campaign_id=campaign),
                metadata=tenant.auth(Role.READ),
            )
        assert reply.metrics.impressions == 300
    finally:
        second.stop()


def test_full_buffer_answers_resource_exhausted(database_url: str) -> None:
    server = ServerThread(database_url, buffer_capacity=50, max_batch_events=50)
    try:
        tenant: Tenant = make_tenant(server, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        with (
            psycopg.connect(libpq_url(database_url)) as blocker,
            grpc.insecure_channel(server.target) as channel,
        ):
            stub = pb.IngestServiceStub(channel)
            status = pb.MetricsServiceStub(channel)
            # Hold the events table so that a flush cannot finish.
            blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            first = stub.IngestEvents.future(
                pb.IngestEventsRequest(
                    events=[event("impression", campaign, org) for _ in range(50)]
                ),
                metadata=tenant.auth(Role.INGEST),
            )
            deadline = time.monotonic() + 30
            while not status.GetPipelineStatus(
                pb.GetPipelineStatusRequest(), metadata=tenant.auth(Role.READ)
            ).status.is_processing:
                assert time.monotonic() < deadline, "the first batch never reached the writer"
                time.sleep(0.01)

            with pytest.raises(grpc.RpcError) as raised:
                stub.IngestEvents(
                    pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                    metadata=tenant.auth(Role.INGEST),
                )
            error = raised.value
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ("retry-after", "1") in error.trailing_metadata()
            assert "buffer is full" in error.details()

            blocker.rollback()  # release the table: the first batch commits
            assert first.result(timeout=30).accepted == 50
            retried = stub.IngestEvents(
                pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                metadata=tenant.auth(Role.INGEST),
            )
            assert retried.accepted == 1
    finally:
        server.stop()


def test_a_stream_waits_for_room_instead_of_failing(database_url: str) -> None:
    server = ServerThread(database_url, buffer_capacity=200, max_batch_events=200)
    try:
        tenant = make_tenant(server, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        batches = [
            pb.StreamEventsRequest(events=[event("impression", campaign, org) for _ in range(150)])
            for _ in range(20)
        ]
        with grpc.insecure_channel(server.target) as channel:
            reply = pb.IngestServiceStub(channel).StreamEvents(
                iter(batches), metadata=tenant.auth(Role.INGEST)
            )
        assert reply.accepted == 3000 and not reply.rejected
    finally:
        server.stop()
