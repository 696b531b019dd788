"""Reading window totals from the per-second rollups and the sessions table."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.metrics.formulas import Totals
from server.metrics.window import Window
from server.store.schema import ROLLUP_SUMS
from server.store.schema import campaign_rollups as r

TREND_POINTS = 60


async def campaign_totals(
    conn: AsyncConnection,
    organization_id: str,
    window: Window,
    campaign_ids: Sequence[str] | None = None,
) -> dict[str, Totals]:
    """Totals per campaign with events in the window (all campaigns of the
    organization, or only ``campaign_ids``). Sessions count where their first
    event falls."""
    rollups = select(r.c.campaign_id, *(func.sum(r.c[name]) for name in ROLLUP_SUMS)).where(
        r.c.organization_id == organization_id,
        r.c.bucket.between(window.first_bucket, window.last_bucket),
    )
    if campaign_ids is not None:
        rollups = rollups.where(r.c.campaign_id.in_(campaign_ids))

    totals: dict[str, Totals] = {}
    for campaign_id, *sums in await conn.execute(rollups.group_by(r.c.campaign_id)):
        totals[campaign_id] = totals_of(sums)
    return totals


def totals_of(sums: Sequence[Any]) -> Totals:
    """Totals from the sums of the ``ROLLUP_SUMS`` columns, in that order."""
    values = dict(zip(ROLLUP_SUMS, sums, strict=True))
    return Totals(
        **{name: int(values[name]) for name in ROLLUP_SUMS if name != "view_time_sum"},
        view_time_sum=float(values["view_time_sum"]),
    )


@dataclass(slots=True)
class TrendBucket:
    start: datetime
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    spent_micros: int = 0


async def trend(conn: AsyncConnection, organization_id: str, window: Window) -> list[TrendBucket]:
    """The window cut into up to ``TREND_POINTS`` equal buckets, oldest
    first; buckets without events are zeros."""
    step = math.ceil(window.seconds / min(TREND_POINTS, window.seconds))
    count = math.ceil(window.seconds / step)
    first = window.first_bucket
    slot = cast(func.floor(extract("epoch", r.c.bucket - first) / step), Integer)
    query = (
        select(
            slot,
            func.sum(r.c.impressions),
            func.sum(r.c.clicks),
            func.sum(r.c.conversions),
            func.sum(r.c.spent_micros),
        )
        .where(
            and_(
                r.c.organization_id == organization_id,
                r.c.bucket.between(first, window.last_bucket),
            )
        )
        .group_by(slot)
    )
    buckets = [TrendBucket(first + timedelta(seconds=i * step)) for i in range(count)]
    for index, impressions, clicks, conversions, spent in await conn.execute(query):
        bucket = buckets[index]
        bucket.impressions = int(impressions)
        bucket.clicks = int(clicks)
        bucket.conversions = int(conversions)
        bucket.spent_micros = int(spent)
    return buckets
