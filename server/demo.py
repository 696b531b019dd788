"""Demo mode: an organization, campaigns and a key, and steady simulated
traffic through the real ingest path, so a newcomer sees numbers move."""

import asyncio
import contextlib
import logging

from server import admin
from server.auth import create_key
from server.domain import Principal, Role
from server.errors import AlreadyExists, ServiceError
from server.ingest.pipeline import IngestPipeline
from server.ingest.validation import now_us
from server.simulation.traffic import Traffic

log = logging.getLogger(__name__)

DEMO_ORGANIZATION = "org_456"
DEMO_CAMPAIGNS = ("camp_123", "camp_124", "camp_125")


async def prepare(engine) -> str:  # type: ignore[no-untyped-def]
    """Creates the demo organization and campaigns if missing; returns a new admin key."""
    with contextlib.suppress(AlreadyExists):
        await admin.create_organization(engine, DEMO_ORGANIZATION, "Demo organization")
    for campaign_id in DEMO_CAMPAIGNS:
        with contextlib.suppress(AlreadyExists):
            await admin.create_campaign(engine, DEMO_ORGANIZATION, campaign_id)
    return await create_key(engine, DEMO_ORGANIZATION, Role.ADMIN, name="demo")


async def run_traffic(
    pipeline: IngestPipeline, journeys_per_second: float = 5.0, seed: int | None = None
) -> None:
    """Feeds user journeys (``server.simulation.traffic``) into the pipeline
    until cancelled; logs a line every 30 s."""
    traffic = Traffic(DEMO_ORGANIZATION, DEMO_CAMPAIGNS, seed=seed)
    principal = Principal(DEMO_ORGANIZATION, Role.INGEST, "demo")
    sent = 0
    last_report = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(1 / journeys_per_second)
        campaign_id = traffic.rng.choice(DEMO_CAMPAIGNS)
        events = traffic.journey(campaign_id, now_us())
        try:
            result = await pipeline.ingest(principal, events)
            sent += result.accepted
        except ServiceError as exc:
            log.warning("demo traffic paused: %s", exc.message)
            await asyncio.sleep(1)
        now = asyncio.get_running_loop().time()
        if now - last_report >= 30:
            last_report = now
            log.info("demo traffic: %d events ingested so far", sent)
