"""The REST routes against a real gRPC server: what they send, and the JSON they answer."""

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool

from clients.pb import SERVICE_NAMES, EventType

if TYPE_CHECKING:
    from conftest import Stack

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
METRICS_KEYS = {
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
}


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert TIMESTAMP.fullmatch(body["timestamp"])
    return body


# ---------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------


def test_ingest_one_event(stack: "Stack", client: httpx.Client) -> None:
    body = ok(
        client.post(
            "/api/analytics/real-time",
            json={
                "event": {
                    "eventType": "click",
                    "campaignId": "camp_123",
                    "organizationId": "org_456",
                    "metadata": {"sessionId": "session_abc", "deviceType": "mobile"},
                    "value": 1.50,
                }
            },
        )
    )

    assert body["success"] is True
    assert body["message"] == "Event ingested successfully"
    assert body["eventId"] == "0190a8e0-0000-7000-8000-000000000001"
    assert (body["accepted"], body["duplicates"], body["count"], body["rejected"]) == (1, 0, 1, [])
    sent = stack.analytics.last("IngestEvents")
    assert sent.metadata["authorization"] == "Bearer key_1"
    assert sent.request.event.event_type == EventType.EVENT_TYPE_CLICK
    assert sent.request.event.value == 1.5
    assert sent.request.event.metadata.device_type == "mobile"
    assert not sent.request.events and not sent.request.undecodable_events


def test_ingest_a_batch_with_undecodable_events(stack: "Stack", client: httpx.Client) -> None:
    response = client.post(
        "/api/analytics/real-time",
        content=b'{"events": [{"eventType": "impression", "campaignId": "camp_123"},'
        b' {"eventType": "click", "campaignId": "camp_123", "value": NaN},'
        b' "not an event",'
        b' {"eventType": "conversion", "campaignId": "camp_123", "value": "25.00"}]}',
    )
    body = ok(response)

    assert body["success"] is True
    assert body["count"] == 2
    assert body["message"] == "2 events ingested successfully"
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "value"), (2, "")]
    sent = stack.analytics.last("IngestEvents").request
    assert [event.event_type for event in sent.events] == [
        EventType.EVENT_TYPE_IMPRESSION,
        EventType.EVENT_TYPE_CONVERSION,
    ]
    assert sent.events[1].value == 25.0
    assert [(u.index, u.field, u.payload) for u in sent.undecodable_events] == [
        (1, "value", '{"eventType":"click","campaignId":"camp_123","value":NaN}'),
        (2, "", '"not an event"'),
    ]


def test_ingest_one_undecodable_event_is_kept_and_refused(
    stack: "Stack", client: httpx.Client
) -> None:
    # As the server answers a lone event it rejects: 400, the event kept as a dead letter.
    response = client.post("/api/analytics/real-time", json={"event": {"eventType": "tap"}})

    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("event rejected (eventType): unknown event type 'tap'")
    assert body["details"][0]["fieldViolations"][0]["field"] == "eventType"
    sent = stack.analytics.last("IngestEvents").request
    assert not sent.HasField("event") and not sent.events
    assert [(u.index, u.field, u.code) for u in sent.undecodable_events] == [
        (0, "eventType", "invalid_event_type")
    ]
    assert sent.undecodable_events[0].payload == '{"eventType":"tap"}'


def test_ingest_event_and_events_together_is_400(client: httpx.Client) -> None:
    response = client.post("/api/analytics/real-time", json={"event": {}, "events": []})

    assert response.status_code == 400


def test_no_authorization_is_forwarded_as_none(stack: "Stack") -> None:
    with httpx.Client(base_url=stack.url) as anonymous:
        ok(anonymous.post("/api/analytics/real-time", json={"event": {"eventType": "view"}}))

    assert "authorization" not in stack.analytics.last("IngestEvents").metadata


