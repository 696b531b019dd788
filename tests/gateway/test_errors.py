"""Errors: gRPC statuses as HTTP, and the gateway's own 400s, all in one body shape."""

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from gateway.errors import HTTP_STATUS

if TYPE_CHECKING:
    from conftest import Stack

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

EXPECTED_HTTP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def assert_error_body(response: httpx.Response, code: grpc.StatusCode) -> dict[str, object]:
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert set(body) == {"error", "code", "message", "details", "timestamp"}
    assert body["code"] == code.value[0]
    assert isinstance(body["error"], str) and body["error"]
    assert body["message"] == body["error"]
    assert isinstance(body["details"], list)
    assert TIMESTAMP.fullmatch(body["timestamp"])
    return body


def test_every_status_has_an_http_status() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items() if code.name != "OK"} == (
        EXPECTED_HTTP
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_HTTP))
def test_server_status_becomes_http_status(client: httpx.Client, name: str) -> None:
    response = client.get(f"/api/campaigns/{name}/analytics/real-time")

    assert response.status_code == EXPECTED_HTTP[name]
    body = assert_error_body(response, grpc.StatusCode[name])
    assert body["error"] == f"{name} from the server"
    assert body["details"] == []
    if name in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        assert response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in response.headers
    if name == "UNAUTHENTICATED":
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("name", "retry_after"),
    [("RESOURCE_EXHAUSTED:2.5", "3"), ("RESOURCE_EXHAUSTED:7", "7"), ("UNAVAILABLE:0.2", "1")],
)
def test_retry_after_comes_from_the_server(
    client: httpx.Client, name: str, retry_after: str
) -> None:
    response = client.post(
        "/api/analytics/real-time", json={"event": {"eventType": "click", "campaignId": name}}
    )

    assert response.status_code in (429, 503)
    assert response.headers["retry-after"] == retry_after
    assert_error_body(response, grpc.StatusCode[name.partition(":")[0]])


def test_status_details_are_passed_on(client: httpx.Client) -> None:
    response = client.get("/api/campaigns/DETAILS/analytics/real-time")

    assert response.status_code == 400
    body = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "timeWindow", "description": "too long"}],
        }
    ]


