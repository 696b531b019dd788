"""The ingest path of one request: check the caller, validate each event,
dead-letter the rejected ones and hand the rest to the writer."""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain import Principal, Rejection
from server.errors import InvalidArgument, PermissionDenied, Unavailable
from server.ingest.campaigns import CampaignDirectory
from server.ingest.dead_letters import DeadLetters
from server.ingest.validation import IncomingEvent, Limits, now_us, validate
from server.ingest.writer import BatchWriter
from server.store.events import EventRow


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
    ) -> None:
        self.writer = writer
        self.campaigns = campaigns
        self.dead_letters = dead_letters
        self.limits = limits
        self.max_batch_events = max_batch_events
        self._payload_of = payload_of
        self.events_rejected = 0

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
        for event in events:
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

        if dead:
            dead.sort(key=lambda item: item[0].index)
            await self.dead_letters.record(principal.organization_id, dead)
            result.rejected = [rejection for rejection, _ in dead]
            self.events_rejected += len(dead)

        if rows:
            try:
                duplicates = await asyncio.wait_for(
                    self.writer.submit(rows, wait_for_room=wait_for_room), timeout
                )
            except TimeoutError:
                raise Unavailable(
                    "the events were not committed before the deadline; retry with the same "
                    "eventIds (retries are safe: stored events count as duplicates)"
                ) from None
            result.duplicates += duplicates
            result.accepted += len(rows) - duplicates
        return result
