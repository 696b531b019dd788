"""The client against the real server and PostgreSQL: every RPC, sync and
async, with automatic event ids making a resent batch count as duplicates."""

import asyncio

import pytest
from support import ServerThread, Tenant, make_tenant

from clients import (
    AnalyticsClient,
    AsyncAnalyticsClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    make_event,
)
from server.domain import Role


def test_sync_client_covers_every_rpc(analytics_server: ServerThread, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    with AnalyticsClient(analytics_server.target, api_key=tenant.keys[Role.ADMIN]) as client:
        events = [make_event("impression", campaign, org, session_id="s1") for _ in range(20)]
        first = client.ingest(events)
        assert (first.accepted, first.duplicates) == (20, 0)
        assert all(e.event_id for e in events)
        again = client.ingest(events)  # a retry: same ids
        assert (again.accepted, again.duplicates) == (0, 20)

        one = client.ingest_event(make_event("click", campaign, org, value=2.0))
        assert one.accepted == 1 and one.event_id
        by_campaign = client.ingest_campaign_event(campaign, make_event("view", "", "", duration=8))
        assert by_campaign.success and by_campaign.campaign_id == campaign

        streamed = client.stream_events(
            [[make_event("impression", campaign, org)] * 1 for _ in range(5)]
        )
        assert streamed.accepted == 5 and streamed.batches == 5

        metrics = client.get_campaign_metrics(campaign, time_window=600).metrics
        assert (metrics.impressions, metrics.clicks, metrics.ad_playbacks) == (25, 1, 1)
        assert metrics.ctr == 4.0 and metrics.average_view_time == 8.0

        status = client.get_pipeline_status(organization_id=org)
        assert status.status.events_accepted >= 27
        assert [m.campaign_id for m in status.organization_metrics] == [campaign]
        dashboard = client.get_dashboard(org, time_window=600)
        assert dashboard.summary.total_impressions == 25

        created = client.create_campaign("extra_" + org, name="Extra")
        assert created.campaign.name == "Extra"
        listed = [c.campaign_id for c in client.list_campaigns().campaigns]
        assert listed == sorted([*tenant.campaign_ids, "extra_" + org])

        with pytest.raises(NotFoundError):
            client.get_campaign_metrics("camp_that_does_not_exist")

        burst = client.simulate("burst", [campaign], count=50, seed=1)
        assert (burst.count, burst.accepted) == (50, 50)
        journey = client.simulate("journey", [campaign])
        assert journey.accepted == journey.count and len(journey.session_ids) == 1
        started = client.simulate("start", [campaign], events_per_minute=60, duration=5)
        assert client.simulation_status().status.is_running
        stopped = client.simulate("stop", simulation_id=started.simulation.id)
        assert [s.id for s in stopped.stopped] == [started.simulation.id]
        assert not client.simulation_status().status.is_running
        with pytest.raises(InvalidArgumentError, match="clickRate"):
            client.simulate("burst", [campaign], click_rate=2)


def test_async_client(analytics_server: ServerThread, tenant: Tenant, other_tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[1]

    async def run() -> None:
        async with AsyncAnalyticsClient(
            analytics_server.target, api_key=tenant.keys[Role.INGEST]
        ) as client:

            async def batches():  # type: ignore[no-untyped-def]
                for _ in range(3):
                    yield [make_event("click", campaign, org, value=1.0) for _ in range(10)]

            reply = await client.stream_events(batches())
            assert reply.accepted == 30
            with pytest.raises(PermissionDeniedError):
                await client.get_campaign_metrics(campaign)  # an ingest key cannot read
            with pytest.raises(PermissionDeniedError):
                theirs = other_tenant.campaign_ids[0]
                await client.ingest([make_event("click", theirs, other_tenant.organization_id)])
            burst = await client.simulate("burst", [campaign], count=20)
            assert burst.accepted == 20
            with pytest.raises(PermissionDeniedError):
                await client.simulate("journey", other_tenant.campaign_ids[:1])
            status = await client.simulation_status()
            assert status.success and not status.status.is_running

    asyncio.run(run())


def test_a_message_over_the_size_limit_is_not_retried(database_url: str) -> None:
    server = ServerThread(database_url, max_message_bytes=64 * 1024)
    try:
        tenant = make_tenant(server)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        events = [make_event("impression", campaign, org, session_id="s" * 200) for _ in range(500)]
        with AnalyticsClient(server.target, api_key=tenant.keys[Role.INGEST]) as client:
            with pytest.raises(ResourceExhaustedError) as caught:
                client.ingest(events)
            assert caught.value.attempts == 1  # sending it again could not help
            assert "larger than max" in caught.value.details
            # Split, the same events go in.
            assert (
                sum(client.ingest(events[i : i + 100]).accepted for i in range(0, 500, 100)) == 500
            )
    finally:
        server.stop()