@pytest.mark.parametrize(
    "payload",
    [
        {"eventType": "click", "value": 1.5},
        {"eventType": "click", "campaignId": "camp_123", "value": 1.5},
        {"event": {"eventType": "click", "value": 1.5}},
        {"events": [{"eventType": "click", "value": 1.5}]},
    ],
    ids=["bare", "bare-same-campaign", "event", "events-of-one"],
)
def test_ingest_campaign_event(stack: "Stack", client: httpx.Client, payload: object) -> None:
    body = ok(client.post("/api/campaigns/camp_123/analytics/real-time", json=payload))

    assert body["success"] is True
    assert body["message"] == "Analytics event ingested successfully"
    assert body["campaignId"] == "camp_123"
    assert body["eventType"] == "click"
    assert body["duplicate"] is False
    sent = stack.analytics.last("IngestCampaignEvent")
    assert sent.request.campaign_id == "camp_123"
    assert sent.request.event.campaign_id == "camp_123"
    assert sent.request.event.organization_id == ""  # the server takes it from the key
    assert sent.metadata["authorization"] == "Bearer key_1"


@pytest.mark.parametrize(
    ("payload", "message_part"),
    [
        ({"events": [{"eventType": "click"}, {"eventType": "view"}]}, "takes one event"),
        ({"events": []}, "takes one event"),
        ({"eventType": "click", "campaignId": "camp_999"}, "does not match"),
        ({"event": {}, "events": []}, "not both"),
    ],
)
def test_ingest_campaign_event_refuses(
    client: httpx.Client, payload: object, message_part: str
) -> None:
    response = client.post("/api/campaigns/camp_123/analytics/real-time", json=payload)

    assert response.status_code == 400
    assert message_part in response.json()["error"]


def test_ingest_campaign_event_undecodable_is_400_and_kept(
    stack: "Stack", client: httpx.Client
) -> None:
    response = client.post(
        "/api/campaigns/camp_123/analytics/real-time",
        json={"eventType": "click", "timestamp": "yesterday"},
    )

    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("event rejected (timestamp): ")
    assert body["details"][0]["fieldViolations"][0]["field"] == "timestamp"
    kept = stack.analytics.last("IngestEvents").request.undecodable_events
    assert [(u.index, u.field) for u in kept] == [(0, "timestamp")]


def test_ingest_campaign_event_for_an_unknown_campaign_is_404(client: httpx.Client) -> None:
    response = client.post(
        "/api/campaigns/NOT_FOUND/analytics/real-time", json={"eventType": "click"}
    )

    assert response.status_code == 404


# ---------------------------------------------------------------------------
# Read
# ---------------------------------------------------------------------------


def test_campaign_metrics(stack: "Stack", client: httpx.Client) -> None:
    body = ok(client.get("/api/campaigns/camp_123/analytics/real-time"))

    assert set(body) == {"success", "metrics", "timeWindow", "timestamp"}
    assert body["success"] is True
    assert body["timeWindow"] == 3600
    metrics = body["metrics"]
    assert set(metrics) >= METRICS_KEYS
    assert (metrics["impressions"], metrics["clicks"], metrics["conversions"]) == (1500, 45, 3)
    assert (metrics["ctr"], metrics["totalSpent"], metrics["cpc"], metrics["cpa"]) == (
        3.0,
        67.5,
        1.5,
        22.5,
    )
    assert metrics["timestamp"] == "2025-07-15T12:30:00.000Z"
    assert metrics["windowStart"] == "2025-07-15T11:30:00.000Z"
    assert stack.analytics.last("GetCampaignMetrics").request.time_window == 3600


def test_campaign_metrics_without_data(stack: "Stack", client: httpx.Client) -> None:
    body = ok(client.get("/api/campaigns/camp_empty/analytics/real-time?timeWindow=60"))

    assert body["metrics"] is None
    assert body["message"] == "No recent analytics data found"
    assert body["timeWindow"] == 60
    assert stack.analytics.last("GetCampaignMetrics").request.time_window == 60


def test_pipeline_status(stack: "Stack", client: httpx.Client) -> None:
    body = ok(client.get("/api/analytics/real-time"))

    assert set(body) == {"status", "metrics", "organizationMetrics", "timeWindow", "timestamp"}
    assert body["status"]["bufferSize"] == 3
    assert body["status"]["isProcessing"] is False
    assert body["status"]["lastFlush"] is None
    assert body["metrics"] is None
    assert body["organizationMetrics"] is None

    asked = ok(
        client.get(
            "/api/analytics/real-time",
            params={"campaignId": "camp_123", "organizationId": "org_456", "timeWindow": 600},
        )
    )
    assert asked["metrics"]["campaignId"] == "camp_123"
    assert asked["organizationMetrics"] == []
    sent = stack.analytics.last("GetPipelineStatus").request
    assert (sent.campaign_id, sent.organization_id, sent.time_window) == (
        "camp_123",
        "org_456",
        600,
    )


