"""Trends: a campaign's (or an organization's) metrics as a time series.

A trend cuts a range into points of ``step`` seconds, aligned to multiples
of the step since the Unix epoch (an hourly trend's points start on the
hour, a daily one's at midnight UTC); the last point holds the current
second. It is read from the coarsest rollups the step allows: per hour when
the step is whole hours, per minute when whole minutes, else per second.
So a point never splits a rollup bucket, the points always add up to the
range's totals, and a range of months reads thousands of rows, not millions.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, Table, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import InvalidArgument
from server.metrics.formulas import CampaignMetrics, Totals
from server.metrics.queries import totals_of
from server.store.schema import (
    ROLLUP_SUMS,
    campaign_rollups,
    campaign_rollups_hour,
    campaign_rollups_minute,
)

DEFAULT_RANGE = 3600
MAX_RANGE = 400 * 86_400  # seconds: 400 days
MAX_POINTS = 1_500
# Default steps, smallest first: the first giving at most DEFAULT_POINTS points.
NICE_STEPS = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21_600, 43_200, 86_400)
DEFAULT_POINTS = 300
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TrendRange:
    """The points of a trend: ``points`` buckets of ``step`` seconds from ``start``."""

    step: int
    points: int
    start: datetime
    now: datetime

    @classmethod
    def ending_now(cls, seconds: int, step: int, now: datetime | None = None) -> "TrendRange":
        """The range covering at least the last ``seconds`` (default an hour),
        in points of ``step`` seconds (default: a round step giving at most
        300 points); refuses what it cannot serve, saying why."""
        seconds = seconds or DEFAULT_RANGE
        if not 1 <= seconds <= MAX_RANGE:
            raise InvalidArgument(
                f"timeWindow must be between 1 and {MAX_RANGE:,} seconds (400 days); got {seconds}",
                "timeWindow",
            )
        if step == 0:
            step = next(
                (s for s in NICE_STEPS if math.ceil(seconds / s) <= DEFAULT_POINTS),
                NICE_STEPS[-1],
            )
        if not 1 <= step <= seconds:
            raise InvalidArgument(
                f"step must be between 1 second and the timeWindow ({seconds} s); got {step}",
                "step",
            )
        if step >= 3600 and step % 3600:
            raise InvalidArgument(
                f"a step of an hour or more must be whole hours; got {step} s", "step"
            )
        if step >= 60 and step % 60:
            raise InvalidArgument(
                f"a step of a minute or more must be whole minutes; got {step} s", "step"
            )
        points = math.ceil(seconds / step)
        if points > MAX_POINTS:
            raise InvalidArgument(
                f"timeWindow / step gives {points:,} points; at most {MAX_POINTS:,}: "
                "choose a larger step"
            )
        now = now or datetime.now(UTC)
        since_epoch = int((now - _EPOCH).total_seconds())
        end = _EPOCH + timedelta(seconds=(since_epoch // step + 1) * step)
        return cls(step, points, end - timedelta(seconds=points * step), now)

    @property
    def seconds(self) -> int:
        return self.points * self.step

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    @property
    def table(self) -> Table:
        """The coarsest rollups whose buckets the points do not split."""
        if self.step % 3600 == 0:
            return campaign_rollups_hour
        if self.step % 60 == 0:
            return campaign_rollups_minute
        return campaign_rollups


@dataclass(slots=True)
class Trend:
    totals: CampaignMetrics
    points: list[CampaignMetrics]


async def read_trend(
    engine: AsyncEngine, organization_id: str, campaign_id: str, span: TrendRange
) -> Trend:
    """The campaign's trend, or the organization's when ``campaign_id`` is
    empty. Points without events are zeros."""
    r = span.table
    slot = cast(
        func.floor(extract("epoch", r.c.bucket - span.start) / span.step),
        Integer,
    ).label("slot")
    query = select(slot, *(func.sum(r.c[name]) for name in ROLLUP_SUMS)).where(
        r.c.organization_id == organization_id,
        r.c.bucket >= span.start,
        r.c.bucket < span.end,
    )
    if campaign_id:
        query = query.where(r.c.campaign_id == campaign_id)
    buckets = [Totals() for _ in range(span.points)]
    async with engine.connect() as conn:
        for index, *sums in await conn.execute(query.group_by(slot)):
            buckets[index] = totals_of(sums)
    summed = Totals()
    points = []
    for index, totals in enumerate(buckets):
        summed += totals
        start = span.start + timedelta(seconds=index * span.step)
        points.append(
            CampaignMetrics(campaign_id, organization_id, start, start, span.step, totals)
        )
    whole = CampaignMetrics(
        campaign_id, organization_id, span.now, span.start, span.seconds, summed
    )
    return Trend(whole, points)
