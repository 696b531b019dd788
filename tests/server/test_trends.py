"""Trends against a real server and PostgreSQL: the points of every
resolution (second, minute, hour rollups) add up to the range's totals and
to the events in it; empty points are zeros; limits get clear 400s."""

import math
import random
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from support import ServerThread, Stubs, Tenant, event
from tests_live import ingest

from clients import pb
from server.domain import Role
from server.metrics.retention import prune_rollups
from server.store.database import libpq_url

COUNTERS = ("impressions", "clicks", "conversions", "ad_playbacks", "engagements", "completions")
TYPE_COUNTER = {
    "impression": "impressions",
    "click": "clicks",
    "conversion": "conversions",
    "view": "ad_playbacks",
    "engagement": "engagements",
    "completion": "completions",
    "skip": "skips",
}


def trends(
    stubs: Stubs, tenant: Tenant, time_window: int, step: int, campaign_id: str = ""
) -> pb.GetTrendsResponse:
    return stubs.metrics.GetTrends(
        pb.GetTrendsRequest(campaign_id=campaign_id, time_window=time_window, step=step),
        metadata=tenant.auth(Role.READ),
    )


def test_points_add_up_to_the_totals_and_the_events_at_every_resolution(
    analytics_server: ServerThread, stubs: Stubs, tenant: Tenant
) -> None:
    rng = random.Random(3)
    now = datetime.now(UTC)
    # (when, campaign, type, value) spread over the last 25 days, denser lately.
    sent = []
    for _ in range(600):
        age = timedelta(seconds=rng.choice((rng.uniform(2, 3_500), rng.uniform(2, 25 * 86_400))))
        kind = rng.choice(list(TYPE_COUNTER))
        value = round(rng.uniform(0.5, 2.5), 2) if kind in ("click", "conversion") else None
        sent.append((now - age, rng.choice(tenant.campaign_ids[:2]), kind, value))
    target = analytics_server.target
    for start in range(0, len(sent), 200):
        ingest(
            target,
            tenant,
            *(
                event(kind, campaign, tenant.organization_id, value=value, when=when)
                for when, campaign, kind, value in sent[start : start + 200]
            ),
        )

    cases = [(90, 1), (3600, 10), (86_400, 60), (86_400, 300), (30 * 86_400, 3600)]
    cases.append((30 * 86_400, 86_400))
    for time_window, step in cases:
        for campaign_id in ("", tenant.campaign_ids[0]):
            reply = trends(stubs, tenant, time_window, step, campaign_id)
            assert reply.step == step and reply.campaign_id == campaign_id
            assert len(reply.points) == math.ceil(time_window / step)
            assert reply.time_window == len(reply.points) * step
            start = reply.totals.window_start.ToDatetime(UTC)
            end = start + timedelta(seconds=reply.time_window)
            assert start.timestamp() % step == 0  # aligned
            assert start <= now < end
            expected = dict.fromkeys(TYPE_COUNTER.values(), 0)
            spent = 0.0
            for when, campaign, kind, value in sent:
                if start <= when < end and (not campaign_id or campaign == campaign_id):
                    expected[TYPE_COUNTER[kind]] += 1
                    if kind == "click" and value is not None:
                        spent += value
            for name in (*COUNTERS, "skips"):
                summed = sum(getattr(p, name) for p in reply.points)
                assert summed == getattr(reply.totals, name) == expected[name], (
                    time_window,
                    step,
                    campaign_id,
                    name,
                )
            assert reply.totals.total_spent == pytest.approx(spent)
            t = reply.totals
            assert t.ctr == (round(t.clicks / t.impressions * 100, 2) if t.impressions else 0)
            for index, point in enumerate(reply.points):
                assert point.window_start.ToDatetime(UTC) == start + timedelta(seconds=index * step)
                assert point.time_window == step

    # The longest window of the live metrics sees the same events as the trend.
    window = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[0], time_window=31 * 86_400),
        metadata=tenant.auth(Role.READ),
    ).metrics
    month = trends(stubs, tenant, 31 * 86_400, 3600, tenant.campaign_ids[0]).totals
    for name in COUNTERS:
        assert getattr(month, name) == getattr(window, name)


