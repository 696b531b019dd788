"""Organizations and campaigns: created by the command line and the
CampaignService."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.store.schema import campaigns, organizations

MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    campaign_id: str
    organization_id: str
    name: str
    created_at: datetime


def _check_id(kind: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable() or value.strip() != value:
        raise InvalidArgument(
            f"{kind} must be 1 to {MAX_ID_LENGTH} printable characters without surrounding spaces"
        )


async def create_organization(engine: AsyncEngine, organization_id: str, name: str = "") -> None:
    _check_id("organizationId", organization_id)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(organizations).values(
                    organization_id=organization_id,
                    name=name or organization_id,
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"organization {organization_id!r} already exists") from None


async def organization_exists(engine: AsyncEngine, organization_id: str) -> bool:
    query = select(organizations.c.organization_id).where(
        organizations.c.organization_id == organization_id
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).first() is not None


async def create_campaign(
    engine: AsyncEngine, organization_id: str, campaign_id: str, name: str = ""
) -> CampaignRecord:
    _check_id("campaignId", campaign_id)
    if not await organization_exists(engine, organization_id):
        raise NotFound(f"organization {organization_id!r} does not exist")
    record = CampaignRecord(campaign_id, organization_id, name or campaign_id, datetime.now(UTC))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(campaigns).values(
                    organization_id=organization_id,
                    campaign_id=campaign_id,
                    name=record.name,
                    created_at=record.created_at,
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"campaign {campaign_id!r} already exists") from None
    return record


async def list_campaigns(engine: AsyncEngine, organization_id: str) -> list[CampaignRecord]:
    query = (
        select(
            campaigns.c.campaign_id,
            campaigns.c.organization_id,
            campaigns.c.name,
            campaigns.c.created_at,
        )
        .where(campaigns.c.organization_id == organization_id)
        .order_by(campaigns.c.campaign_id)
    )
    async with engine.connect() as conn:
        return [CampaignRecord(*row) for row in await conn.execute(query)]
