"""A real gateway, served by uvicorn, in front of a small real gRPC analytics server.

The server answers from what it is asked: a campaign id naming a gRPC status
(``NOT_FOUND``, ``RESOURCE_EXHAUSTED:2.5``, ...) makes it abort with that status
(and a ``retry-after`` of 2.5 s); ``SLOW`` never answers; other campaigns get
metrics, except ``camp_empty``, which has none. It records every request and
its metadata, so tests can see what the gateway sent.
"""

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
import uvloop
from google.rpc import error_details_pb2, status_pb2

from clients.pb import (
    Campaign,
    CampaignServiceServicer,
    CreateCampaignResponse,
    DashboardSummary,
    GetCampaignMetricsResponse,
    GetDashboardResponse,
    GetPipelineStatusResponse,
    IngestCampaignEventResponse,
    IngestEventsResponse,
    IngestServiceServicer,
    ListCampaignsResponse,
    MetricsServiceServicer,
    PipelineStatus,
    RealTimeMetrics,
    RejectedEvent,
    TopCampaign,
    TrendPoint,
    add_CampaignServiceServicer_to_server,
    add_IngestServiceServicer_to_server,
    add_MetricsServiceServicer_to_server,
)
from gateway.app import create_app
from gateway.settings import GatewaySettings

MAX_BODY_BYTES = 4096
# 2025-07-15T12:30:00Z
NOON = 1_752_582_600


@dataclass
class Received:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeAnalytics(IngestServiceServicer, MetricsServiceServicer, CampaignServiceServicer):
    received: list[Received] = field(default_factory=list)

    def last(self, method: str) -> Received:
        return next(r for r in reversed(self.received) if r.method == method)

    async def _record(self, method: str, request: Any, context: Any) -> None:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        self.received.append(Received(method, request, metadata))

    async def _maybe_abort(self, name: str, context: Any) -> None:
        """Aborts when ``name`` names a status: ``CODE``, ``CODE:<retry-after>`` or ``DETAILS``."""
        if name == "SLOW":
            await asyncio.Event().wait()
        if name == "DETAILS":
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="timeWindow", description="too long"
            )
            detail = error_details_pb2.BadRequest(field_violations=[violation])
            status = status_pb2.Status(code=3, message="window too long")
            status.details.add().Pack(detail)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "window too long",
                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
            )
        code_name, _, retry_after = name.partition(":")
        code = getattr(grpc.StatusCode, code_name, None)
        if code is None or code is grpc.StatusCode.OK:
            return
        trailing = (("retry-after", retry_after),) if retry_after else ()
        await context.abort(code, f"{code_name} from the server", trailing_metadata=trailing)

    # IngestService

    async def IngestEvents(self, request: Any, context: Any) -> IngestEventsResponse:
        await self._record("IngestEvents", request, context)
        events = [request.event] if request.HasField("event") else list(request.events)
        for event in events:
            await self._maybe_abort(event.campaign_id, context)
        rejected = [
            RejectedEvent(index=u.index, field=u.field, reason=u.reason, code="undecodable")
            for u in request.undecodable_events
        ]
        response = IngestEventsResponse(
            success=bool(events),
            count=len(events),
            accepted=len(events),
            rejected=rejected,
            event_id="0190a8e0-0000-7000-8000-000000000001" if request.HasField("event") else "",
        )
        response.timestamp.FromSeconds(NOON)
        return response

    async def IngestCampaignEvent(self, request: Any, context: Any) -> IngestCampaignEventResponse:
        await self._record("IngestCampaignEvent", request, context)
        await self._maybe_abort(request.campaign_id, context)
        response = IngestCampaignEventResponse(
            success=True,
            campaign_id=request.campaign_id,
            event_type=request.event.event_type,
            event_id="0190a8e0-0000-7000-8000-000000000002",
        )
        response.timestamp.FromSeconds(NOON)
        return response

    # MetricsService

    async def GetCampaignMetrics(self, request: Any, context: Any) -> GetCampaignMetricsResponse:
        await self._record("GetCampaignMetrics", request, context)
        await self._maybe_abort(request.campaign_id, context)
        response = GetCampaignMetricsResponse(success=True, time_window=request.time_window)
        response.timestamp.FromSeconds(NOON)
        if request.campaign_id != "camp_empty":
            response.metrics.CopyFrom(metrics(request.campaign_id, request.time_window))
        return response

    async def GetPipelineStatus(self, request: Any, context: Any) -> GetPipelineStatusResponse:
        await self._record("GetPipelineStatus", request, context)
        response = GetPipelineStatusResponse(
            status=PipelineStatus(buffer_size=3, flush_threshold=100, flush_interval=5000),
            time_window=request.time_window,
        )
        response.timestamp.FromSeconds(NOON)
        if request.campaign_id:
            response.metrics.CopyFrom(metrics(request.campaign_id, request.time_window))
        return response

    async def GetDashboard(self, request: Any, context: Any) -> GetDashboardResponse:
        await self._record("GetDashboard", request, context)
        await self._maybe_abort(request.organization_id, context)
        trend = TrendPoint(impressions=10, clicks=1, spent=1.5)
        trend.timestamp.FromSeconds(NOON - 60)
        response = GetDashboardResponse(
            success=True,
            organization_id=request.organization_id,
            time_window=request.time_window,
            summary=DashboardSummary(total_impressions=1500, active_campaigns=1, overall_ctr=3.0),
            top_campaigns=[TopCampaign(campaign_id="camp_123", impressions=1500)],
            trend_data=[trend],
            campaign_metrics=[metrics("camp_123", request.time_window)],
        )
        response.timestamp.FromSeconds(NOON)
        return response

    # CampaignService

    async def CreateCampaign(self, request: Any, context: Any) -> CreateCampaignResponse:
        await self._record("CreateCampaign", request, context)
        await self._maybe_abort(request.campaign.campaign_id, context)
        campaign = Campaign()
        campaign.CopyFrom(request.campaign)
        campaign.organization_id = campaign.organization_id or "org_456"
        campaign.create_time.FromSeconds(NOON)
        return CreateCampaignResponse(campaign=campaign)

    async def ListCampaigns(self, request: Any, context: Any) -> ListCampaignsResponse:
        await self._record("ListCampaigns", request, context)
        return ListCampaignsResponse(
            campaigns=[Campaign(campaign_id="camp_123", organization_id="org_456", name="A")]
        )


