"""Downsampling: fine rollups are kept only as long as a query can read them.

Per-second rollups serve the metrics windows (up to 31 days) and trends with
steps under a minute; per-minute ones serve trends with steps under an hour
(at most 1,500 points of 59 minutes: 61.5 days); per-hour ones serve the rest
and are kept. Events may arrive up to 30 days late, which a day of margin
covers. Older per-second and per-minute rows are deleted, organization by
organization, so that each delete is a range of the (organization_id, bucket)
index rather than a scan of the table.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.metrics.trends import MAX_POINTS
from server.metrics.window import MAX_WINDOW
from server.store.schema import campaign_rollups, campaign_rollups_minute, organizations

log = logging.getLogger(__name__)

MARGIN = timedelta(days=1)
KEPT: tuple[tuple[Table, timedelta], ...] = (
    (campaign_rollups, timedelta(seconds=MAX_WINDOW) + MARGIN),
    (campaign_rollups_minute, timedelta(minutes=MAX_POINTS * 59) + MARGIN),
)
PRUNE_INTERVAL = 3600.0  # seconds


async def prune_rollups(engine: AsyncEngine, now: datetime | None = None) -> int:
    """Deletes the rollups no query can read any more; returns how many."""
    now = now or datetime.now(UTC)
    async with engine.connect() as conn:
        found = await conn.execute(select(organizations.c.organization_id))
        organization_ids = list(found.scalars())
    deleted = 0
    for table, kept in KEPT:
        for organization_id in organization_ids:
            async with engine.begin() as conn:
                result = await conn.execute(
                    delete(table).where(
                        table.c.organization_id == organization_id,
                        table.c.bucket < now - kept,
                    )
                )
                deleted += result.rowcount
    return deleted


async def prune_periodically(engine: AsyncEngine, interval: float = PRUNE_INTERVAL) -> None:
    """Prunes every ``interval`` seconds, the first time soon after start-up."""
    await asyncio.sleep(min(60.0, interval))
    while True:
        try:
            deleted = await prune_rollups(engine)
            if deleted:
                log.info("deleted %d rollup rows older than any query reads", deleted)
        except Exception as exc:  # the database may be down for a while
            log.warning("pruning old rollups failed (retrying in %.0f s): %s", interval, exc)
        await asyncio.sleep(interval)
