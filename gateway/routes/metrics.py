"""Metrics: live campaign metrics, pipeline status, dashboards and trends (MetricsService)."""

from typing import Annotated

from fastapi import APIRouter, Query

from clients.pb import (
    GetCampaignMetricsRequest,
    GetDashboardRequest,
    GetPipelineStatusRequest,
    GetTrendsRequest,
)
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
    organization_id: Annotated[
        str, Query(alias="organizationId", json_schema_extra={"minLength": 1})
    ],
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


# The longest trend the server reads: 400 days.
MAX_TREND_WINDOW = 34_560_000
TrendWindow = Annotated[
    int,
    Query(
        alias="timeWindow",
        ge=1,
        le=MAX_TREND_WINDOW,
        description="Seconds of history, ending now (at most 400 days).",
    ),
]
Step = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_TREND_WINDOW,
        description="Seconds per point: 1 to 59, whole minutes below an hour, or whole hours; "
        "at most 1,500 points. Default: a round step giving at most 300 points.",
    ),
]


@router.get(
    "/api/analytics/real-time/trends",
    summary="An organization's metrics as a time series",
    response_model=models.TrendsResponse,
    responses=models.error_responses(),
)
async def get_organization_trends(
    stub: MetricsStub,
    call: Call,
    organization_id: Annotated[
        str, Query(alias="organizationId", json_schema_extra={"minLength": 1})
    ],
    time_window: TrendWindow = DEFAULT_TIME_WINDOW,
    step: Step = None,
) -> JsonResponse:
    if not organization_id:
        raise bad_request("organizationId is required", "organizationId")
    return await _trends(
        stub, call, GetTrendsRequest(organization_id=organization_id), time_window, step
    )


@router.get(
    "/api/campaigns/{campaign_id}/analytics/trends",
    summary="A campaign's metrics as a time series",
    response_model=models.TrendsResponse,
    responses=models.error_responses(404),
)
async def get_campaign_trends(
    campaign_id: CampaignIdPath,
    stub: MetricsStub,
    call: Call,
    time_window: TrendWindow = DEFAULT_TIME_WINDOW,
    step: Step = None,
) -> JsonResponse:
    return await _trends(stub, call, GetTrendsRequest(campaign_id=campaign_id), time_window, step)


async def _trends(
    stub: MetricsStub, call: Call, request: GetTrendsRequest, time_window: int, step: int | None
) -> JsonResponse:
    request.time_window = time_window
    request.step = step or 0
    response = await stub.GetTrends(request, metadata=call.metadata, timeout=call.timeout)
    return respond(codec.message_to_dict(response))
