"""Per-key rate limits: a key over its events or calls per second is refused
with RESOURCE_EXHAUSTED and a retry-after trailer (429 and Retry-After over
REST) saying which limit; a client stream is slowed down instead; other keys
are unaffected. And a gRPC message over the size limit is refused clearly."""

from collections.abc import Iterator

import grpc
import httpx
import pytest
from support import GatewayThread, ServerThread, Tenant, event, make_tenant

from clients import pb
from server.domain import Role
from server.errors import ResourceExhausted
from server.limits import RateLimit

# Buckets of 100 events and 2.5 calls, refilled at 200 events and 5 calls a second.
EVENTS_PER_SECOND = 200
CALLS_PER_SECOND = 5
BURST_SECONDS = 0.5


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[ServerThread]:
    server = ServerThread(
        database_url,
        rate_limit_events_per_second=EVENTS_PER_SECOND,
        rate_limit_calls_per_second=CALLS_PER_SECOND,
        rate_limit_burst_seconds=BURST_SECONDS,
        max_message_bytes=1024 * 1024,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited_http(limited: ServerThread) -> Iterator[httpx.Client]:
    gateway = GatewayThread(limited.target)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client
    gateway.stop()


def events(tenant: Tenant, count: int) -> list[pb.Event]:
    return [
        event("impression", tenant.campaign_ids[0], tenant.organization_id) for _ in range(count)
    ]


def ingest(stub: pb.IngestServiceStub, tenant: Tenant, role: Role, count: int) -> int:
    reply = stub.IngestEvents(
        pb.IngestEventsRequest(events=events(tenant, count)), metadata=tenant.auth(role)
    )
    return reply.accepted


def retry_after(error: grpc.RpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "retry-after":
            return str(value)
    return None


def test_a_key_over_its_events_per_second_is_refused_and_told_when_to_retry(
    limited: ServerThread,
) -> None:
    tenant, other = make_tenant(limited), make_tenant(limited)
    with grpc.insecure_channel(limited.target) as channel:
        stub = pb.IngestServiceStub(channel)
        # A full bucket admits even a batch larger than itself; the debt
        # (900 events, 4.5 s) refuses what follows.
        assert ingest(stub, tenant, Role.INGEST, 1000) == 1000
        with pytest.raises(grpc.RpcError) as refused:
            ingest(stub, tenant, Role.INGEST, 1)
        error = refused.value
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "rate limit exceeded: at most 200 events per second per API key "
            f"(bursts of up to 100); retry in {retry_after(error)} seconds"
        )
        assert retry_after(error) in {"4", "5"}
        # Nothing of the refused call was stored: the metrics count 1,000.
        metrics = pb.MetricsServiceStub(channel).GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[0]),
            metadata=tenant.auth(Role.READ),
        )
        assert metrics.metrics.impressions == 1000

        # The same organization's other keys, and other organizations, go on.
        assert ingest(stub, tenant, Role.ADMIN, 100) == 100
        assert ingest(stub, other, Role.INGEST, 100) == 100


def test_over_rest_the_limit_is_429_with_retry_after(
    limited: ServerThread, limited_http: httpx.Client
) -> None:
    tenant = make_tenant(limited)
    click = {
        "eventType": "click",
        "campaignId": tenant.campaign_ids[0],
        "organizationId": tenant.organization_id,
    }
    first = limited_http.post(
        "/api/analytics/real-time",
        json={"events": [click] * 250},
        headers=tenant.headers(Role.INGEST),
    )
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 250  # admitted by a full bucket; 0.75 s of debt
    second = limited_http.post(
        "/api/analytics/real-time", json={"event": click}, headers=tenant.headers(Role.INGEST)
    )
    assert second.status_code == 429, second.text
    assert second.headers["retry-after"] == "1"
    body = second.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert body["message"].startswith("rate limit exceeded: at most 200 events per second")
    other_key = limited_http.post(
        "/api/analytics/real-time", json={"event": click}, headers=tenant.headers(Role.ADMIN)
    )
    assert other_key.status_code == 200, other_key.text


def test_a_key_over_its_calls_per_second_is_refused(limited: ServerThread) -> None:
    tenant = make_tenant(limited)
    request = pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[0])
    with grpc.insecure_channel(limited.target) as channel:
        stub = pb.MetricsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in range(50):
                stub.GetCampaignMetrics(request, metadata=tenant.auth(Role.READ))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (refused.value.details() or "").startswith(
            "rate limit exceeded: at most 5 calls per second per API key"
        )
        assert retry_after(refused.value) == "1"
        stub.GetCampaignMetrics(request, metadata=tenant.auth(Role.ADMIN))


def test_a_client_stream_over_the_limit_is_slowed_down_not_refused(
    limited: ServerThread,
) -> None:
    tenant = make_tenant(limited)
    batches = [pb.StreamEventsRequest(events=events(tenant, 100)) for _ in range(3)]
    with grpc.insecure_channel(limited.target) as channel:
        reply = pb.IngestServiceStub(channel).StreamEvents(
            iter(batches), metadata=tenant.auth(Role.INGEST), timeout=30
        )
    assert (reply.accepted, reply.batches) == (300, 3)


def test_a_grpc_message_over_the_size_limit_is_resource_exhausted(
    limited: ServerThread,
) -> None:
    tenant = make_tenant(limited)
    big = event("impression", tenant.campaign_ids[0], tenant.organization_id)
    big.metadata.extra["padding"] = "x" * (1024 * 1024)
    with (
        grpc.insecure_channel(limited.target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb.IngestServiceStub(channel).IngestEvents(
            pb.IngestEventsRequest(events=[big]), metadata=tenant.auth(Role.INGEST)
        )
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or "")


def test_a_refused_request_takes_nothing_and_buckets_are_per_key() -> None:
    limit = RateLimit("events", per_second=10, burst_seconds=1)
    limit.check("k", 6)
    with pytest.raises(ResourceExhausted) as refused:
        limit.check("k", 5)
    assert refused.value.retry_after == 1
    limit.check("k", 4)  # the refused 5 were not taken
    limit.check("other", 10)
    off = RateLimit("events", per_second=0, burst_seconds=1)
    for _ in range(1000):
        off.check("k", 1_000_000)
