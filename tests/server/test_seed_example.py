"""The seed's example, end to end over gRPC: 1,500 impressions, 45 clicks at
1.50 and 3 conversions read ctr 3.0, conversionRate 6.67, totalSpent 67.5."""

from support import Stubs, Tenant, event

from clients import pb
from server.domain import Role


def test_seed_example_metrics(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    events = [event("impression", campaign, org) for _ in range(1500)]
    events += [event("click", campaign, org, value=1.50) for _ in range(45)]
    events += [event("conversion", campaign, org, value=25.0) for _ in range(3)]
    for start in range(0, len(events), 500):
        reply = stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(events=events[start : start + 500]),
            metadata=tenant.auth(Role.INGEST),
        )
        assert reply.success and not reply.rejected

    reply = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=campaign, time_window=3600),
        metadata=tenant.auth(Role.READ),
    )
    m = reply.metrics
    assert (m.impressions, m.clicks, m.conversions) == (1500, 45, 3)
    assert m.ctr == 3.0
    assert m.conversion_rate == 6.67
    assert m.total_spent == 67.5
    assert m.cpc == 1.5
    assert m.cpa == 22.5
    assert m.conversion_value == 75.0
    assert m.ad_playbacks == 0 and m.completion_rate == 0 and m.skip_rate == 0
