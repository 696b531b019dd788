"""Dependencies of the routes, as ``Annotated`` aliases.

- ``IngestStub``, ``MetricsStub``, ``CampaignStub``, ``SubscriptionStub``,
  ``SimulationStub``: the gRPC stubs on the one
  channel the app opened at start-up.
- ``Call``: the caller's ``authorization`` header and the request's id
  (``x-request-id``), forwarded as gRPC metadata, and the call's deadline.
- ``RawBody``: the request body, at most ``max_body_bytes`` (413 beyond).
"""

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPBearer
from grpc import StatusCode

from clients.pb import (
    CampaignServiceStub,
    IngestServiceStub,
    MetricsServiceStub,
    SimulationServiceStub,
    SubscriptionServiceStub,
)
from gateway.errors import GatewayError
from gateway.settings import GatewaySettings
from gateway.telemetry import REQUEST_ID_HEADER
from server.observability.logs import current_request_id

__all__ = [
    "Call",
    "CallOptions",
    "CampaignIdPath",
    "CampaignStub",
    "IngestStub",
    "MetricsStub",
    "RawBody",
    "SimulationStub",
    "Stubs",
    "SubscriptionStub",
    "TimeWindow",
]

# The longest authorization header forwarded (keys are about 60 characters).
MAX_AUTHORIZATION_LENGTH = 1024

# The longest window the server computes: 31 days.
MAX_TIME_WINDOW = 2_678_400


@dataclass(frozen=True, slots=True)
class Stubs:
    """The server's services, on one channel."""

    ingest: IngestServiceStub
    metrics: MetricsServiceStub
    campaigns: CampaignServiceStub
    subscriptions: SubscriptionServiceStub
    simulations: SimulationServiceStub


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What every gRPC call of a request carries: the caller's key and a deadline."""

    metadata: tuple[tuple[str, str], ...]
    timeout: float


# Every dependency is a coroutine: FastAPI would run plain functions in a thread pool.


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _stubs(request: Request) -> Stubs:
    stubs: Stubs | None = getattr(request.app.state, "stubs", None)
    if stubs is None:
        # Only when the app is served without its lifespan.
        raise GatewayError(StatusCode.UNAVAILABLE, "The gateway is not connected to the server")
    return stubs


async def _ingest_stub(stubs: Annotated[Stubs, Depends(_stubs)]) -> IngestServiceStub:
    return stubs.ingest


async def _metrics_stub(stubs: Annotated[Stubs, Depends(_stubs)]) -> MetricsServiceStub:
    return stubs.metrics


async def _campaign_stub(stubs: Annotated[Stubs, Depends(_stubs)]) -> CampaignServiceStub:
    return stubs.campaigns


async def _subscription_stub(
    stubs: Annotated[Stubs, Depends(_stubs)],
) -> SubscriptionServiceStub:
    return stubs.subscriptions


async def _simulation_stub(stubs: Annotated[Stubs, Depends(_stubs)]) -> SimulationServiceStub:
    return stubs.simulations


# Documents the key in the API description; the header is forwarded as it came.
_bearer = HTTPBearer(
    auto_error=False,
    description="An API key of the organization: `authorization: Bearer <key>`.",
)

# gRPC's wire format for a deadline: up to 8 digits and a unit.
_GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


async def _call_options(
    request: Request,
    settings: Annotated[GatewaySettings, Depends(_settings)],
    _key: Annotated[object, Depends(_bearer)],
) -> CallOptions:
    metadata: tuple[tuple[str, str], ...] = ()
    authorization = request.headers.get("authorization")
    if authorization is not None:
        # gRPC metadata values are printable ASCII.
        if not (authorization.isascii() and authorization.isprintable()):
            raise GatewayError(
                StatusCode.UNAUTHENTICATED,
                "The authorization header is not valid",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            # Forwarded, it would break gRPC's metadata limit (16 KiB, and
            # randomly past 8 KiB) and come back as RESOURCE_EXHAUSTED: "retry".
            raise GatewayError(
                StatusCode.UNAUTHENTICATED,
                f"The authorization header is {len(authorization)} characters long; "
                f"a key is at most {MAX_AUTHORIZATION_LENGTH}",
                headers={"WWW-Authenticate": "Bearer"},
            )
        metadata = (("authorization", authorization),)
    rid = current_request_id()
    if rid:
        metadata = (*metadata, (REQUEST_ID_HEADER, rid))
    timeout = settings.request_timeout
    # A caller may ask for a shorter deadline, as with grpc-gateway.
    asked = request.headers.get("grpc-timeout")
    if asked is not None:
        match = _GRPC_TIMEOUT.fullmatch(asked.strip())
        if match is None:
            raise GatewayError(
                StatusCode.INVALID_ARGUMENT,
                "The grpc-timeout header is not valid (e.g. 500m for 500 ms, 5S for 5 s)",
            )
        timeout = min(timeout, int(match[1]) * _GRPC_TIMEOUT_UNITS[match[2]])
    return CallOptions(metadata=metadata, timeout=timeout)


async def _raw_body(
    request: Request, settings: Annotated[GatewaySettings, Depends(_settings)]
) -> bytes:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # sent without a length, or more than it said
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"Request body is larger than {limit} bytes",
        http_status=413,
    )


IngestStub = Annotated[IngestServiceStub, Depends(_ingest_stub)]
MetricsStub = Annotated[MetricsServiceStub, Depends(_metrics_stub)]
CampaignStub = Annotated[CampaignServiceStub, Depends(_campaign_stub)]
SubscriptionStub = Annotated[SubscriptionServiceStub, Depends(_subscription_stub)]
SimulationStub = Annotated[SimulationServiceStub, Depends(_simulation_stub)]
Call = Annotated[CallOptions, Depends(_call_options)]
RawBody = Annotated[bytes, Depends(_raw_body)]
CampaignIdPath = Annotated[str, Path(description="The campaign's id.", examples=["camp_123"])]
TimeWindow = Annotated[
    int,
    Query(
        alias="timeWindow",
        ge=1,
        le=MAX_TIME_WINDOW,
        description="Length of the window in seconds, ending now.",
    ),
]
