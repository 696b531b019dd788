"""CampaignService: create and list an organization's campaigns."""

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from clients import pb
from server import admin, codec
from server.auth import KeyStore
from server.domain import Role
from server.ingest.campaigns import CampaignDirectory
from server.services.common import Authenticated, reports_errors, same_organization


class CampaignServicer(Authenticated, pb.CampaignServiceServicer):
    def __init__(self, keys: KeyStore, engine: AsyncEngine, campaigns: CampaignDirectory) -> None:
        super().__init__(keys)
        self._engine = engine
        self._campaigns = campaigns

    @reports_errors
    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCampaignResponse:
        principal = await self.caller(context, Role.ADMIN)
        organization_id = same_organization(principal, request.campaign.organization_id)
        record = await admin.create_campaign(
            self._engine, organization_id, request.campaign.campaign_id, request.campaign.name
        )
        self._campaigns.remember(record.campaign_id, record.organization_id)
        return pb.CreateCampaignResponse(campaign=codec.encode_campaign(record))

    @reports_errors
    async def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCampaignsResponse:
        principal = await self.caller(context, Role.READ)
        organization_id = same_organization(principal, request.organization_id)
        records = await admin.list_campaigns(self._engine, organization_id)
        return pb.ListCampaignsResponse(campaigns=[codec.encode_campaign(r) for r in records])
