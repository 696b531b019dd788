"""The gateway gives every request an id, returns it and forwards it to the
server as gRPC metadata; /metrics is served and stays out of the API
description."""

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import Stack


def test_the_request_id_sent_is_forwarded_to_the_server_and_returned(
    client: httpx.Client, stack: "Stack"
) -> None:
    reply = client.get("/api/analytics/real-time", headers={"x-request-id": "req-42.a_b"})
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "req-42.a_b"
    metadata = stack.analytics.last("GetPipelineStatus").metadata
    assert metadata["x-request-id"] == "req-42.a_b"
    assert metadata["authorization"] == "Bearer key_1"


def test_a_request_without_a_usable_id_gets_a_new_one_the_server_sees_too(
    client: httpx.Client, stack: "Stack"
) -> None:
    for sent in (None, "", "x" * 129, "caf\u00e9", "two\nlines"):
        headers = {} if sent is None else {"x-request-id": sent}
        try:
            reply = client.get("/api/analytics/real-time", headers=headers)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # a header httpx itself refuses to send
        made = reply.headers["x-request-id"]
        assert made and made != sent and len(made) == 32
        assert stack.analytics.last("GetPipelineStatus").metadata["x-request-id"] == made


def test_errors_of_the_gateway_itself_carry_the_request_id(client: httpx.Client) -> None:
    for method, path in (("GET", "/no/such/route"), ("POST", "/api/analytics/real-time")):
        reply = client.request(method, path, headers={"x-request-id": "mine"}, content=b"{")
        assert reply.status_code in (400, 404)
        assert reply.headers["x-request-id"] == "mine"


def test_metrics_are_served_and_not_described(client: httpx.Client) -> None:
    client.get("/api/analytics/real-time")
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert (
        'campaign_analytics_gateway_requests_total{method="GET",'
        'route="/api/analytics/real-time",status="200"}'
    ) in reply.text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_browsers_may_send_and_read_the_request_id(client: httpx.Client) -> None:
    preflight = client.options(
        "/api/analytics/real-time",
        headers={
            "origin": "https://dashboard.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    reply = client.get("/api/analytics/real-time", headers={"origin": "https://dashboard.example"})
    assert "x-request-id" in reply.headers["access-control-expose-headers"].lower()
