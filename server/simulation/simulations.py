"""Simulations: continuous ones running in the background, bursts and user
journeys, all fed through the ordinary ingest path (validation, dead
letters, writer) as the caller.

A continuous simulation sends ``events_per_minute`` events, spread evenly
in time, until its ``duration`` has passed or it is stopped; when the
writer is slower than the simulation, it waits for room rather than
piling events up, and drops what fell more than a few seconds behind, so
it never floods the service. Simulations live in this process: stopping
the server stops them, after their batch in flight is committed.
"""

import asyncio
import contextlib
import dataclasses
import enum
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from server.domain import Principal
from server.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from server.ingest.pipeline import IngestPipeline
from server.ingest.validation import IncomingEvent, now_us
from server.observability.logs import detached_context
from server.observability.metrics import ServerMetrics
from server.simulation.traffic import Rates, Traffic
from server.store.database import DATABASE_UNREACHABLE

log = logging.getLogger(__name__)

MAX_EVENTS_PER_MINUTE = 600_000
MAX_DURATION_MINUTES = 10_080.0  # a week
MAX_BURST = 100_000
MAX_CAMPAIGNS = 100
MAX_RUNNING = 10  # continuous simulations per organization
ENDED_KEPT = 20  # ended simulations an organization's status still shows
CATCH_UP_SECONDS = 5.0  # a simulation further behind than this drops the backlog
MIN_TICK = 0.05  # seconds between an organization's batches, at the most
INGEST_TIMEOUT = 30.0  # seconds a continuous simulation's batch may take

CAMPAIGN_IDS_REQUIRED = "campaignIds array is required"
INVALID_ACTION = "Invalid action. Use: start, stop, burst, or journey"


@dataclass(frozen=True, slots=True)
class Options:
    """A simulation's knobs, defaults filled in (the seed's defaults)."""

    events_per_minute: float = 60.0
    duration: float = 60.0  # minutes
    impression_rate: float = 0.7
    click_rate: float = 0.25
    conversion_rate: float = 0.05
    count: int = 100
    seed: int | None = None

    @property
    def rates(self) -> Rates:
        return Rates(self.impression_rate, self.click_rate, self.conversion_rate)


# JSON names of the options, for error messages.
_JSON_NAMES = {
    "events_per_minute": "eventsPerMinute",
    "duration": "duration",
    "impression_rate": "impressionRate",
    "click_rate": "clickRate",
    "conversion_rate": "conversionRate",
    "count": "count",
    "seed": "seed",
}


def options(given: Mapping[str, float | int]) -> Options:
    """The options with ``given`` (set fields only, by their Python names)
    over the defaults; refuses values out of range, saying which and why."""
    unknown = set(given) - set(_JSON_NAMES)
    if unknown:
        raise InvalidArgument(f"unknown options: {', '.join(sorted(unknown))}")
    chosen = dataclasses.replace(Options(), **given)  # type: ignore[arg-type]

    def bad(name: str, rule: str) -> InvalidArgument:
        field = f"options.{_JSON_NAMES[name]}"
        return InvalidArgument(f"{field} {rule}", field)

    for name in (
        "events_per_minute",
        "duration",
        "impression_rate",
        "click_rate",
        "conversion_rate",
    ):
        if not math.isfinite(getattr(chosen, name)):
            raise bad(name, "must be a finite number")
    if not 0 < chosen.events_per_minute <= MAX_EVENTS_PER_MINUTE:
        raise bad("events_per_minute", f"must be above 0 and at most {MAX_EVENTS_PER_MINUTE:,}")
    if not 0 < chosen.duration <= MAX_DURATION_MINUTES:
        raise bad("duration", f"must be above 0 and at most {MAX_DURATION_MINUTES:,.0f} minutes")
    for name in ("impression_rate", "click_rate", "conversion_rate"):
        if not 0 <= getattr(chosen, name) <= 1:
            raise bad(name, "must be between 0 and 1")
    if chosen.impression_rate + chosen.click_rate + chosen.conversion_rate > 1 + 1e-9:
        raise InvalidArgument(
            "options.impressionRate + clickRate + conversionRate must be at most 1 (the rest "
            "is spread over view, engagement, completion and skip)"
        )
    if not 1 <= chosen.count <= MAX_BURST:
        raise bad("count", f"must be between 1 and {MAX_BURST:,}")
    return chosen