def test_deadline_exceeded_is_504(client: httpx.Client) -> None:
    response = client.get(
        "/api/campaigns/SLOW/analytics/real-time", headers={"grpc-timeout": "200m"}
    )

    assert response.status_code == 504
    assert_error_body(response, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_bad_grpc_timeout_header_is_400(client: httpx.Client) -> None:
    response = client.get(
        "/api/campaigns/camp_123/analytics/real-time", headers={"grpc-timeout": "soon"}
    )

    assert response.status_code == 400
    assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": {"eventType": "click"',
        b"{'event': {}}",
        b"",
        b"   ",
        b'{"event": {"campaignId": "caf\xe9"',
        b"\xef\xbb\xbf{}",
    ],
    ids=["truncated", "single-quotes", "empty", "blank", "latin-1-truncated", "bom"],
)
def test_malformed_json_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post(
        "/api/analytics/real-time", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    body_json = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
    assert "body" in str(body_json["error"]).lower()


def test_bytes_that_are_not_utf8_reject_only_their_event(
    stack: "Stack", client: httpx.Client
) -> None:
    # Latin-1 "café" in a batch: that event is rejected (and kept), the other goes on.
    response = client.post(
        "/api/analytics/real-time",
        content=b'{"events": [{"eventType": "click", "campaignId": "caf\xe9"},'
        b' {"eventType": "view", "campaignId": "camp_123"}]}',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200, response.text
    rejected = response.json()["rejected"]
    assert [(r["index"], r["field"]) for r in rejected] == [(0, "campaignId")]
    assert "not valid UTF-8" in rejected[0]["reason"]
    sent = stack.analytics.last("IngestEvents").request
    assert [e.campaign_id for e in sent.events] == ["camp_123"]
    assert [(u.index, u.field) for u in sent.undecodable_events] == [(0, "campaignId")]
    assert "\\udce9" in sent.undecodable_events[0].payload  # kept, escaped

    # Alone, the event is refused with its reason, once kept.
    lone = client.post(
        "/api/analytics/real-time",
        content=b'{"event": {"eventType": "click", "campaignId": "caf\xe9"}}',
        headers={"content-type": "application/json"},
    )
    assert lone.status_code == 400
    body = assert_error_body(lone, grpc.StatusCode.INVALID_ARGUMENT)
    assert str(body["error"]).startswith("event rejected (campaignId): is not valid UTF-8")
    kept = stack.analytics.last("IngestEvents").request.undecodable_events
    assert [(u.index, u.field) for u in kept] == [(0, "campaignId")]


def test_deeply_nested_json_is_400_not_500(stack: "Stack", client: httpx.Client) -> None:
    body = b'{"events": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert len(body) < stack.max_body_bytes
    response = client.post(
        "/api/analytics/real-time", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "payload",
    [
        b"{}",
        b'{"evnt": {}}',
        b'{"event": null}',
        b'{"events": {"eventType": "click"}}',
        b'{"events": "x"}',
        b"[]",
        b'"event"',
        b"null",
    ],
    ids=[
        "empty",
        "misspelt",
        "null-event",
        "events-object",
        "events-string",
        "array",
        "string",
        "null",
    ],
)
def test_missing_event_or_events_is_400(client: httpx.Client, payload: bytes) -> None:
    response = client.post("/api/analytics/real-time", content=payload)

    assert response.status_code == 400
    body = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
    assert body["error"] == 'Either "event" or "events" array is required'


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    events = [{"eventType": "click", "campaignId": f"camp_{i}"} for i in range(200)]
    response = client.post("/api/analytics/real-time", json={"events": events})

    assert response.status_code == 413
    assert_error_body(response, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_chunked_body_over_the_limit_is_413(stack: "Stack", client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted while reading
        yield b'{"events": ['
        for _ in range(stack.max_body_bytes // 64 + 1):
            yield b'{"eventType": "click", "campaignId": "camp_123"},' + b" " * 16
        yield b"{}]}"

    response = client.post("/api/analytics/real-time", content=chunks())

    assert response.status_code == 413
    assert_error_body(response, grpc.StatusCode.RESOURCE_EXHAUSTED)


@pytest.mark.parametrize("value", ["abc", "1.5", "0", "-5", "2678401", ""])
def test_bad_time_window_is_400_not_422(client: httpx.Client, value: str) -> None:
    response = client.get(
        "/api/campaigns/camp_123/analytics/real-time", params={"timeWindow": value}
    )

    assert response.status_code == 400
    body = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
    assert str(body["error"]).startswith("timeWindow")
    assert body["details"][0]["fieldViolations"][0]["field"] == "timeWindow"


def test_dashboard_without_organization_is_400(client: httpx.Client) -> None:
    for params in ({}, {"organizationId": ""}):
        response = client.get("/api/analytics/real-time/dashboard", params=params)

        assert response.status_code == 400
        body = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
        assert body["error"] == "organizationId is required"


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert_error_body(missing, grpc.StatusCode.NOT_FOUND)

    wrong = client.delete("/api/analytics/real-time")
    assert wrong.status_code == 405
    assert wrong.headers["allow"]
    assert_error_body(wrong, grpc.StatusCode.UNIMPLEMENTED)


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/analytics/real-time", "GET, POST"),
        ("/api/analytics/real-time/subscribe", "DELETE, POST"),
        ("/api/campaigns/camp_123/analytics/real-time", "GET, POST"),
        ("/api/campaigns", "GET, POST"),
    ],
)
def test_wrong_method_names_every_method_of_the_path(
    client: httpx.Client, path: str, allow: str
) -> None:
    # Each route takes one method; Allow must list those of all the path's routes.
    for method in ("PUT", "OPTIONS"):
        response = client.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        (
            "/api/analytics/real-time/subscribe",
            {"organizationId": "o", "campaignIds": {}},
            "campaignIds",
        ),
        (
            "/api/analytics/real-time/subscribe",
            {"organizationId": "o", "campaignIds": ""},
            "campaignIds",
        ),
        (
            "/api/analytics/real-time/subscribe",
            {"organizationId": "o", "timeWindow": ""},
            "timeWindow",
        ),
        (
            "/api/analytics/real-time/simulate",
            {"action": "stop", "organizationId": "o", "simulationId": 0},
            "simulationId",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_not_taken_for_none(
    client: httpx.Client, route: str, payload: object, field: str
) -> None:
    # {} for campaignIds would follow every campaign; 0 for simulationId would stop them all.
    response = client.post(route, json=payload)

    assert response.status_code == 400
    body = assert_error_body(response, grpc.StatusCode.INVALID_ARGUMENT)
    assert body["details"][0]["fieldViolations"][0]["field"] == field


def test_authorization_that_cannot_be_metadata_is_401(client: httpx.Client) -> None:
    response = client.get(
        "/api/campaigns/camp_123/analytics/real-time",
        headers={"authorization": b"Bearer k\xe9y"},
    )

    assert response.status_code == 401
    assert_error_body(response, grpc.StatusCode.UNAUTHENTICATED)


def test_authorization_too_long_to_forward_is_401(stack: "Stack", client: httpx.Client) -> None:
    # Forwarded, it would break gRPC's metadata limit and come back as 429 "retry".
    calls = len(stack.analytics.received)
    response = client.get(
        "/api/campaigns/camp_123/analytics/real-time",
        headers={"authorization": "Bearer " + "k" * 20_000},
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = assert_error_body(response, grpc.StatusCode.UNAUTHENTICATED)
    assert "a key is at most 1024" in str(body["error"])
    assert len(stack.analytics.received) == calls  # never sent on


def test_server_down_is_503(unreachable_client: httpx.Client) -> None:
    response = unreachable_client.get("/api/campaigns/camp_123/analytics/real-time")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert_error_body(response, grpc.StatusCode.UNAVAILABLE)
