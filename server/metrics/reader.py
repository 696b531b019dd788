"""Campaign, organization and dashboard metrics over a window."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from server.metrics import queries
from server.metrics.formulas import CampaignMetrics, Totals
from server.metrics.queries import TrendBucket
from server.metrics.trends import Trend, TrendRange, read_trend
from server.metrics.window import Window

TOP_CAMPAIGNS = 5


@dataclass(slots=True)
class Dashboard:
    summary: CampaignMetrics  # the organization's totals (campaign_id empty)
    active_campaigns: int
    top_campaigns: list[CampaignMetrics]
    trend: list[TrendBucket]
    campaigns: list[CampaignMetrics]


class MetricsReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def campaign(
        self, organization_id: str, campaign_id: str, window: Window
    ) -> CampaignMetrics | None:
        """The campaign's metrics, or None when it had no events in the window."""
        async with self._engine.connect() as conn:
            totals = await queries.campaign_totals(conn, organization_id, window, [campaign_id])
        found = totals.get(campaign_id)
        return _metrics(organization_id, campaign_id, window, found) if found else None

    async def organization(self, organization_id: str, window: Window) -> list[CampaignMetrics]:
        """Metrics of each campaign active in the window, by campaign id."""
        async with self._engine.connect() as conn:
            totals = await queries.campaign_totals(conn, organization_id, window)
        return _per_campaign(organization_id, window, totals)

    async def organization_with_summary(
        self, organization_id: str, window: Window
    ) -> tuple[list[CampaignMetrics], CampaignMetrics]:
        """Each active campaign's metrics, and the organization's totals."""
        campaigns = await self.organization(organization_id, window)
        return campaigns, summarize(organization_id, window, campaigns)

    async def trend(self, organization_id: str, campaign_id: str, span: TrendRange) -> Trend:
        """The campaign's trend, or the organization's when ``campaign_id`` is empty."""
        return await read_trend(self._engine, organization_id, campaign_id, span)

    async def dashboard(self, organization_id: str, window: Window) -> Dashboard:
        async with self._engine.connect() as conn:
            totals = await queries.campaign_totals(conn, organization_id, window)
            trend = await queries.trend(conn, organization_id, window)
        campaigns = _per_campaign(organization_id, window, totals)
        top = sorted(campaigns, key=lambda m: (-m.totals.impressions, m.campaign_id))
        return Dashboard(
            summary=summarize(organization_id, window, campaigns),
            active_campaigns=len(campaigns),
            top_campaigns=top[:TOP_CAMPAIGNS],
            trend=trend,
            campaigns=campaigns,
        )


def summarize(
    organization_id: str, window: Window, campaigns: list[CampaignMetrics]
) -> CampaignMetrics:
    """The organization's totals: the campaigns' summed (campaign_id empty)."""
    summed = Totals()
    for campaign in campaigns:
        summed += campaign.totals
    return _metrics(organization_id, "", window, summed)


def _metrics(
    organization_id: str, campaign_id: str, window: Window, totals: Totals
) -> CampaignMetrics:
    return CampaignMetrics(
        campaign_id=campaign_id,
        organization_id=organization_id,
        timestamp=window.now,
        window_start=window.first_bucket,
        time_window=window.seconds,
        totals=totals,
    )


def _per_campaign(
    organization_id: str, window: Window, totals: dict[str, Totals]
) -> list[CampaignMetrics]:
    return [
        _metrics(organization_id, campaign_id, window, totals[campaign_id])
        for campaign_id in sorted(totals)
    ]
