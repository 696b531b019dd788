"""Demo mode: an organization, campaigns and a key, and steady simulated
traffic through the real ingest path, so a newcomer sees numbers move."""

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from server import admin
from server.auth import create_key
from server.domain import EventType, Principal, Role
from server.errors import AlreadyExists, ServiceError
from server.ingest.pipeline import IngestPipeline
from server.ingest.validation import IncomingEvent

log = logging.getLogger(__name__)

DEMO_ORGANIZATION = "org_456"
DEMO_CAMPAIGNS = ("camp_123", "camp_124", "camp_125")
DEVICES = (("desktop", 0.5), ("mobile", 0.4), ("tablet", 0.1))
LOCATIONS = ("New York, NY", "Los Angeles, CA", "Chicago, IL", "London, UK", "Berlin, DE")


async def prepare(engine) -> str:  # type: ignore[no-untyped-def]
    """Creates the demo organization and campaigns if missing; returns a new admin key."""
    with contextlib.suppress(AlreadyExists):
        await admin.create_organization(engine, DEMO_ORGANIZATION, "Demo organization")
    for campaign_id in DEMO_CAMPAIGNS:
        with contextlib.suppress(AlreadyExists):
            await admin.create_campaign(engine, DEMO_ORGANIZATION, campaign_id)
    return await create_key(engine, DEMO_ORGANIZATION, Role.ADMIN, name="demo")


def journey(rng: random.Random, campaign_id: str, now_us: int) -> list[IncomingEvent]:
    """One session's funnel, as the seed's simulator made it: an impression;
    a click (30%); a view (80%) of 5 to 35 s; engagement past 10 s;
    completion past 20 s (then a conversion, 5%), otherwise a skip."""
    session = f"session_{rng.getrandbits(48):012x}"
    device = rng.choices([d for d, _ in DEVICES], [w for _, w in DEVICES])[0]
    base: dict[str, object] = {
        "sessionId": session,
        "deviceType": device,
        "location": rng.choice(LOCATIONS),
    }
    steps: list[tuple[EventType, float | None, float | None]] = [(EventType.IMPRESSION, None, None)]
    if rng.random() < 0.3:
        steps.append((EventType.CLICK, round(rng.uniform(0.5, 2.5), 2), None))
    if rng.random() < 0.8:
        watched = round(rng.uniform(5, 35), 1)
        steps.append((EventType.VIEW, None, watched))
        if watched > 10:
            steps.append((EventType.ENGAGEMENT, None, None))
        if watched > 20:
            steps.append((EventType.COMPLETION, None, None))
            if rng.random() < 0.05:
                steps.append((EventType.CONVERSION, round(rng.uniform(10, 60), 2), None))
        else:
            steps.append((EventType.SKIP, None, None))
    events = []
    for offset, (event_type, value, duration) in enumerate(steps):
        metadata: dict[str, Any] = dict(base)
        if duration is not None:
            metadata["duration"] = duration
        events.append(
            IncomingEvent(
                index=offset,
                size=0,
                event_id="",
                event_type=int(event_type),
                campaign_id=campaign_id,
                organization_id=DEMO_ORGANIZATION,
                occurred_us=now_us - 10_000 * (len(steps) - offset),
                timestamp_error="",
                value=value,
                session_id=session,
                duration=duration,
                metadata=metadata,
            )
        )
    return events


async def run_traffic(
    pipeline: IngestPipeline, journeys_per_second: float = 5.0, seed: int | None = None
) -> None:
    """Feeds journeys into the pipeline until cancelled; logs a line every 10 s."""
    rng = random.Random(seed)
    principal = Principal(DEMO_ORGANIZATION, Role.INGEST, "demo")
    sent = 0
    last_report = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(1 / journeys_per_second)
        events = journey(rng, rng.choice(DEMO_CAMPAIGNS), time.time_ns() // 1000)
        try:
            result = await pipeline.ingest(principal, events)
            sent += result.accepted
        except ServiceError as exc:
            log.warning("demo traffic paused: %s", exc.message)
            await asyncio.sleep(1)
        now = asyncio.get_running_loop().time()
        if now - last_report >= 10:
            last_report = now
            log.info("demo traffic: %d events ingested so far", sent)
