"""Metrics: live campaign metrics, pipeline status and dashboards (MetricsService)."""

from typing import Annotated

from fastapi import APIRouter, Query

from clients.pb import GetCampaignMetricsRequest, GetDashboardRequest, GetPipelineStatusRequest
from gateway import codec, models
from gateway.deps import Call, CampaignIdPath, MetricsStub, TimeWindow
from gateway.errors import bad_request
from gateway.responses import JsonResponse, respond

router = APIRouter(tags=["metrics"])

NO_RECENT_DATA = "No recent analytics data found"
DEFAULT_TIME_WINDOW = 3600


@router.get(
    "/api/campaigns/{campaign_id}/analytics/real-time",
    summary="Live metrics of a campaign",
    response_model=models.CampaignMetricsResponse,
    responses=models.error_responses(404),
)
async def get_campaign_metrics(
    campaign_id: CampaignIdPath,
    stub: MetricsStub,
    call: Call,
    time_window: TimeWindow = DEFAULT_TIME_WINDOW,
) -> JsonResponse:
    response = await stub.GetCampaignMetrics(
        GetCampaignMetricsRequest(campaign_id=campaign_id, time_window=time_window),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    content = codec.message_to_dict(response)
    if content["metrics"] is None:
        content["message"] = content["message"] or NO_RECENT_DATA
    elif not content["message"]:
        del content["message"]
    return respond(content)


@router.get(
    "/api/analytics/real-time",
    summary="Pipeline status, with metrics of a campaign or an organization",
    response_model=models.PipelineStatusResponse,
    responses=models.error_responses(),
)
async def get_pipeline_status(
    stub: MetricsStub,
    call: Call,
    campaign_id: Annotated[
        str | None, Query(alias="campaignId", description="Also give this campaign's metrics.")
    ] = None,
    organization_id: Annotated[
        str | None,
        Query(
            alias="organizationId",
            description="Also give the metrics of this organization's active campaigns.",
        ),
    ] = None,
    time_window: TimeWindow = DEFAULT_TIME_WINDOW,
) -> JsonResponse:
    response = await stub.GetPipelineStatus(
        GetPipelineStatusRequest(
            campaign_id=campaign_id or "",
            organization_id=organization_id or "",
            time_window=time_window,
        ),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    content = codec.message_to_dict(response)
    if not organization_id:
        # No organization asked: null, not an empty list.
        content["organizationMetrics"] = None
    return respond(content)


@router.get(
    "/api/analytics/real-time/dashboard",
    summary="An organization's live dashboard",
    response_model=models.DashboardResponse,
    responses=models.error_responses(),
)
async def get_dashboard(
    stub: MetricsStub,
    call: Call,
    organization_id: Annotated[str, Query(alias="organizationId")],
    time_window: TimeWindow = DEFAULT_TIME_WINDOW,
) -> JsonResponse:
    if not organization_id:
        raise bad_request("organizationId is required", "organizationId")
    response = await stub.GetDashboard(
        GetDashboardRequest(organization_id=organization_id, time_window=time_window),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    content = codec.message_to_dict(response)
    content["organizationId"] = content["organizationId"] or organization_id
    return respond(content)
