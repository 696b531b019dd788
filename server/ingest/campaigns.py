"""Which organization owns each campaign, cached: campaigns are never moved
or deleted, so a known owner stays true; unknown ids are asked again."""

from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import PermissionDenied, ServiceError
from server.store.schema import campaigns


class CampaignDirectory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._owners: dict[str, str] = {}

    def known_owner(self, campaign_id: str) -> str | None:
        """The campaign's owner, if known (cached); else None."""
        return self._owners.get(campaign_id)

    def known_owners(self, campaign_ids: Iterable[str]) -> dict[str, str | None] | None:
        """The owner of each id, when every one is known (cached); else None."""
        owners = self._owners
        try:
            return {campaign_id: owners[campaign_id] for campaign_id in campaign_ids}
        except KeyError:
            return None

    async def owners(self, campaign_ids: Iterable[str]) -> dict[str, str | None]:
        """Maps each id to its organization, or None when there is no such campaign."""
        result: dict[str, str | None] = {}
        unknown = []
        for campaign_id in campaign_ids:
            owner = self._owners.get(campaign_id)
            result[campaign_id] = owner
            # An empty id is never a campaign's, and one holding a NUL cannot
            # be stored (PostgreSQL's text cannot hold one, and asking would
            # fail): there is no such campaign.
            if owner is None and campaign_id and "\x00" not in campaign_id:
                unknown.append(campaign_id)
        if unknown:
            query = select(campaigns.c.campaign_id, campaigns.c.organization_id).where(
                campaigns.c.campaign_id.in_(unknown)
            )
            async with self._engine.connect() as conn:
                for campaign_id, organization_id in await conn.execute(query):
                    self._owners[campaign_id] = organization_id
                    result[campaign_id] = organization_id
        return result

    async def owner(self, campaign_id: str) -> str | None:
        return (await self.owners([campaign_id]))[campaign_id]

    async def check(
        self,
        organization_id: str,
        campaign_ids: Iterable[str],
        unknown: Callable[[str], ServiceError],
    ) -> None:
        """Refuses ids that are not the organization's campaigns: raises
        ``unknown(campaign_id)`` for one that does not exist (each caller
        words it for its route), PermissionDenied for another organization's."""
        for campaign_id, owner in (await self.owners(campaign_ids)).items():
            if owner is None:
                raise unknown(campaign_id)
            if owner != organization_id:
                raise PermissionDenied(f"campaign {campaign_id!r} belongs to another organization")

    def remember(self, campaign_id: str, organization_id: str) -> None:
        self._owners[campaign_id] = organization_id
