"""The REST gateway application: the seed's routes, translated to gRPC calls."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from clients.pb import (
    CampaignServiceStub,
    IngestServiceStub,
    MetricsServiceStub,
    SimulationServiceStub,
    SubscriptionServiceStub,
)
from gateway.channel import open_channel
from gateway.deps import Stubs
from gateway.errors import install_error_handlers
from gateway.models import REQUEST_MODELS
from gateway.responses import JsonResponse
from gateway.routes import campaigns, dashboard, ingest, metrics, simulation, subscriptions
from gateway.settings import GatewaySettings
from gateway.telemetry import REQUEST_ID_HEADER, GatewayMetrics, RequestTelemetry
from gateway.telemetry import router as telemetry_router
from gateway.updates import EventStreamFastPath, UpdateStreams

__all__ = ["create_app", "create_asgi_app"]

DESCRIPTION = """\
Real-time campaign analytics over REST: ingest events, read live campaign
metrics, pipeline status and dashboards, follow live updates (polling or
Server-Sent Events) and run simulated traffic. Every call needs an API key of the
organization, sent as `authorization: Bearer <key>`. Errors carry `error`,
`code` (the gRPC status number), `message`, `details` and `timestamp`.
"""


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway app; it connects to ``settings.grpc_target`` when it starts."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One channel for all requests: gRPC multiplexes calls over it.
        channel = open_channel(settings)
        app.state.stubs = Stubs(
            ingest=IngestServiceStub(channel),
            metrics=MetricsServiceStub(channel),
            campaigns=CampaignServiceStub(channel),
            subscriptions=SubscriptionServiceStub(channel),
            simulations=SimulationServiceStub(channel),
        )
        try:
            yield
        finally:
            await app.state.update_streams.close()
            app.state.stubs = None
            await channel.close()

    # /docs and /redoc serve Swagger UI and ReDoc from the installed package,
    # not from a CDN, so they work offline.
    app = FastAPIOffline(
        title="Campaign analytics",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.state.settings = settings
    app.state.stubs = None
    app.state.update_streams = UpdateStreams(
        lambda: app.state.stubs.subscriptions if app.state.stubs is not None else None
    )
    app.state.metrics = GatewayMetrics()
    app.state.metrics.watch_streams(
        app.state.update_streams.connection_count, app.state.update_streams.stream_count
    )
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=[
            "authorization",
            "content-type",
            "last-event-id",
            "grpc-timeout",
            REQUEST_ID_HEADER,
        ],
        expose_headers=["retry-after", REQUEST_ID_HEADER],
    )
    # Outermost: every request, preflights included, gets its id and is counted.
    app.add_middleware(RequestTelemetry, metrics=app.state.metrics)
    app.include_router(telemetry_router)
    for module in (ingest, metrics, campaigns, subscriptions, simulation, dashboard):
        app.include_router(module.router)
    app.openapi = _with_request_models(app.openapi)  # type: ignore[method-assign]
    return app


def create_asgi_app(settings: GatewaySettings | None = None) -> EventStreamFastPath:
    """What the server runs: the app, with Server-Sent Events served in front
    of its middleware (``gateway.updates.EventStreamFastPath``)."""
    return EventStreamFastPath(create_app(settings))


def _with_request_models(openapi: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Adds the request body models, which the routes decode themselves, to the description."""

    def openapi_with_request_models() -> dict[str, Any]:
        schema = openapi()  # cached by FastAPI after the first call
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if REQUEST_MODELS[0].__name__ not in schemas:
            _, definitions = models_json_schema(
                [(model, "validation") for model in REQUEST_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            for name, definition in definitions.get("$defs", {}).items():
                schemas.setdefault(name, definition)
        return schema

    return openapi_with_request_models


def _version() -> str:
    try:
        return metadata.version("campaign-analytics")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0.0.0"
