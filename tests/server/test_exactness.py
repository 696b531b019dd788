"""Exactly-once metrics: thousands of events of every type across campaigns
and organizations, each sent twice (a retry) over different paths, give
exactly the reference metrics and CampaignAnalytics rows."""

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from reference import expected_by_campaign
from support import ServerThread, Stubs, Tenant, event, make_tenant

from clients import pb
from server.domain import Role
from server.store.database import libpq_url

TYPES = ["impression", "click", "conversion", "view", "engagement", "completion", "skip"]
WEIGHTS = [50, 12, 3, 15, 8, 6, 6]

Sender = Callable[[Tenant, Sequence[pb.Event]], tuple[int, int]]


def make_events(rng: random.Random, tenant: Tenant, count: int) -> list[pb.Event]:
    now = datetime.now(UTC)
    events = []
    for _ in range(count):
        kind = rng.choices(TYPES, WEIGHTS)[0]
        value = None
        if kind == "click":
            value = round(rng.uniform(0.5, 2.5), 2)
        elif kind == "conversion":
            value = round(rng.uniform(10, 60), 2)
        elif kind == "impression" and rng.random() < 0.5:
            value = round(rng.uniform(0.001, 0.01), 6)  # CPM-priced impression
        duration = round(rng.uniform(1, 40), 1) if kind == "view" and rng.random() < 0.8 else None
        events.append(
            event(
                kind,
                rng.choice(tenant.campaign_ids),
                tenant.organization_id,
                value=value,
                when=now - timedelta(seconds=rng.uniform(0, 600)),
                session_id=f"s{rng.randrange(400)}" if rng.random() < 0.9 else "",
                duration=duration,
            )
        )
    return events


def send_unary(stubs: Stubs) -> Sender:
    def send(tenant: Tenant, events: Sequence[pb.Event]) -> tuple[int, int]:
        accepted = duplicates = 0
        for start in range(0, len(events), 700):
            reply = stubs.ingest.IngestEvents(
                pb.IngestEventsRequest(events=events[start : start + 700]),
                metadata=tenant.auth(Role.INGEST),
            )
            assert not reply.rejected
            accepted += reply.accepted
            duplicates += reply.duplicates
        return accepted, duplicates

    return send


def send_stream(stubs: Stubs) -> Sender:
    def send(tenant: Tenant, events: Sequence[pb.Event]) -> tuple[int, int]:
        batches = (
            pb.StreamEventsRequest(events=events[start : start + 250])
            for start in range(0, len(events), 250)
        )
        reply = stubs.ingest.StreamEvents(batches, metadata=tenant.auth(Role.INGEST))
        assert not reply.rejected
        assert reply.count == reply.accepted
        assert reply.accepted + reply.duplicates == len(events)
        return reply.accepted, reply.duplicates

    return send


@pytest.fixture
def senders(stubs: Stubs, rest_sender: Sender) -> list[Sender]:
    return [send_unary(stubs), send_stream(stubs), rest_sender]


def read_metrics(stubs: Stubs, tenant: Tenant) -> dict[str, dict[str, float]]:
    reply = stubs.metrics.GetPipelineStatus(
        pb.GetPipelineStatusRequest(organization_id=tenant.organization_id, time_window=3600),
        metadata=tenant.auth(Role.READ),
    )
    return {
        m.campaign_id: {name: getattr(m, name) for name in _FIELDS}
        for m in reply.organization_metrics
    }


_FIELDS = [
    "impressions",
    "clicks",
    "conversions",
    "ad_playbacks",
    "engagements",
    "completions",
    "skips",
    "ctr",
    "conversion_rate",
    "total_spent",
    "conversion_value",
    "cpc",
    "cpa",
    "engagement_rate",
    "completion_rate",
    "skip_rate",
    "average_view_time",
    "bounce_rate",
    "sessions",
]


def daily_rows(database_url: str, organization_id: str) -> dict[str, dict[str, float]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT campaign_id, sum(impressions), sum(clicks), sum(conversions), sum(views),"
            " sum(spent), sum(conversion_value)"
            " FROM campaign_analytics WHERE organization_id = %s GROUP BY campaign_id",
            (organization_id,),
        ).fetchall()
    return {
        r[0]: {
            "impressions": r[1],
            "clicks": r[2],
            "conversions": r[3],
            "ad_playbacks": r[4],
            "total_spent": float(r[5]),
            "conversion_value": float(r[6]),
        }
        for r in rows
    }


def test_every_event_counted_once_across_paths_and_retries(
    analytics_server: ServerThread, stubs: Stubs, senders: list[Sender], database_url: str
) -> None:
    rng = random.Random(20261129)
    tenants = [make_tenant(analytics_server, campaigns=4) for _ in range(2)]
    sent = {t.organization_id: make_events(rng, t, 1800) for t in tenants}

    for tenant in tenants:
        events = sent[tenant.organization_id]
        parts = [events[i::3] for i in range(3)]
        # First delivery: each third over one path.
        for sender, part in zip(senders, parts, strict=True):
            assert sender(tenant, part) == (len(part), 0)
        # Retries: each third again over the other two paths.
        for shift in (1, 2):
            for i, part in enumerate(parts):
                sender = senders[(i + shift) % 3]
                assert sender(tenant, part) == (0, len(part))

    for tenant in tenants:
        expected = expected_by_campaign(sent[tenant.organization_id])
        assert read_metrics(stubs, tenant) == expected
        daily = daily_rows(database_url, tenant.organization_id)
        assert set(daily) == set(expected)
        for campaign_id, row in daily.items():
            for name, value in row.items():
                assert value == pytest.approx(expected[campaign_id][name], abs=1e-6), name


def test_single_events_are_counted_once_whichever_way_they_come_again(
    stubs: Stubs, tenant: Tenant
) -> None:
    """A single event keeping every rule takes a shorter way than a batch
    (``IngestPipeline.ingest_message``): sent alone, then again alone or in
    a batch, and the other way round, it is stored once, and each reply
    counts it as a batch's reply does."""
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    auth = tenant.auth(Role.INGEST)
    alone_first = event("click", campaign, org, value=1.25)
    batch_first = event("conversion", campaign, org, value=20.0)

    def alone(message: pb.Event) -> pb.IngestEventsResponse:
        reply: pb.IngestEventsResponse = stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(event=message), metadata=auth
        )
        assert reply.event_id == message.event_id and reply.success
        return reply

    def in_batch(message: pb.Event) -> pb.IngestEventsResponse:
        reply: pb.IngestEventsResponse = stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(events=[message]), metadata=auth
        )
        assert reply.success and not reply.rejected
        return reply

    first = alone(alone_first)
    assert (first.accepted, first.duplicates, first.message) == (
        1,
        0,
        "Event ingested successfully",
    )
    again = alone(alone_first)
    assert (again.accepted, again.duplicates, again.message) == (
        0,
        1,
        "Event already ingested (same eventId); nothing changed",
    )
    repeated = in_batch(alone_first)
    assert (repeated.accepted, repeated.duplicates) == (0, 1)
    assert (in_batch(batch_first).accepted, in_batch(batch_first).duplicates) == (1, 1)
    again = alone(batch_first)
    assert (again.accepted, again.duplicates) == (0, 1)

    reply = stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=campaign, time_window=3600),
        metadata=tenant.auth(Role.READ),
    )
    metrics = reply.metrics
    assert (metrics.clicks, metrics.conversions) == (1, 1)
    assert metrics.total_spent == pytest.approx(1.25)
    assert metrics.conversion_value == pytest.approx(20.0)
