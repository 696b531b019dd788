"""MetricsService: campaign metrics, pipeline status, the dashboard and trends."""

import grpc

from clients import pb
from server import codec
from server.auth import KeyStore
from server.domain import Role
from server.errors import InvalidArgument, PermissionDenied
from server.ingest.campaigns import CampaignDirectory
from server.ingest.pipeline import IngestPipeline
from server.metrics.reader import MetricsReader
from server.metrics.trends import TrendRange
from server.metrics.window import Window
from server.observability.condition import PipelineCondition
from server.services.common import (
    Authenticated,
    campaign_not_found,
    reports_errors,
    same_organization,
)


class MetricsServicer(Authenticated, pb.MetricsServiceServicer):
    def __init__(
        self,
        keys: KeyStore,
        reader: MetricsReader,
        campaigns: CampaignDirectory,
        pipeline: IngestPipeline,
        condition: PipelineCondition | None = None,
    ) -> None:
        super().__init__(keys)
        self._reader = reader
        self._campaigns = campaigns
        self._pipeline = pipeline
        self._condition = condition or PipelineCondition(pipeline)

    async def _own_campaign(self, organization_id: str, campaign_id: str) -> bool:
        """Whether the campaign exists; refuses another organization's."""
        owner = await self._campaigns.owner(campaign_id)
        if owner is not None and owner != organization_id:
            raise PermissionDenied(f"campaign {campaign_id!r} belongs to another organization")
        return owner is not None

    @reports_errors
    async def GetCampaignMetrics(
        self, request: pb.GetCampaignMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCampaignMetricsResponse:
        principal = await self.caller(context, Role.READ)
        window = Window.ending_now(request.time_window)
        await self._campaigns.check(
            principal.organization_id, [request.campaign_id], campaign_not_found
        )
        metrics = await self._reader.campaign(
            principal.organization_id, request.campaign_id, window
        )
        response = pb.GetCampaignMetricsResponse(
            success=True, time_window=window.seconds, timestamp=codec.timestamp(window.now)
        )
        if metrics is None:
            response.message = "No recent analytics data found"
        else:
            response.metrics.CopyFrom(codec.encode_metrics(metrics))
        return response

    @reports_errors
    async def GetPipelineStatus(
        self, request: pb.GetPipelineStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPipelineStatusResponse:
        principal = await self.caller(context, Role.READ)
        organization_id = same_organization(principal, request.organization_id)
        window = Window.ending_now(request.time_window)
        writer = self._pipeline.writer
        response = pb.GetPipelineStatusResponse(
            status=codec.encode_status(
                writer.stats,
                buffered=writer.buffered,
                is_processing=writer.is_processing,
                flush_threshold=writer.flush_threshold,
                flush_interval=writer.flush_interval,
                capacity=writer.capacity,
                events_rejected=self._pipeline.events_rejected,
                condition=self._condition.current(),
                events_refused=self._pipeline.refusals.events,
            ),
            time_window=window.seconds,
            timestamp=codec.timestamp(window.now),
        )
        if request.campaign_id and await self._own_campaign(organization_id, request.campaign_id):
            metrics = await self._reader.campaign(organization_id, request.campaign_id, window)
            if metrics is not None:
                response.metrics.CopyFrom(codec.encode_metrics(metrics))
        if request.organization_id:
            response.organization_metrics.extend(
                codec.encode_metrics(m)
                for m in await self._reader.organization(organization_id, window)
            )
        return response

    @reports_errors
    async def GetDashboard(
        self, request: pb.GetDashboardRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDashboardResponse:
        principal = await self.caller(context, Role.READ)
        if not request.organization_id:
            raise InvalidArgument("organizationId is required", "organizationId")
        organization_id = same_organization(principal, request.organization_id)
        window = Window.ending_now(request.time_window)
        dashboard = await self._reader.dashboard(organization_id, window)
        return codec.encode_dashboard(organization_id, dashboard)

    @reports_errors
    async def GetTrends(
        self, request: pb.GetTrendsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTrendsResponse:
        principal = await self.caller(context, Role.READ)
        organization_id = same_organization(principal, request.organization_id)
        span = TrendRange.ending_now(request.time_window, request.step)
        if request.campaign_id:
            await self._campaigns.check(organization_id, [request.campaign_id], campaign_not_found)
        trend = await self._reader.trend(organization_id, request.campaign_id, span)
        return pb.GetTrendsResponse(
            success=True,
            organization_id=organization_id,
            campaign_id=request.campaign_id,
            time_window=span.seconds,
            step=span.step,
            totals=codec.encode_metrics(trend.totals),
            points=[codec.encode_metrics(point) for point in trend.points],
            timestamp=codec.timestamp(span.now),
        )
