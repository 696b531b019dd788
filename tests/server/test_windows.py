"""Window edges are exact to the second, and empty denominators give 0."""

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format
from support import ServerThread, Stubs, Tenant, event

from clients import pb
from server.domain import Role
from server.metrics.window import Window


def test_window_edges_are_exact_to_the_second(
    analytics_server: ServerThread, stubs: Stubs, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    window = Window(seconds=60, now=now + timedelta(milliseconds=500))
    first, last = window.first_bucket, window.last_bucket
    assert last - first == timedelta(seconds=59)
    at = {
        "just inside at the start": first,
        "just outside at the start": first - timedelta(microseconds=1),
        "last microsecond of the window": last + timedelta(microseconds=999_999),
        "just after the window": last + timedelta(seconds=1),
    }
    events = [event("impression", campaign, org, when=when) for when in at.values()]
    reply = stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
    )
    assert reply.accepted == 4

    reader = analytics_server.components.reader
    metrics = analytics_server.call(reader.campaign(org, campaign, window))
    assert metrics is not None
    assert metrics.totals.impressions == 2  # the first and the third


def test_window_covers_recent_events_and_excludes_old_ones(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    now = datetime.now(UTC)
    events = [
        event("impression", campaign, org, when=now - timedelta(seconds=50)),
        event("impression", campaign, org, when=now - timedelta(seconds=70)),
    ]
    stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
    )
    reply = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=campaign, time_window=60),
        metadata=tenant.auth(Role.READ),
    )
    assert reply.metrics.impressions == 1
    assert reply.time_window == 60


def test_zero_denominators_read_zero(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=[event("impression", campaign, org)]),
        metadata=tenant.auth(Role.INGEST),
    )
    reply = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=campaign), metadata=tenant.auth(Role.READ)
    )
    m = reply.metrics
    assert m.impressions == 1
    for name in (
        "ctr",
        "conversion_rate",
        "cpc",
        "cpa",
        "engagement_rate",
        "completion_rate",
        "skip_rate",
        "average_view_time",
        "bounce_rate",
    ):
        assert getattr(m, name) == 0.0, name
    as_json = json_format.MessageToDict(m, always_print_fields_with_no_presence=True)
    assert all(isinstance(as_json[k], (int, float, str)) for k in ("ctr", "cpa", "skipRate"))


def test_campaign_without_events_has_no_metrics(stubs: Stubs, tenant: Tenant) -> None:
    reply = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[2]),
        metadata=tenant.auth(Role.READ),
    )
    assert reply.success and not reply.HasField("metrics")
    assert reply.message == "No recent analytics data found"
    assert reply.time_window == 3600


@pytest.mark.parametrize("seconds", [-1, 31 * 24 * 3600 + 1])
def test_out_of_range_windows_are_refused(stubs: Stubs, tenant: Tenant, seconds: int) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stubs.metrics.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[0], time_window=seconds),
            metadata=tenant.auth(Role.READ),
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "timeWindow" in raised.value.details()


def test_dashboard_sums_campaigns_and_trend_covers_the_window(stubs: Stubs, tenant: Tenant) -> None:
    org = tenant.organization_id
    now = datetime.now(UTC)
    events = []
    for i, campaign in enumerate(tenant.campaign_ids):
        events += [event("impression", campaign, org, when=now) for _ in range(10 * (i + 1))]
        events += [event("click", campaign, org, value=2.0, when=now) for _ in range(i + 1)]
    stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
    )
    reply = stubs.metrics.GetDashboard(
        pb.GetDashboardRequest(organization_id=org, time_window=600),
        metadata=tenant.auth(Role.READ),
    )
    s = reply.summary
    assert (s.total_impressions, s.total_clicks, s.active_campaigns) == (60, 6, 3)
    assert s.total_spent == 12.0 and s.overall_ctr == 10.0 and s.overall_cpc == 2.0
    assert [c.campaign_id for c in reply.top_campaigns] == tenant.campaign_ids[::-1]
    assert len(reply.trend_data) == 60
    assert sum(p.impressions for p in reply.trend_data) == 60
    assert sum(p.spent for p in reply.trend_data) == 12.0
    assert len(reply.campaign_metrics) == 3


def test_bounce_rate_follows_sessions_across_requests(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[1]

    def send(*events: pb.Event) -> None:
        stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
        )

    def bounce_rate() -> tuple[float, int]:
        m = stubs.metrics.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=campaign), metadata=tenant.auth(Role.READ)
        ).metrics
        return m.bounce_rate, m.sessions

    send(*(event("impression", campaign, org, session_id=s) for s in ("a", "b", "c", "d")))
    assert bounce_rate() == (100.0, 4)
    send(event("click", campaign, org, session_id="a"))
    assert bounce_rate() == (75.0, 4)
    send(event("view", campaign, org, session_id="a"), event("view", campaign, org, session_id="b"))
    assert bounce_rate() == (50.0, 4)
    send(event("impression", campaign, org))  # no session: not counted
    assert bounce_rate() == (50.0, 4)
    # a is complete: its later events change nothing (the writer skips it).
    send(event("view", campaign, org, session_id="a"), event("skip", campaign, org, session_id="a"))
    assert bounce_rate() == (50.0, 4)
    # e's two events in one request: a session that is complete at once.
    send(
        event("impression", campaign, org, session_id="e"),
        event("view", campaign, org, session_id="e"),
    )
    assert bounce_rate() == (40.0, 5)