def metrics(campaign_id: str, time_window: int) -> RealTimeMetrics:
    """The seed's example: 1,500 impressions, 45 clicks at 1.50, 3 conversions."""
    result = RealTimeMetrics(
        campaign_id=campaign_id,
        impressions=1500,
        clicks=45,
        conversions=3,
        ctr=3.0,
        conversion_rate=3 / 45 * 100,
        total_spent=67.5,
        cpc=1.5,
        cpa=22.5,
        organization_id="org_456",
        time_window=time_window,
    )
    result.timestamp.FromSeconds(NOON)
    result.window_start.FromSeconds(NOON - time_window)
    return result


class _Server(uvicorn.Server):
    """uvicorn, telling when it listens."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass
class Stack:
    url: str
    analytics: FakeAnalytics
    max_body_bytes: int
    # A gateway whose server cannot be reached.
    unreachable_url: str


def _listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    return listener


def _url(listener: socket.socket) -> str:
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    analytics = FakeAnalytics()
    listener, unreachable_listener = _listener(), _listener()
    # Bound but never listening: connecting to it is refused.
    refusing = _listener()
    ready = [threading.Event(), threading.Event()]
    failure: list[BaseException] = []
    servers: list[_Server] = []

    def gateway(grpc_target: str, ready: threading.Event) -> _Server:
        settings = GatewaySettings(grpc_target=grpc_target, max_body_bytes=MAX_BODY_BYTES)
        config = uvicorn.Config(
            create_app(settings),
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=600,  # as in tests/support.py: no idle-close races
        )
        server = _Server(config, ready)
        servers.append(server)
        return server

    async def run() -> None:
        grpc_server = grpc.aio.server()
        add_IngestServiceServicer_to_server(analytics, grpc_server)
        add_MetricsServiceServicer_to_server(analytics, grpc_server)
        add_CampaignServiceServicer_to_server(analytics, grpc_server)
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        refused = f"127.0.0.1:{refusing.getsockname()[1]}"
        try:
            await asyncio.gather(
                gateway(f"127.0.0.1:{grpc_port}", ready[0]).serve(sockets=[listener]),
                gateway(refused, ready[1]).serve(sockets=[unreachable_listener]),
            )
        finally:
            await grpc_server.stop(None)

    def thread_main() -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run())
        except BaseException as error:  # reported to the tests below
            failure.append(error)
        finally:
            for event in ready:
                event.set()

    thread = threading.Thread(target=thread_main, name="gateway-under-test")
    thread.start()
    try:
        for event in ready:
            assert event.wait(30), "the gateway did not start"
        assert not failure, failure
        yield Stack(_url(listener), analytics, MAX_BODY_BYTES, _url(unreachable_listener))
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(30)
        for sock in (listener, unreachable_listener, refusing):
            sock.close()
    assert not failure, failure


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"authorization": "Bearer key_1"}) as client:
        yield client


@pytest.fixture
def unreachable_client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.unreachable_url, headers={"authorization": "Bearer key_1"}
    ) as client:
        yield client
