"""Campaigns: create and list (CampaignService)."""

from typing import Annotated

from fastapi import APIRouter, Query

from clients.pb import CreateCampaignRequest, ListCampaignsRequest
from gateway import codec, models
from gateway.deps import Call, CampaignStub, RawBody
from gateway.responses import JsonResponse, respond

router = APIRouter(tags=["campaigns"])


@router.post(
    "/api/campaigns",
    summary="Create a campaign",
    response_model=models.CampaignResponse,
    responses=models.error_responses(409, 413),
    openapi_extra=models.request_body(
        models.NewCampaign, description="The campaign; needs a key with the admin role."
    ),
)
async def create_campaign(body: RawBody, stub: CampaignStub, call: Call) -> JsonResponse:
    campaign = codec.campaign_from_json(codec.parse_body(body))
    response = await stub.CreateCampaign(
        CreateCampaignRequest(campaign=campaign), metadata=call.metadata, timeout=call.timeout
    )
    return respond(codec.message_to_dict(response))


@router.get(
    "/api/campaigns",
    summary="List the campaigns of an organization",
    response_model=models.CampaignListResponse,
    responses=models.error_responses(),
)
async def list_campaigns(
    stub: CampaignStub,
    call: Call,
    organization_id: Annotated[
        str | None,
        Query(alias="organizationId", description="Defaults to the caller's organization."),
    ] = None,
) -> JsonResponse:
    response = await stub.ListCampaigns(
        ListCampaignsRequest(organization_id=organization_id or ""),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    return respond(codec.message_to_dict(response))
