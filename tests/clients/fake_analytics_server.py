"""A tiny in-process gRPC server for the client's tests (``server`` fixture).

Its IngestService fails the first calls as scripted and then accepts every
event; its MetricsService and CampaignService answer with fixed replies. Every
service records what it received, so tests assert on what went over the wire.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from clients import pb

API_KEY = "test-key"

# grpc rounds a deadline up when it sends it (to about a tenth of a second),
# so the server may see a little more time than the client gave.
DEADLINE_ROUNDING = 0.2

# grpc reports a call without a deadline as having about 292 years left.
NO_DEADLINE = 1e9


@dataclasses.dataclass(frozen=True)
class Failure:
    """How one scripted call fails."""

    code: grpc.StatusCode
    retry_after: float | None = None


@dataclasses.dataclass
class Received:
    """One call as the server saw it."""

    method: str
    request: Any
    metadata: dict[str, str]
    # Seconds left of the call's deadline when it arrived (None: no deadline).
    time_remaining: float | None
    arrived_at: float

    @property
    def event_ids(self) -> list[str]:
        if self.method == "StreamEvents":
            return [event.event_id for batch in self.request for event in batch.events]
        if self.method == "IngestCampaignEvent":
            return [self.request.event.event_id]
        if self.request.HasField("event"):
            return [self.request.event.event_id]
        return [event.event_id for event in self.request.events]


class Recorder:
    """Records calls and plays the failure script, shared by the services."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.received: list[Received] = []
        # When set, calls are held (after being recorded) until released or
        # cancelled; `holding` is set once a call is held.
        self.hold = False
        self.holding = threading.Event()
        self._lock = threading.Lock()

    def fail(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    def attempts(self, method: str | None = None) -> int:
        return sum(1 for call in self.received if method in (None, call.method))

    def record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        with self._lock:
            self.received.append(
                Received(
                    method=method,
                    request=request,
                    metadata={key: value for key, value in context.invocation_metadata()},
                    time_remaining=remaining if remaining < NO_DEADLINE else None,
                    arrived_at=time.monotonic(),
                )
            )
            failure = self.failures.pop(0) if self.failures else None
        if self.hold:
            released = threading.Event()
            context.add_callback(released.set)
            self.holding.set()
            released.wait(timeout=60)
        if failure is not None:
            if failure.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(failure.retry_after)),))
            context.abort(failure.code, f"scripted {failure.code.name}")


class IngestServicer(pb.IngestServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.ServicerContext
    ) -> pb.IngestEventsResponse:
        self.recorder.record("IngestEvents", request, context)
        count = 1 if request.HasField("event") else len(request.events)
        return pb.IngestEventsResponse(
            success=True,
            count=count,
            accepted=count,
            event_id=request.event.event_id if request.HasField("event") else "",
        )

    def IngestCampaignEvent(
        self, request: pb.IngestCampaignEventRequest, context: grpc.ServicerContext
    ) -> pb.IngestCampaignEventResponse:
        self.recorder.record("IngestCampaignEvent", request, context)
        return pb.IngestCampaignEventResponse(
            success=True, campaign_id=request.campaign_id, event_id=request.event.event_id
        )

    def StreamEvents(
        self, request_iterator: Iterator[pb.StreamEventsRequest], context: grpc.ServicerContext
    ) -> pb.StreamEventsResponse:
        # The whole stream is read before failing, so a test sees what each
        # attempt sent.
        batches = list(request_iterator)
        self.recorder.record("StreamEvents", batches, context)
        count = sum(len(batch.events) for batch in batches)
        return pb.StreamEventsResponse(
            success=True, count=count, accepted=count, batches=len(batches)
        )


class MetricsServicer(pb.MetricsServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def GetCampaignMetrics(
        self, request: pb.GetCampaignMetricsRequest, context: grpc.ServicerContext
    ) -> pb.GetCampaignMetricsResponse:
        self.recorder.record("GetCampaignMetrics", request, context)
        return pb.GetCampaignMetricsResponse(
            success=True,
            metrics=pb.RealTimeMetrics(campaign_id=request.campaign_id, impressions=1500),
            time_window=request.time_window,
        )

    def GetPipelineStatus(
        self, request: pb.GetPipelineStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetPipelineStatusResponse:
        self.recorder.record("GetPipelineStatus", request, context)
        return pb.GetPipelineStatusResponse(
            status=pb.PipelineStatus(buffer_size=3), time_window=request.time_window
        )

    def GetDashboard(
        self, request: pb.GetDashboardRequest, context: grpc.ServicerContext
    ) -> pb.GetDashboardResponse:
        self.recorder.record("GetDashboard", request, context)
        return pb.GetDashboardResponse(
            success=True,
            organization_id=request.organization_id,
            time_window=request.time_window,
        )


class CampaignServicer(pb.CampaignServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.ServicerContext
    ) -> pb.CreateCampaignResponse:
        self.recorder.record("CreateCampaign", request, context)
        return pb.CreateCampaignResponse(campaign=request.campaign)

    def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: grpc.ServicerContext
    ) -> pb.ListCampaignsResponse:
        self.recorder.record("ListCampaigns", request, context)
        return pb.ListCampaignsResponse(
            campaigns=[pb.Campaign(campaign_id="camp_1", organization_id="org_1")]
        )


@dataclasses.dataclass
class Server:
    target: str
    recorder: Recorder


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    """Runs the services on 127.0.0.1, on a free port, until the block ends."""
    recorder = Recorder()
    pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="test-grpc-server")
    grpc_server = grpc.server(pool)
    pb.add_IngestServiceServicer_to_server(IngestServicer(recorder), grpc_server)
    pb.add_MetricsServiceServicer_to_server(MetricsServicer(recorder), grpc_server)
    pb.add_CampaignServiceServicer_to_server(CampaignServicer(recorder), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield Server(target=f"127.0.0.1:{port}", recorder=recorder)
    finally:
        grpc_server.stop(grace=None).wait(timeout=30)
        pool.shutdown(wait=True)
