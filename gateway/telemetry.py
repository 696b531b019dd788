"""What the gateway tells about itself: Prometheus metrics at ``/metrics``,
and an id for every request.

A request's id is the caller's ``x-request-id`` when it is a sensible one
(printable ASCII, at most 128 characters), else a new one. The response
carries it back in ``x-request-id``, the server receives it as gRPC metadata
(``x-request-id``), and every log record about the request names it.

The README's Observability section lists the metrics.
"""

import time
import uuid
from collections.abc import Callable, Iterable

from fastapi import APIRouter, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.observability.logs import request_id

__all__ = [
    "REQUEST_ID_HEADER",
    "GatewayMetrics",
    "RequestTelemetry",
    "request_id_from",
    "router",
]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
MAX_REQUEST_ID_LENGTH = 128
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """The instruments of one gateway app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.requests = Counter(
            "campaign_analytics_gateway_requests",
            "Requests answered, by route template and HTTP status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "campaign_analytics_gateway_request_duration_seconds",
            "Time to answer a request (an SSE request: until its stream starts).",
            ["route", "method"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.sse_connections = Gauge(
            "campaign_analytics_gateway_sse_connections",
            "Server-Sent Events connections open.",
            registry=registry,
        )
        self.update_streams = Gauge(
            "campaign_analytics_gateway_update_streams",
            "Upstream update streams from the server (one per subscription followed).",
            registry=registry,
        )

    def watch_streams(self, connections: Callable[[], int], streams: Callable[[], int]) -> None:
        self.sse_connections.set_function(connections)
        self.update_streams.set_function(streams)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``x-request-id`` when it is usable as it is, else a new id."""
    for name, value in headers:
        if name.lower() == _REQUEST_ID_HEADER_BYTES:
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isascii() and text.isprintable():
                return text
            break
    return uuid.uuid4().hex


class RequestTelemetry:
    """ASGI middleware: gives each request its id (``logs.request_id``, the
    response's ``x-request-id``) and counts it by route and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope.get("request_id") or request_id_from(scope["headers"])
        # Each request runs in a task of its own, so the id lasts for it
        # alone; it stays set for what logs after this middleware (the
        # server-error handler outside it).
        request_id.set(rid)
        header = (_REQUEST_ID_HEADER_BYTES, rid.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
                method = scope["method"]
                self.metrics.request_duration.labels(_route(scope), method).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.requests.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    # FastAPI puts the matched route in the scope: its template keeps the
    # label's values few (no ids in them).
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The gateway's metrics, in Prometheus's text format."""
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
