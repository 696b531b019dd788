"""The seed's simulation routes against a real server and PostgreSQL: each
action, the status reflecting it, and clear 4xx answers to bad options."""

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support import Tenant

from server.domain import Role

ROUTE = "/api/analytics/real-time/simulate"
# Events counted, by type (adPlaybacks: views).
COUNTERS = (
    "impressions",
    "clicks",
    "conversions",
    "adPlaybacks",
    "engagements",
    "completions",
    "skips",
)


def post(http: httpx.Client, tenant: Tenant, body: dict[str, Any]) -> httpx.Response:
    return http.post(ROUTE, json=body, headers=tenant.headers(Role.INGEST))


def events_counted(http: httpx.Client, tenant: Tenant) -> int:
    total = 0
    for campaign_id in tenant.campaign_ids:
        reply = http.get(
            f"/api/campaigns/{campaign_id}/analytics/real-time",
            headers=tenant.headers(Role.READ),
        )
        m = reply.json()["metrics"]  # null for a campaign without events
        if m is not None:
            total += sum(m[k] for k in COUNTERS)
    return total


def test_each_action_over_rest_with_the_status_reflecting_it(
    http: httpx.Client, tenant: Tenant
) -> None:
    org = tenant.organization_id
    idle = http.get(ROUTE, headers=tenant.headers(Role.READ))
    assert idle.status_code == 200, idle.text
    assert idle.json()["success"] is True
    assert idle.json()["status"]["isRunning"] is False

    # The seed's start example.
    options = {
        "eventsPerMinute": 1200,
        "duration": 30,
        "impressionRate": 0.7,
        "clickRate": 0.25,
        "conversionRate": 0.05,
    }
    started = post(
        http,
        tenant,
        {"action": "start", "campaignIds": tenant.campaign_ids[:2], "organizationId": org,
         "options": options},
    )  # fmt: skip
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["success"] is True and body["message"] == "Analytics simulation started"
    assert body["campaignIds"] == tenant.campaign_ids[:2]
    assert {k: body["options"][k] for k in options} == options
    assert body["options"]["count"] == 100 and body["options"]["seed"] is None
    simulation = body["simulation"]
    assert simulation["state"] == "running" and simulation["organizationId"] == org
    assert body["timestamp"].endswith("Z")

    deadline = time.monotonic() + 30
    while True:
        status = http.get(ROUTE, headers=tenant.headers(Role.INGEST)).json()["status"]
        (listed,) = status["simulations"]
        if listed["eventsSent"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["isRunning"] is True and listed["id"] == simulation["id"]
    assert listed["eventsSent"] > 0 and listed["state"] == "running"
    assert listed["startTime"] < listed["endTime"]

    stopped = post(http, tenant, {"action": "stop", "organizationId": org})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["message"] == "Analytics simulation stopped"
    assert [s["id"] for s in stopped.json()["stopped"]] == [simulation["id"]]
    after = http.get(ROUTE, headers=tenant.headers(Role.READ)).json()["status"]
    assert after["isRunning"] is False
    assert after["simulations"][0]["state"] == "stopped"
    sent_by_simulation = after["eventsSent"]
    assert events_counted(http, tenant) == sent_by_simulation

    # The seed's burst example.
    burst = post(
        http,
        tenant,
        {"action": "burst", "campaignIds": tenant.campaign_ids[:1], "organizationId": org,
         "options": {"count": 500}},
    )  # fmt: skip
    assert burst.status_code == 200, burst.text
    assert burst.json()["message"] == "Generated 500 events"
    assert burst.json()["count"] == 500 and burst.json()["accepted"] == 500
    assert burst.json()["campaignIds"] == tenant.campaign_ids[:1]

    # The seed's journey example.
    journey = post(
        http,
        tenant,
        {"action": "journey", "campaignIds": tenant.campaign_ids[:1], "organizationId": org},
    )
    assert journey.status_code == 200, journey.text
    assert journey.json()["message"] == "Simulated user journeys for 1 campaigns"
    assert len(journey.json()["sessionIds"]) == 1
    journey_events = journey.json()["count"]
    assert journey.json()["accepted"] == journey_events >= 1

    assert events_counted(http, tenant) == sent_by_simulation + 500 + journey_events


def test_action_defaults_to_start(http: httpx.Client, tenant: Tenant) -> None:
    org = tenant.organization_id
    started = post(http, tenant, {"campaignIds": tenant.campaign_ids, "organizationId": org})
    assert started.status_code == 200, started.text
    assert started.json()["message"] == "Analytics simulation started"
    # The seed's defaults: 60 events a minute for 60 minutes.
    assert started.json()["options"]["eventsPerMinute"] == 60
    assert started.json()["options"]["duration"] == 60
    simulation_id = started.json()["simulation"]["id"]
    stopped = post(
        http, tenant, {"action": "stop", "organizationId": org, "simulationId": simulation_id}
    )
    assert [s["id"] for s in stopped.json()["stopped"]] == [simulation_id]


def mine(**fields: Any) -> Callable[[Tenant, Tenant], dict[str, Any]]:
    """A body naming the caller's organization and campaigns, with ``fields`` over them."""
    return lambda t, _: {
        "campaignIds": t.campaign_ids,
        "organizationId": t.organization_id,
        **fields,
    }


@pytest.mark.parametrize(
    ("make_body", "status", "error"),
    [
        (lambda t, _: {"organizationId": t.organization_id}, 400, "campaignIds array is required"),
        (mine(action="burst", campaignIds=[]), 400, "campaignIds array is required"),
        (mine(action="journey", campaignIds="camp"), 400, "campaignIds must be an array"),
        (lambda t, _: {"campaignIds": t.campaign_ids}, 400, "organizationId is required"),
        (mine(action="dance"), 400, "Invalid action. Use: start, stop, burst, or journey"),
        (mine(action=3), 400, "Invalid action. Use: start, stop, burst, or journey"),
        (mine(options={"clickRate": -0.5}), 400, "options.clickRate must be between 0 and 1"),
        (mine(options={"conversionRate": 1.2}), 400, "options.conversionRate must be between"),
        (mine(options={"impressionRate": 0.9, "clickRate": 0.2}), 400, "must be at most 1"),
        (mine(options={"eventsPerMinute": -5}), 400, "options.eventsPerMinute must be above 0"),
        (mine(options={"duration": 0}), 400, "options.duration must be above 0"),
        (mine(action="burst", options={"count": 0}), 400, "options.count must be between"),
        (mine(action="burst", options={"count": 2.5}), 400, "must be a whole number"),
        (mine(action="burst", options={"count": 10**12}), 400, "options.count is out of range"),
        (mine(options={"clickRate": "high"}), 400, "options.clickRate must be a number"),
        (mine(options={"speed": 3}), 400, "options.speed is not an option"),
        (mine(options=[1]), 400, "options must be an object"),
        (mine(campaignIds=["no_such_campaign"]), 400, "'no_such_campaign' does not exist"),
        (
            lambda t, other: {
                "campaignIds": other.campaign_ids,
                "organizationId": t.organization_id,
            },
            403,
            "belongs to another organization",
        ),
        (
            lambda t, other: {
                "campaignIds": t.campaign_ids,
                "organizationId": other.organization_id,
            },
            403,
            "may not act on organization",
        ),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    http: httpx.Client,
    tenant: Tenant,
    other_tenant: Tenant,
    make_body: Callable[[Tenant, Tenant], dict[str, Any]],
    status: int,
    error: str,
) -> None:
    reply = post(http, tenant, make_body(tenant, other_tenant))
    assert reply.status_code == status, reply.text
    assert error in reply.json()["error"]
    assert http.get(ROUTE, headers=tenant.headers(Role.READ)).json()["status"]["simulations"] == []


def test_simulation_needs_a_key_with_the_ingest_role(http: httpx.Client, tenant: Tenant) -> None:
    body = {"campaignIds": tenant.campaign_ids, "organizationId": tenant.organization_id}
    assert http.post(ROUTE, json=body).status_code == 401
    assert http.get(ROUTE).status_code == 401
    read_key = http.post(ROUTE, json=body, headers=tenant.headers(Role.READ))
    assert read_key.status_code == 403
    assert "needs ingest" in read_key.json()["error"]