def test_empty_points_are_zeros(
    analytics_server: ServerThread, stubs: Stubs, tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0) - timedelta(minutes=20)
    events = [
        event("impression", tenant.campaign_ids[0], tenant.organization_id, when=minute),
        event("click", tenant.campaign_ids[0], tenant.organization_id, when=minute, value=1),
    ]
    ingest(analytics_server.target, tenant, *events)
    reply = trends(stubs, tenant, 3600, 60)
    busy = [p for p in reply.points if p.impressions or p.clicks]
    assert [p.window_start.ToDatetime(UTC) for p in busy] == [minute]
    assert (busy[0].impressions, busy[0].clicks, busy[0].ctr) == (1, 1, 100.0)
    for point in reply.points:
        if point is not busy[0]:
            assert point.impressions == point.clicks == 0
            assert point.ctr == point.total_spent == point.cpc == 0


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("timeWindow=3600&step=7200", "step must be between 1 second and the timeWindow"),
        ("timeWindow=86400&step=1", "at most 1,500"),
        ("timeWindow=3600&step=90", "whole minutes"),
        ("timeWindow=86400&step=5400", "whole hours"),
        ("timeWindow=34560001", "timeWindow"),
        ("timeWindow=3600&step=-5", "step"),
        ("timeWindow=0", "timeWindow"),
        ("timeWindow=ten", "timeWindow"),
    ],
)
def test_step_and_range_limits_get_400(
    http: httpx.Client, tenant: Tenant, query: str, error: str
) -> None:
    for path in (
        f"/api/campaigns/{tenant.campaign_ids[0]}/analytics/trends?{query}",
        f"/api/analytics/real-time/trends?organizationId={tenant.organization_id}&{query}",
    ):
        reply = http.get(path, headers=tenant.headers(Role.READ))
        assert reply.status_code == 400, reply.text
        assert error in reply.text


def test_trends_over_rest(http: httpx.Client, tenant: Tenant, other_tenant: Tenant) -> None:
    headers = tenant.headers(Role.READ)
    campaign = http.get(
        f"/api/campaigns/{tenant.campaign_ids[1]}/analytics/trends", headers=headers
    )
    assert campaign.status_code == 200, campaign.text
    body = campaign.json()
    # Default: the last hour, in a round step giving at most 300 points.
    assert (body["timeWindow"], body["step"], len(body["points"])) == (3600, 15, 240)
    assert body["campaignId"] == tenant.campaign_ids[1]
    assert body["organizationId"] == tenant.organization_id
    assert body["totals"]["impressions"] == 0 and body["points"][0]["timeWindow"] == 15
    assert body["points"][0]["windowStart"].endswith("Z")

    organization = http.get(
        "/api/analytics/real-time/trends",
        params={"organizationId": tenant.organization_id, "timeWindow": 7 * 86_400},
        headers=headers,
    )
    assert organization.status_code == 200, organization.text
    assert organization.json()["step"] == 3600 and organization.json()["campaignId"] == ""

    missing = http.get("/api/campaigns/nope/analytics/trends", headers=headers)
    assert missing.status_code == 404
    theirs = http.get(
        f"/api/campaigns/{other_tenant.campaign_ids[0]}/analytics/trends", headers=headers
    )
    assert theirs.status_code == 403
    other_org = http.get(
        "/api/analytics/real-time/trends",
        params={"organizationId": other_tenant.organization_id},
        headers=headers,
    )
    assert other_org.status_code == 403
    no_org = http.get("/api/analytics/real-time/trends", headers=headers)
    assert no_org.status_code == 400
    assert http.get("/api/analytics/real-time/trends").status_code in (400, 401)
    ingest_key = http.get(
        f"/api/campaigns/{tenant.campaign_ids[1]}/analytics/trends",
        headers=tenant.headers(Role.INGEST),
    )
    assert ingest_key.status_code == 403


def test_fine_rollups_are_pruned_once_no_query_reads_them(
    analytics_server: ServerThread, tenant: Tenant
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ages = (10, 40, 70)  # days
    url = libpq_url(analytics_server.database_url)
    with psycopg.connect(url) as conn:
        for table in ("campaign_rollups", "campaign_rollups_minute", "campaign_rollups_hour"):
            for age in ages:
                conn.execute(
                    f"INSERT INTO {table} (organization_id, campaign_id, bucket, impressions)"
                    " VALUES (%s, %s, %s, 1)",
                    (tenant.organization_id, tenant.campaign_ids[0], now - timedelta(days=age)),
                )
    engine = analytics_server.components.engine
    assert analytics_server.call(prune_rollups(engine, now)) >= 3

    def kept(table: str) -> list[int]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                f"SELECT bucket FROM {table} WHERE organization_id = %s ORDER BY bucket DESC",
                (tenant.organization_id,),
            ).fetchall()
        return [(now - bucket).days for (bucket,) in rows]

    # Windows reach 31 days; minute-step trends 61.5 days; hourly ones 400.
    assert kept("campaign_rollups") == [10]
    assert kept("campaign_rollups_minute") == [10, 40]
    assert kept("campaign_rollups_hour") == [10, 40, 70]