def test_dashboard(client: httpx.Client) -> None:
    body = ok(
        client.get("/api/analytics/real-time/dashboard", params={"organizationId": "org_456"})
    )

    assert set(body) == {
        "success",
        "organizationId",
        "timeWindow",
        "summary",
        "topCampaigns",
        "trendData",
        "campaignMetrics",
        "timestamp",
    }
    assert body["organizationId"] == "org_456"
    assert body["summary"]["totalImpressions"] == 1500
    assert body["summary"]["activeCampaigns"] == 1
    assert body["summary"]["totalClicks"] == 0
    assert body["topCampaigns"] == [
        {
            "campaignId": "camp_123",
            "impressions": 1500,
            "clicks": 0,
            "conversions": 0,
            "ctr": 0.0,
            "spent": 0.0,
        }
    ]
    assert body["trendData"][0]["timestamp"] == "2025-07-15T12:29:00.000Z"
    assert set(body["campaignMetrics"][0]) >= METRICS_KEYS


# ---------------------------------------------------------------------------
# Campaigns
# ---------------------------------------------------------------------------


def test_create_and_list_campaigns(stack: "Stack", client: httpx.Client) -> None:
    created = ok(client.post("/api/campaigns", json={"campaignId": "camp_9", "name": "Launch"}))

    assert created["campaign"] == {
        "campaignId": "camp_9",
        "organizationId": "org_456",
        "name": "Launch",
        "createTime": "2025-07-15T12:30:00.000Z",
    }
    assert stack.analytics.last("CreateCampaign").metadata["authorization"] == "Bearer key_1"

    listed = ok(client.get("/api/campaigns"))
    assert [c["campaignId"] for c in listed["campaigns"]] == ["camp_123"]

    bad = client.post("/api/campaigns", json={"campaignId": 5})
    assert bad.status_code == 400
    assert bad.json()["details"][0]["fieldViolations"][0]["field"] == "campaignId"


def test_create_campaign_taken_is_409(client: httpx.Client) -> None:
    response = client.post("/api/campaigns", json={"campaignId": "ALREADY_EXISTS"})

    assert response.status_code == 409


# ---------------------------------------------------------------------------
# API description
# ---------------------------------------------------------------------------


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    spec = ok_openapi(client)
    paths = spec["paths"]
    schemas = spec["components"]["schemas"]

    # Exactly the routes the protos' google.api.http annotations name.
    annotated = set()
    for name in SERVICE_NAMES:
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            main = method.GetOptions().Extensions[annotations_pb2.http]
            for rule in (main, *main.additional_bindings):
                verb = rule.WhichOneof("pattern")
                if verb:
                    annotated.add((getattr(rule, verb), verb))
    assert ("/api/campaigns/{campaign_id}/analytics/real-time", "post") in annotated
    assert {(path, method) for path, item in paths.items() for method in item} == annotated
    for item in paths.values():
        for operation in item.values():
            assert "422" not in operation["responses"]
            assert (
                "ErrorResponse"
                in operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
            )
            body = operation.get("requestBody")
            if body is not None:
                schema = body["content"]["application/json"]["schema"]
                for ref in schema.get("anyOf", [schema]):
                    assert ref["$ref"].removeprefix("#/components/schemas/") in schemas

    status = paths["/api/analytics/real-time"]["get"]
    assert {p["name"] for p in status["parameters"]} == {
        "campaignId",
        "organizationId",
        "timeWindow",
    }
    dashboard = paths["/api/analytics/real-time/dashboard"]["get"]
    organization = next(p for p in dashboard["parameters"] if p["name"] == "organizationId")
    assert organization["required"] is True
    assert "429" in paths["/api/analytics/real-time"]["post"]["responses"]
    assert "eventType" in schemas["Event"]["properties"]
    assert "click" in schemas["Event"]["properties"]["eventType"]["enum"]
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


def ok_openapi(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec
