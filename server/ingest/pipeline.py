"""The ingest path of one request: check the caller, validate each event,
dead-letter the rejected ones and hand the rest to the writer."""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.domain import Principal, Rejection
from server.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unavailable
from server.ingest.admission import Admission
from server.ingest.campaigns import CampaignDirectory
from server.ingest.dead_letters import DeadLetters
from server.ingest.turns import Turns
from server.ingest.validation import IncomingEvent, Limits, now_us, validate
from server.ingest.writer import BatchWriter
from server.observability.metrics import ServerMetrics
from server.store.events import EventRow

log = logging.getLogger(__name__)

# A refusal keeps the buffer reported full this long (seconds); refusals
# closer together than this are one spell of a full buffer.
FULL_BUFFER_MEMORY = 5.0


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Index of each event in the request -> its event id, once known.
    event_ids: dict[int, str] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        return self.accepted + self.duplicates


@dataclass(slots=True)
class BufferRefusals:
    """Events refused because the buffer was full, and the current spell."""

    events: int = 0
    since: datetime | None = None  # start of the spell
    last: float = float("-inf")  # monotonic time of the last refusal

    def note(self, count: int) -> None:
        now = time.monotonic()
        if now - self.last > FULL_BUFFER_MEMORY:
            self.since = datetime.now(UTC)
        self.last = now
        self.events += count

    def full_since(self) -> datetime | None:
        """Since when the buffer has been full, while refusals go on."""
        return self.since if time.monotonic() - self.last <= FULL_BUFFER_MEMORY else None


class IngestPipeline:
    def __init__(
        self,
        writer: BatchWriter,
        campaigns: CampaignDirectory,
        dead_letters: DeadLetters,
        *,
        limits: Limits,
        max_batch_events: int,
        payload_of: Callable[[Any], str],
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.writer = writer
        self.campaigns = campaigns
        self.dead_letters = dead_letters
        self.limits = limits
        self.max_batch_events = max_batch_events
        self._payload_of = payload_of
        self.events_rejected = 0
        self.refusals = BufferRefusals()
        # Events held from before decoding until answered: as many as the
        # writer may buffer (see ``admit``).
        self.admission = Admission(writer.capacity)
        # Decoding and validating, one call at a time, in slices.
        self.turns = Turns()
        self._metrics = metrics or ServerMetrics()

    @contextlib.contextmanager
    def admit(self, count: int) -> Iterator[None]:
        """Holds room for a call's ``count`` events, from before they are
        decoded until the call is answered; refuses the call at once
        (``ResourceExhausted``, retry-after) when the ingest path already
        holds ``buffer_capacity`` events (see ``server.ingest.admission``)."""
        try:
            self.admission.take_now(count)
        except ResourceExhausted:
            self.refusals.note(count)
            self._metrics.events_refused.inc(count)
            raise
        try:
            yield
        finally:
            self.admission.release(count)

    def check_batch_size(self, count: int) -> None:
        if count == 0:
            raise InvalidArgument('the request holds no events: send "event" or "events"')
        if count > self.max_batch_events:
            raise InvalidArgument(
                f"a batch holds at most {self.max_batch_events} events; this one holds {count}: "
                "split it"
            )

    async def ingest(
        self,
        principal: Principal,
        events: Sequence[IncomingEvent],
        undecodable: Sequence[tuple[Rejection, str]] = (),
        timeout: float | None = None,
        wait_for_room: bool = False,
    ) -> IngestResult:
        """Validates and commits ``events``; returns once the accepted ones are
        durable. ``undecodable`` are events a front end could not decode, with
        their payload: they are rejected and dead-lettered. A full buffer
        raises ``ResourceExhausted``, or with ``wait_for_room`` is waited out
        (within ``timeout``)."""
        self.check_batch_size(len(events) + len(undecodable))
        for event in events:
            if event.organization_id and event.organization_id != principal.organization_id:
                raise PermissionDenied(
                    f"the key may not write for organization {event.organization_id!r}"
                )

        owners = await self.campaigns.owners({e.campaign_id for e in events if e.campaign_id})
        now = now_us()
        rows: list[EventRow] = []
        result = IngestResult()
        dead: list[tuple[Rejection, str]] = [(r, payload) for r, payload in undecodable]
        seen: set[bytes] = set()

        def check(part: Sequence[IncomingEvent]) -> None:
            for event in part:
                checked = validate(event, now, owners, self.limits)
                if isinstance(checked, Rejection):
                    dead.append((checked, self._payload_of(event.source)))
                    continue
                result.event_ids[event.index] = event.event_id
                if checked[1] in seen:
                    result.duplicates += 1
                    continue
                seen.add(checked[1])
                rows.append(checked)

        await self.turns.run(events, check)

        if dead:
            dead.sort(key=lambda item: item[0].index)
            await self.dead_letters.record(principal.organization_id, dead)
            result.rejected = [rejection for rejection, _ in dead]
            self.events_rejected += len(dead)
            self._metrics.count_rejected(result.rejected)
            if log.isEnabledFor(logging.INFO):
                codes = Counter(rejection.code for rejection in result.rejected)
                log.info(
                    "%d of %d events rejected (%s) for organization %s",
                    len(dead),
                    len(events) + len(undecodable),
                    ", ".join(f"{code}: {count}" for code, count in sorted(codes.items())),
                    principal.organization_id,
                    extra={"organization_id": principal.organization_id, "rejected": dict(codes)},
                )

        if rows:
            try:
                async with asyncio.timeout(timeout):
                    duplicates = await self.writer.submit(rows, wait_for_room=wait_for_room)
            except ResourceExhausted:
                self.refusals.note(len(rows))
                self._metrics.events_refused.inc(len(rows))
                raise
            except TimeoutError:
                raise Unavailable(
                    "the events were not committed before the deadline; retry with the same "
                    "eventIds (retries are safe: stored events count as duplicates)"
                ) from None
            result.duplicates += duplicates
            result.accepted += len(rows) - duplicates
        if result.accepted:
            self._metrics.events_accepted.inc(result.accepted)
        if result.duplicates:
            self._metrics.events_duplicate.inc(result.duplicates)
        return result
