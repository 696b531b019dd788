"""The server's and the gateway's own metrics, scraped over HTTP from a real
server and gateway after known traffic, and the pipeline status's
condition: healthy, degraded with its cause (PostgreSQL unreachable, the
buffer full), healthy again, stopping."""

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import GatewayThread, ServerThread, Tenant, event, make_tenant

from clients import pb
from server.domain import Role
from server.store import migrate
from server.store.database import libpq_url, start_embedded

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> Samples:
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(check: Callable[[], bool], limit: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {limit} s: {what}")


@pytest.fixture(scope="module")
def observed(database_url: str) -> Iterator[tuple[ServerThread, GatewayThread]]:
    """A server serving /metrics, and a gateway in front of it: only this
    module's traffic moves their counters."""
    server = ServerThread(database_url, metrics_port=free_port())
    gateway = GatewayThread(server.target)
    try:
        yield server, gateway
    finally:
        gateway.stop()
        server.stop()


def test_server_metrics_count_what_the_pipeline_did(
    observed: tuple[ServerThread, GatewayThread],
) -> None:
    server, gateway = observed
    metrics_url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    tenant = make_tenant(server, campaigns=2)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    before = scrape(metrics_url)

    first = event("impression", campaign, org)
    with grpc.insecure_channel(server.target) as channel:
        ingest = pb.IngestServiceStub(channel)
        reply = ingest.IngestEvents(
            pb.IngestEventsRequest(events=[first, event("click", campaign, org, value=1.5)]),
            metadata=tenant.auth(Role.INGEST),
        )
        assert reply.accepted == 2
        reply = ingest.IngestEvents(
            pb.IngestEventsRequest(
                events=[
                    first,  # already stored
                    event("view", campaign, org, duration=3.0),
                    event("click", campaign, org, value=-1.0),
                    event("click", "camp_nowhere_" + uuid.uuid4().hex[:6], org),
                    event("skip", campaign, org, value=float("nan")),
                ]
            ),
            metadata=tenant.auth(Role.INGEST),
        )
        assert (reply.accepted, reply.duplicates, len(reply.rejected)) == (1, 1, 3)
    rest = httpx.post(
        f"{gateway.url}/api/analytics/real-time",
        json={"event": {"eventType": "click", "campaignId": campaign, "organizationId": org}},
        headers=tenant.headers(Role.INGEST),
        timeout=30,
    )
    assert rest.status_code == 200, rest.text

    after = scrape(metrics_url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    events = "campaign_analytics_events_total"
    assert moved(events, outcome="accepted", reason="") == 4
    assert moved(events, outcome="duplicate", reason="") == 1
    assert moved(events, outcome="rejected", reason="invalid_value") == 2
    assert moved(events, outcome="rejected", reason="campaign_not_found") == 1
    assert moved(events, outcome="refused", reason="buffer_full") == 0
    # Every row handed to the writer is in a flush, the known one too.
    assert moved("campaign_analytics_flush_events_sum") == 5
    assert 1 <= moved("campaign_analytics_flush_events_count") <= 3
    assert moved("campaign_analytics_flush_duration_seconds_count") == moved(
        "campaign_analytics_flush_events_count"
    )
    assert moved("campaign_analytics_flush_duration_seconds_sum") > 0
    assert value(after, "campaign_analytics_buffered_events") == 0
    assert value(after, "campaign_analytics_events_in_flight") == 0
    assert value(after, "campaign_analytics_buffer_capacity_events") == (
        server.settings.buffer_capacity
    )
    assert value(after, "campaign_analytics_writer_degraded") == 0
    assert value(after, "campaign_analytics_serving") == 1
    assert moved("campaign_analytics_commit_errors_total", kind="unreachable") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_the_metrics_port_serves_metrics_alone(
    observed: tuple[ServerThread, GatewayThread],
) -> None:
    base = f"http://127.0.0.1:{observed[0].server.metrics_port}"
    assert "campaign_analytics_events_total" in httpx.get(f"{base}/metrics", timeout=10).text
    for path in ("/", "/favicon.ico", "/metricsx", "/api/analytics/real-time"):
        reply = httpx.get(base + path, timeout=10)
        assert reply.status_code == 404, path
        assert "/metrics" in reply.text
    # A request naming the whole URL, as one sent through a proxy does.
    port = observed[0].server.metrics_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {base}/metrics HTTP/1.0\r\n\r\n".encode())
        raw = b""
        while part := sock.recv(65536):
            raw += part
    assert raw.startswith(b"HTTP/1.0 200") and b"campaign_analytics_events_total" in raw


def test_server_metrics_follow_subscriptions_and_simulations(
    observed: tuple[ServerThread, GatewayThread],
) -> None:
    server, _ = observed
    metrics_url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    tenant = make_tenant(server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    with grpc.insecure_channel(server.target) as channel:
        subscriptions = pb.SubscriptionServiceStub(channel)
        before = scrape(metrics_url)
        created = subscriptions.CreateSubscription(
            pb.CreateSubscriptionRequest(organization_id=org, campaign_ids=[campaign]),
            metadata=tenant.auth(Role.READ),
        )
        assert value(scrape(metrics_url), "campaign_analytics_subscriptions") == 1
        pb.IngestServiceStub(channel).IngestEvents(
            pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
            metadata=tenant.auth(Role.INGEST),
        )
        # The publisher queues the campaign's new numbers for the subscription.
        wait_until(
            lambda: value(scrape(metrics_url), "campaign_analytics_queued_updates") == 1,
            what="one queued update",
        )
        published = value(scrape(metrics_url), "campaign_analytics_updates_published_total")
        assert published - value(before, "campaign_analytics_updates_published_total") >= 1
        subscriptions.GetUpdates(
            pb.GetUpdatesRequest(subscription_id=created.subscription.id),
            metadata=tenant.auth(Role.READ),
        )
        assert value(scrape(metrics_url), "campaign_analytics_queued_updates") == 0
        subscriptions.DeleteSubscription(
            pb.DeleteSubscriptionRequest(subscription_id=created.subscription.id),
            metadata=tenant.auth(Role.READ),
        )
        assert value(scrape(metrics_url), "campaign_analytics_subscriptions") == 0

        simulation = pb.SimulationServiceStub(channel)
        started = simulation.Simulate(
            pb.SimulateRequest(
                action=pb.SimulationAction.SIMULATION_ACTION_START,
                organization_id=org,
                campaign_ids=[campaign],
                options=pb.SimulationOptions(events_per_minute=60),
            ),
            metadata=tenant.auth(Role.INGEST),
        )
        assert started.success
        assert value(scrape(metrics_url), "campaign_analytics_simulations_running") == 1
        simulation.Simulate(
            pb.SimulateRequest(action=pb.SimulationAction.SIMULATION_ACTION_STOP),
            metadata=tenant.auth(Role.INGEST),
        )
        after = scrape(metrics_url)
    assert value(after, "campaign_analytics_simulations_running") == 0
    ended = "campaign_analytics_simulations_ended_total"
    assert value(after, ended, state="stopped") - value(before, ended, state="stopped") == 1


def test_gateway_metrics_count_requests_by_route_and_status_and_follow_sse(
    observed: tuple[ServerThread, GatewayThread],
) -> None:
    server, gateway = observed
    tenant = make_tenant(server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    metrics_url = f"{gateway.url}/metrics"
    before = scrape(metrics_url)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        body = {"event": {"eventType": "impression", "campaignId": campaign, "organizationId": org}}
        for _ in range(2):
            ok = http.post("/api/analytics/real-time", json=body, headers=tenant.headers())
            assert ok.status_code == 200, ok.text
        denied = http.post(
            "/api/analytics/real-time",
            json=body,
            headers={"authorization": "Bearer ca_" + "x" * 40},
        )
        assert denied.status_code == 401
        metrics = http.get(
            f"/api/campaigns/{campaign}/analytics/real-time", headers=tenant.headers(Role.READ)
        )
        assert metrics.status_code == 200
        assert http.get("/no/such/route").status_code == 404
        after = scrape(metrics_url)

        requests = "campaign_analytics_gateway_requests_total"

        def moved(**labels: str) -> float:
            return value(after, requests, **labels) - value(before, requests, **labels)

        ingest_route = {"route": "/api/analytics/real-time", "method": "POST"}
        assert moved(**ingest_route, status="200") == 2
        assert moved(**ingest_route, status="401") == 1
        campaign_route = "/api/campaigns/{campaign_id}/analytics/real-time"
        assert moved(route=campaign_route, method="GET", status="200") == 1
        assert moved(route="unmatched", method="GET", status="404") == 1
        durations = "campaign_analytics_gateway_request_duration_seconds_count"
        assert (
            value(after, durations, **ingest_route) - value(before, durations, **ingest_route) == 3
        )
        assert value(after, "process_resident_memory_bytes") > 0
        assert "/metrics" not in http.get("/openapi.json").json()["paths"]

        # One SSE connection: one connection open, one upstream stream.
        created = http.post(
            "/api/analytics/real-time/subscribe",
            json={"organizationId": org, "campaignIds": [campaign]},
            headers=tenant.headers(Role.READ),
        )
        subscription_id = created.json()["subscription"]["id"]
        with http.stream(
            "GET",
            "/api/analytics/real-time/updates",
            params={"subscriptionId": subscription_id, "format": "sse"},
        ) as stream:
            lines = stream.iter_lines()
            assert any('"connected"' in line for line in (next(lines), next(lines)))
            during = scrape(metrics_url)
            assert value(during, "campaign_analytics_gateway_sse_connections") == 1
            assert value(during, "campaign_analytics_gateway_update_streams") == 1
        wait_until(
            lambda: value(scrape(metrics_url), "campaign_analytics_gateway_sse_connections") == 0,
            what="the SSE connection closed",
        )
        assert value(scrape(metrics_url), "campaign_analytics_gateway_update_streams") == 0


def test_responses_carry_the_request_id_the_caller_sent_or_a_new_one(
    observed: tuple[ServerThread, GatewayThread],
) -> None:
    _, gateway = observed
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        sent = "req-" + uuid.uuid4().hex
        reply = http.get("/api/analytics/real-time", headers={"x-request-id": sent})
        assert reply.status_code == 401  # no key
        assert reply.headers["x-request-id"] == sent
        made = http.get("/api/analytics/real-time").headers["x-request-id"]
        other = http.get("/api/analytics/real-time").headers["x-request-id"]
        assert made and other and made != other
        # An id too long to be sensible is replaced.
        replaced = http.get("/no/such/route", headers={"x-request-id": "r" * 500})
        assert replaced.headers["x-request-id"] != "r" * 500


# -- the pipeline's condition -------------------------------------------------


def pipeline_status(target: str, tenant: Tenant) -> pb.PipelineStatus:
    with grpc.insecure_channel(target) as channel:
        return (
            pb.MetricsServiceStub(channel)
            .GetPipelineStatus(
                pb.GetPipelineStatusRequest(), metadata=tenant.auth(Role.READ), timeout=10
            )
            .status
        )


HEALTHY = pb.PipelineState.PIPELINE_STATE_HEALTHY
DEGRADED = pb.PipelineState.PIPELINE_STATE_DEGRADED


def test_status_shows_postgresql_unreachable_with_its_cause_then_healthy(
    tmp_path: Path,
) -> None:
    pgserver = pytest.importorskip("pgserver")
    data = tmp_path / "pg"
    url = start_embedded(data, "condition")
    migrate.upgrade(url)
    instance = pgserver.get_server(data.resolve())
    # Keys checked once stay trusted, so status can be read while the
    # database is away.
    server = ServerThread(url, key_cache_seconds=3600, metrics_port=free_port())
    gateway = GatewayThread(server.target)
    metrics_url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    try:
        tenant = make_tenant(server, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        status = pipeline_status(server.target, tenant)
        assert (status.state, status.serving, status.degraded) == (HEALTHY, True, False)
        assert status.degraded_reason == "" and not status.HasField("degraded_since")
        with grpc.insecure_channel(server.target) as channel:
            ingest = pb.IngestServiceStub(channel)
            ingest.IngestEvents(
                pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                metadata=tenant.auth(Role.INGEST),
                timeout=10,
            )

            pgserver.postgres_server.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=instance.pgdata, user=instance.system_user
            )
            stopped_at = time.time()
            # This event reaches the writer (its key and campaign are known),
            # which cannot commit it and keeps retrying.
            with pytest.raises(grpc.RpcError):
                ingest.IngestEvents(
                    pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
                    metadata=tenant.auth(Role.INGEST),
                    timeout=2,
                )
        wait_until(
            lambda: value(scrape(metrics_url), "campaign_analytics_writer_degraded") == 1,
            what="the writer degraded",
        )
        status = pipeline_status(server.target, tenant)
        assert status.state == DEGRADED and status.degraded and not status.serving
        assert status.degraded_reason.startswith("PostgreSQL unreachable since "), status
        assert status.degraded_since.ToSeconds() >= int(stopped_at) - 1
        cause = status.degraded_reason.split(": ", 1)[1]
        assert cause, status.degraded_reason
        # The cause says what failed, not where the database lives (the
        # embedded one listens on a socket in its data folder).
        assert str(tmp_path) not in status.degraded_reason
        assert "socket" not in status.degraded_reason
        assert status.commit_errors >= 1
        wait_until(
            lambda: value(scrape(metrics_url), "campaign_analytics_serving") == 0,
            what="health NOT_SERVING",
        )
        scraped = scrape(metrics_url)
        assert value(scraped, "campaign_analytics_commit_errors_total", kind="unreachable") >= 1
        assert value(scraped, "campaign_analytics_commit_retries_total") >= 1
        rest = httpx.get(
            f"{gateway.url}/api/analytics/real-time", headers=tenant.headers(Role.READ), timeout=10
        )
        assert rest.status_code == 200, rest.text
        shown = rest.json()["status"]
        assert (shown["state"], shown["degraded"], shown["serving"]) == ("degraded", True, False)
        assert shown["degradedReason"].startswith("PostgreSQL unreachable since ")
        assert shown["degradedSince"].endswith("Z")

        instance.ensure_postgres_running()

        def healthy() -> bool:
            status = pipeline_status(server.target, tenant)
            return status.state == HEALTHY and status.serving

        wait_until(healthy, limit=30, what="healthy again")
        status = pipeline_status(server.target, tenant)
        assert status.degraded_reason == "" and not status.HasField("degraded_since")
        assert value(scrape(metrics_url), "campaign_analytics_writer_degraded") == 0
        # The health check (and its gauge) follows within its interval.
        wait_until(
            lambda: value(scrape(metrics_url), "campaign_analytics_serving") == 1,
            what="serving again",
        )
        rest = httpx.get(
            f"{gateway.url}/api/analytics/real-time", headers=tenant.headers(Role.READ), timeout=10
        )
        assert rest.json()["status"]["state"] == "healthy"
        assert rest.json()["status"]["degradedSince"] is None
    finally:
        gateway.stop()
        server.stop()
    condition = server.components.condition.current()
    assert (condition.state.value, condition.serving) == ("stopping", False)
    assert condition.cause.startswith("the server is stopping since ")


def test_status_shows_a_full_buffer_and_still_serves(database_url: str) -> None:
    server = ServerThread(database_url, buffer_capacity=10, max_batch_events=10)
    tenant = make_tenant(server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    blocked = threading.Event()
    results: list[object] = []
    try:
        with (
            psycopg.connect(libpq_url(database_url)) as lock,
            grpc.insecure_channel(server.target) as channel,
        ):
            ingest = pb.IngestServiceStub(channel)
            # While a transaction holds the events table, a flush cannot commit:
            # its 10 events fill the buffer.
            lock.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")

            def first_batch() -> None:
                blocked.set()
                try:
                    results.append(
                        ingest.IngestEvents(
                            pb.IngestEventsRequest(
                                events=[event("impression", campaign, org) for _ in range(10)]
                            ),
                            metadata=tenant.auth(Role.INGEST),
                            timeout=30,
                        )
                    )
                except grpc.RpcError as error:
                    results.append(error)

            sender = threading.Thread(target=first_batch)
            sender.start()
            blocked.wait(10)
            wait_until(lambda: server.components.writer.is_processing, what="the flush is writing")
            with pytest.raises(grpc.RpcError) as refused:
                ingest.IngestEvents(
                    pb.IngestEventsRequest(events=[event("click", campaign, org)]),
                    metadata=tenant.auth(Role.INGEST),
                    timeout=10,
                )
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            status = pipeline_status(server.target, tenant)
            assert status.state == DEGRADED and status.serving
            assert status.degraded_reason.startswith("buffer full since "), status
            assert "RESOURCE_EXHAUSTED" in status.degraded_reason
            assert status.events_refused == 1
            lock.rollback()
            sender.join(30)
        reply = results[0]
        assert isinstance(reply, pb.IngestEventsResponse) and reply.accepted == 10
    finally:
        server.stop()
