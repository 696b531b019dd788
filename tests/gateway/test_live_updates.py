"""Subscriptions over REST against the real server: subscribe, poll, remove,
and Server-Sent Events that carry an ingested event's new numbers."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from support import ServerThread, Tenant, event
from tests_live import ingest

from server.domain import Role


def sse_frames(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each SSE frame."""
    frame_id: str | None = None
    for line in lines:
        if line.startswith("id: "):
            frame_id = line[4:]
        elif line.startswith("data: "):
            yield frame_id, json.loads(line[6:])
            frame_id = None


def subscribe(http: httpx.Client, tenant: Tenant, **body: Any) -> dict[str, Any]:
    reply = http.post(
        "/api/analytics/real-time/subscribe",
        json={"organizationId": tenant.organization_id, **body},
        headers=tenant.headers(Role.READ),
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_subscribe_poll_and_remove(
    http: httpx.Client, analytics_server: ServerThread, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    created = subscribe(http, tenant, campaignIds=[campaign])
    subscription = created["subscription"]
    assert created["success"] is True and subscription["active"] is True
    assert subscription["organizationId"] == org and subscription["campaignIds"] == [campaign]
    sid = subscription["id"]

    ingest(analytics_server.target, tenant, event("click", campaign, org, value=1.5))
    polled: dict[str, Any] = {"count": 0}
    for _ in range(200):  # the update is published within a fraction of a second
        polled = http.get(
            "/api/analytics/real-time/updates",
            params={"subscriptionId": sid},
            headers=tenant.headers(Role.READ),
        ).json()
        if polled["count"]:
            break
        time.sleep(0.02)
    assert polled["success"] is True and polled["subscriptionId"] == sid
    assert polled["count"] == 1
    update = polled["updates"][0]
    assert update["type"] == "metrics" and update["campaignId"] == campaign
    assert update["data"]["metrics"]["clicks"] == 1 and update["data"]["metrics"]["cpc"] == 1.5
    assert update["data"]["summary"]["totalClicks"] == 1

    removed = http.delete(
        "/api/analytics/real-time/subscribe",
        params={"subscriptionId": sid},
        headers=tenant.headers(Role.READ),
    )
    assert removed.status_code == 200
    assert removed.json()["message"] == "Subscription removed"
    gone = http.get(
        "/api/analytics/real-time/updates",
        params={"subscriptionId": sid},
        headers=tenant.headers(Role.READ),
    )
    assert gone.status_code == 404 and gone.json()["error"] == "Subscription not found"


def test_bad_subscription_requests(
    http: httpx.Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    missing = http.post(
        "/api/analytics/real-time/subscribe", json={}, headers=tenant.headers(Role.READ)
    )
    assert missing.status_code == 400 and missing.json()["error"] == "organizationId is required"
    foreign = http.post(
        "/api/analytics/real-time/subscribe",
        json={
            "organizationId": tenant.organization_id,
            "campaignIds": [other_tenant.campaign_ids[0]],
        },
        headers=tenant.headers(Role.READ),
    )
    assert foreign.status_code == 403
    no_id = http.get("/api/analytics/real-time/updates", headers=tenant.headers(Role.READ))
    assert no_id.status_code == 400 and no_id.json()["error"] == "subscriptionId is required"
    unknown = http.get(
        "/api/analytics/real-time/updates",
        params={"subscriptionId": "nope", "format": "sse"},
        headers=tenant.headers(Role.READ),
    )
    assert unknown.status_code == 404


def test_server_sent_events_carry_updates_and_resume(
    gateway: Any, analytics_server: ServerThread, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        sid = subscribe(client, tenant)["subscription"]["id"]
        params = {"subscriptionId": sid, "format": "sse"}
        with client.stream(
            "GET",
            "/api/analytics/real-time/updates",
            params=params,
            headers=tenant.headers(Role.READ),
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            frames = sse_frames(stream.iter_lines())
            _, connected = next(frames)
            assert connected["type"] == "connected" and connected["subscriptionId"] == sid
            ingest(
                analytics_server.target,
                tenant,
                *(event("impression", campaign, org) for _ in range(4)),
            )
            frame_id, update = next(f for f in frames if f[1]["type"] == "update")
            assert frame_id is not None and int(frame_id) > 0
            assert update["data"]["campaignId"] == campaign
            assert update["data"]["data"]["metrics"]["impressions"] == 4

        # A reconnecting EventSource sends Last-Event-ID: it starts again
        # from the current numbers of every subscribed campaign.
        with client.stream(
            "GET",
            "/api/analytics/real-time/updates",
            params=params,
            headers={**tenant.headers(Role.READ), "Last-Event-ID": frame_id},
        ) as stream:
            frames = sse_frames(stream.iter_lines())
            assert next(frames)[1]["type"] == "connected"
            _, snapshot = next(frames)
            assert snapshot["type"] == "update"
            assert snapshot["data"]["data"]["metrics"]["impressions"] == 4
