"""The seed's REST contract against a real server and PostgreSQL: the JSON
shapes its clients read, and clear 4xx answers to bad requests."""

from datetime import datetime

import httpx
import pytest
from support import Tenant

from server.domain import Role

METRIC_KEYS = {
    "campaignId",
    "timestamp",
    "impressions",
    "clicks",
    "conversions",
    "ctr",
    "conversionRate",
    "totalSpent",
    "cpc",
    "cpa",
    "engagementRate",
    "averageViewTime",
    "bounceRate",
    "adPlaybacks",
    "completionRate",
    "skipRate",
    "conversionValue",
}


def _is_utc_iso(text: str) -> bool:
    return text.endswith("Z") and datetime.fromisoformat(text.replace("Z", "+00:00")) is not None


def test_seed_example_over_rest(http: httpx.Client, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    ingest = tenant.headers(Role.INGEST)
    single = http.post(
        "/api/analytics/real-time",
        headers=ingest,
        json={
            "event": {
                "eventType": "click",
                "campaignId": campaign,
                "organizationId": org,
                "metadata": {
                    "sessionId": "session_abc",
                    "deviceType": "mobile",
                    "location": "New York, NY",
                    "showId": "show_1",
                    "custom": [1, 2],
                },
                "value": 1.50,
            }
        },
    )
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["success"] is True and body["message"] == "Event ingested successfully"
    assert _is_utc_iso(body["timestamp"]) and body["eventId"]

    events = [{"eventType": "impression", "campaignId": campaign, "organizationId": org}] * 1500
    events += [
        {"eventType": "click", "campaignId": campaign, "organizationId": org, "value": 1.50}
    ] * 44
    events += [{"eventType": "conversion", "campaignId": campaign, "organizationId": org}] * 3
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        batch = http.post("/api/analytics/real-time", headers=ingest, json={"events": chunk})
        assert batch.status_code == 200, batch.text
        data = batch.json()
        assert data["success"] is True and data["count"] == len(chunk)
        assert data["message"] == f"{len(chunk)} events ingested successfully"

    reply = http.get(
        f"/api/campaigns/{campaign}/analytics/real-time",
        params={"timeWindow": 3600},
        headers=tenant.headers(Role.READ),
    )
    assert reply.status_code == 200
    data = reply.json()
    assert data["success"] is True and data["timeWindow"] == 3600
    metrics = data["metrics"]
    assert set(metrics) >= METRIC_KEYS
    assert metrics["impressions"] == 1500 and isinstance(metrics["impressions"], int)
    assert (metrics["clicks"], metrics["conversions"]) == (45, 3)
    assert (metrics["ctr"], metrics["conversionRate"], metrics["totalSpent"]) == (3.0, 6.67, 67.5)
    assert (metrics["cpc"], metrics["cpa"]) == (1.5, 22.5)

    dashboard = http.get(
        "/api/analytics/real-time/dashboard",
        params={"organizationId": org, "timeWindow": 3600},
        headers=tenant.headers(Role.READ),
    ).json()
    assert dashboard["success"] is True and dashboard["organizationId"] == org
    summary = dashboard["summary"]
    assert {
        "totalImpressions",
        "totalClicks",
        "totalConversions",
        "totalSpent",
        "activeCampaigns",
        "overallCtr",
        "overallConversionRate",
        "overallCpc",
        "overallCpa",
        "averageViewTime",
    } <= set(summary)
    assert (summary["totalImpressions"], summary["activeCampaigns"]) == (1500, 1)
    assert dashboard["topCampaigns"][0] == {
        "campaignId": campaign,
        "impressions": 1500,
        "clicks": 45,
        "conversions": 3,
        "ctr": 3.0,
        "spent": 67.5,
    }
    assert set(dashboard["trendData"][0]) >= {
        "timestamp",
        "impressions",
        "clicks",
        "conversions",
        "spent",
    }
    assert len(dashboard["campaignMetrics"]) == 1

    status = http.get(
        "/api/analytics/real-time",
        params={"campaignId": campaign, "organizationId": org},
        headers=tenant.headers(Role.READ),
    ).json()
    assert {"bufferSize", "isProcessing", "lastFlush"} <= set(status["status"])
    assert _is_utc_iso(status["status"]["lastFlush"])
    assert status["metrics"]["impressions"] == 1500
    assert [m["campaignId"] for m in status["organizationMetrics"]] == [campaign]
    assert status["timeWindow"] == 3600 and _is_utc_iso(status["timestamp"])
    plain = http.get("/api/analytics/real-time", headers=tenant.headers(Role.READ)).json()
    assert plain["metrics"] is None and plain["organizationMetrics"] is None


def test_campaign_route_takes_a_bare_event(http: httpx.Client, tenant: Tenant) -> None:
    campaign = tenant.campaign_ids[1]
    reply = http.post(
        f"/api/campaigns/{campaign}/analytics/real-time",
        headers=tenant.headers(Role.INGEST),
        json={"eventType": "view", "metadata": {"duration": 12.5}},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True
    assert body["message"] == "Analytics event ingested successfully"
    assert (body["campaignId"], body["eventType"]) == (campaign, "view")
    metrics = http.get(
        f"/api/campaigns/{campaign}/analytics/real-time", headers=tenant.headers(Role.READ)
    ).json()["metrics"]
    assert metrics["adPlaybacks"] == 1 and metrics["averageViewTime"] == 12.5


def test_unknown_campaign_and_empty_window(http: httpx.Client, tenant: Tenant) -> None:
    missing = http.post(
        "/api/campaigns/camp_nowhere/analytics/real-time",
        headers=tenant.headers(Role.INGEST),
        json={"eventType": "click"},
    )
    assert missing.status_code == 404 and missing.json()["error"] == "Campaign not found"
    empty = http.get(
        f"/api/campaigns/{tenant.campaign_ids[2]}/analytics/real-time",
        headers=tenant.headers(Role.READ),
    ).json()
    assert empty == {
        "success": True,
        "metrics": None,
        "message": "No recent analytics data found",
        "timeWindow": 3600,
        "timestamp": empty["timestamp"],
    }


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"event": {"eventType": "click",', "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "event"),
        (b"{}", '"event" or "events"'),
    ],
)
def test_malformed_bodies_get_400(
    http: httpx.Client, tenant: Tenant, content: bytes, needle: str
) -> None:
    reply = http.post(
        "/api/analytics/real-time",
        headers={**tenant.headers(Role.INGEST), "content-type": "application/json"},
        content=content,
    )
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert needle in body["error"] and "timestamp" in body


def test_oversized_batch_gets_400(http: httpx.Client, tenant: Tenant) -> None:
    event = {
        "eventType": "impression",
        "campaignId": tenant.campaign_ids[0],
        "organizationId": tenant.organization_id,
    }
    reply = http.post(
        "/api/analytics/real-time",
        headers=tenant.headers(Role.INGEST),
        json={"events": [event] * 5001},
    )
    assert reply.status_code == 400
    assert "5000" in reply.json()["error"]


def test_undecodable_event_is_rejected_alone(http: httpx.Client, tenant: Tenant) -> None:
    ok = {
        "eventType": "impression",
        "campaignId": tenant.campaign_ids[0],
        "organizationId": tenant.organization_id,
    }
    reply = http.post(
        "/api/analytics/real-time",
        headers=tenant.headers(Role.INGEST),
        json={"events": [ok, {**ok, "value": "lots"}, {**ok, "eventType": "hover"}, ok]},
    )
    assert reply.status_code == 200
    body = reply.json()
    assert (body["accepted"], body["count"]) == (2, 2)
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "value"), (2, "eventType")]


def test_dashboard_needs_an_organization(http: httpx.Client, tenant: Tenant) -> None:
    reply = http.get("/api/analytics/real-time/dashboard", headers=tenant.headers(Role.READ))
    assert reply.status_code == 400
    assert reply.json()["error"] == "organizationId is required"


def test_bad_time_window_gets_400(http: httpx.Client, tenant: Tenant) -> None:
    for value in ("abc", "-5"):
        reply = http.get(
            f"/api/campaigns/{tenant.campaign_ids[0]}/analytics/real-time",
            params={"timeWindow": value},
            headers=tenant.headers(Role.READ),
        )
        assert reply.status_code == 400, value
        assert "timeWindow" in reply.json()["error"]


def test_openapi_describes_every_route(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/api/analytics/real-time"]) >= {"get", "post"}
    assert set(paths["/api/campaigns/{campaign_id}/analytics/real-time"]) >= {"get", "post"}
    assert "get" in paths["/api/analytics/real-time/dashboard"]
    assert set(paths["/api/campaigns"]) >= {"get", "post"}