class State(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class Simulation:
    """A continuous simulation and what it has done so far."""

    id: str
    organization_id: str
    campaign_ids: list[str]
    options: Options
    started_at: float  # Unix time, seconds
    ends_at: float  # when it ends (running) or ended
    state: State = State.RUNNING
    events_sent: int = 0  # accepted
    events_failed: int = 0  # rejected, or not committed
    error: str = ""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: "asyncio.Task[None] | None" = None


@dataclass(frozen=True, slots=True)
class Generated:
    """What a burst or journeys produced."""

    count: int
    accepted: int
    session_ids: list[str] = field(default_factory=list)


class Simulations:
    """The simulations of this server process."""

    def __init__(self, pipeline: IngestPipeline, metrics: ServerMetrics | None = None) -> None:
        self._pipeline = pipeline
        self._running: dict[str, Simulation] = {}
        self._ended: dict[str, deque[Simulation]] = {}
        self._closed = False
        self._metrics = metrics = metrics or ServerMetrics()
        metrics.simulations_running.set_function(lambda: len(self._running))

    # -- checks --------------------------------------------------------------

    async def campaigns(self, organization_id: str, campaign_ids: Sequence[str]) -> list[str]:
        """The campaign ids, once each, checked to be the organization's."""
        unique = list(dict.fromkeys(campaign_ids))
        if not unique:
            raise InvalidArgument(CAMPAIGN_IDS_REQUIRED)
        if len(unique) > MAX_CAMPAIGNS:
            raise InvalidArgument(
                f"a simulation covers at most {MAX_CAMPAIGNS} campaigns; this one names "
                f"{len(unique)}"
            )
        # An unknown campaign is a bad option here (400), not a missing page.
        await self._pipeline.campaigns.check(organization_id, unique, _no_such_campaign)
        return unique

    # -- continuous ----------------------------------------------------------

    async def start(
        self, principal: Principal, campaign_ids: list[str], chosen: Options
    ) -> Simulation:
        if self._closed:
            raise ResourceExhausted("the server is stopping; start the simulation on another")
        organization_id = principal.organization_id
        running = sum(s.organization_id == organization_id for s in self._running.values())
        if running >= MAX_RUNNING:
            raise ResourceExhausted(
                f"an organization runs at most {MAX_RUNNING} simulations at once; stop one first",
                retry_after=60,
            )
        started = time.time()
        simulation = Simulation(
            id=f"sim_{secrets.token_hex(12)}",
            organization_id=organization_id,
            campaign_ids=campaign_ids,
            options=chosen,
            started_at=started,
            ends_at=started + chosen.duration * 60,
        )
        self._running[simulation.id] = simulation
        simulation._task = asyncio.create_task(
            self._run(simulation, principal),
            name=f"simulation-{simulation.id}",
            context=detached_context(),
        )
        log.info(
            "simulation %s started: %s events/min over %d campaigns of %s for %s min",
            simulation.id,
            f"{chosen.events_per_minute:g}",
            len(campaign_ids),
            organization_id,
            f"{chosen.duration:g}",
        )
        return simulation

    async def stop(self, organization_id: str, simulation_id: str = "") -> list[Simulation]:
        """Stops one simulation of the organization, or all of them when no id
        is given; returns those stopped."""
        if simulation_id:
            simulation = self._running.get(simulation_id) or self._find_ended(simulation_id)
            if simulation is None or simulation.organization_id != organization_id:
                raise NotFound(f"Simulation not found: {simulation_id!r}")
            chosen = [simulation] if simulation.state is State.RUNNING else []
        else:
            chosen = [s for s in self._running.values() if s.organization_id == organization_id]
        await asyncio.gather(*(self._stop(s) for s in chosen))
        return chosen

    def status(self, organization_id: str) -> list[Simulation]:
        """The organization's simulations: running ones (oldest first), then
        ended ones (newest first)."""
        running = [s for s in self._running.values() if s.organization_id == organization_id]
        return running + list(reversed(self._ended.get(organization_id, ())))

    async def close(self, timeout: float = 5.0) -> None:
        """Stops every simulation (each commits its batch in flight, within ``timeout``)."""
        self._closed = True
        running = list(self._running.values())
        if running:
            log.info("stopping %d simulations", len(running))
        await asyncio.gather(*(self._stop(s, timeout) for s in running))

    async def _stop(self, simulation: Simulation, timeout: float = 5.0) -> None:
        simulation._stop.set()
        task = simulation._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _find_ended(self, simulation_id: str) -> Simulation | None:
        for ended in self._ended.values():
            for simulation in ended:
                if simulation.id == simulation_id:
                    return simulation
        return None

    def _end(self, simulation: Simulation, state: State) -> None:
        simulation.state = state
        simulation.ends_at = min(simulation.ends_at, time.time())
        self._running.pop(simulation.id, None)
        self._ended.setdefault(simulation.organization_id, deque(maxlen=ENDED_KEPT)).append(
            simulation
        )
        self._metrics.simulations_ended.labels(state.value).inc()
        log.info(
            "simulation %s %s: %d events sent, %d failed",
            simulation.id,
            state.value,
            simulation.events_sent,
            simulation.events_failed,
        )

    async def _run(self, simulation: Simulation, principal: Principal) -> None:
        chosen = simulation.options
        traffic = Traffic(
            simulation.organization_id, simulation.campaign_ids, chosen.rates, chosen.seed
        )
        per_second = chosen.events_per_minute / 60
        batch = self._pipeline.max_batch_events
        loop = asyncio.get_running_loop()
        started = loop.time()
        seconds = chosen.duration * 60
        generated = 0
        state = State.STOPPED
        try:
            while not simulation._stop.is_set():
                elapsed = min(loop.time() - started, seconds)
                due = math.floor(elapsed * per_second) - generated
                behind = due - math.ceil(per_second * CATCH_UP_SECONDS)
                if behind > 0:  # the service could not keep up: drop the backlog
                    generated += behind
                    due -= behind
                while due > 0 and not simulation._stop.is_set():
                    count = min(due, batch)
                    generated += count
                    due -= count
                    await self._send(simulation, principal, traffic, count)
                if elapsed >= seconds:
                    state = State.COMPLETED
                    break
                next_due = (generated + 1) / per_second
                pause = min(max(MIN_TICK, next_due - elapsed), seconds - elapsed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(simulation._stop.wait(), pause)
        except asyncio.CancelledError:
            self._end(simulation, State.STOPPED)
            raise
        except Exception as exc:
            log.exception("simulation %s failed", simulation.id)
            simulation.error = f"internal error: {exc}"
            state = State.FAILED
        self._end(simulation, state)

    async def _send(
        self, simulation: Simulation, principal: Principal, traffic: Traffic, count: int
    ) -> None:
        events = traffic.events(count, now_us())
        try:
            result = await self._pipeline.ingest(
                principal, events, timeout=INGEST_TIMEOUT, wait_for_room=True
            )
        except (ServiceError, *DATABASE_UNREACHABLE) as exc:
            simulation.events_failed += count
            simulation.error = getattr(exc, "message", None) or f"database unreachable: {exc}"
            log.warning("simulation %s: %d events not sent: %s", simulation.id, count, exc)
            # Give the service a moment before the next batch.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(simulation._stop.wait(), 1.0)
            return
        simulation.events_sent += result.accepted
        if result.rejected:
            simulation.events_failed += len(result.rejected)
            simulation.error = result.rejected[-1].reason

    # -- at once -------------------------------------------------------------

    async def burst(
        self,
        principal: Principal,
        campaign_ids: list[str],
        chosen: Options,
        timeout: float | None,
    ) -> Generated:
        """``count`` events by the rates, committed before it returns."""
        traffic = Traffic(principal.organization_id, campaign_ids, chosen.rates, chosen.seed)
        deadline = None if timeout is None else time.monotonic() + timeout
        accepted = 0
        left = chosen.count
        while left:
            count = min(left, self._pipeline.max_batch_events)
            left -= count
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            result = await self._pipeline.ingest(
                principal, traffic.events(count, now_us()), timeout=remaining, wait_for_room=True
            )
            accepted += result.accepted
        return Generated(chosen.count, accepted)

    async def journeys(
        self,
        principal: Principal,
        campaign_ids: list[str],
        chosen: Options,
        timeout: float | None,
    ) -> Generated:
        """One user journey per campaign, committed before it returns."""
        traffic = Traffic(principal.organization_id, campaign_ids, chosen.rates, chosen.seed)
        end = now_us()
        events: list[IncomingEvent] = []
        session_ids = []
        for campaign_id in campaign_ids:
            journey = traffic.journey(campaign_id, end, first_index=len(events))
            session_ids.append(journey[0].session_id)
            events += journey
        result = await self._pipeline.ingest(principal, events, timeout=timeout, wait_for_room=True)
        return Generated(len(events), result.accepted, session_ids)


def _no_such_campaign(campaign_id: str) -> InvalidArgument:
    return InvalidArgument(f"campaign {campaign_id!r} does not exist; create it first")
