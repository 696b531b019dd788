"""The ingest path of one request: check the caller, validate each event,
dead-letter the rejected ones and hand the rest to the writer."""

import logging
import operator
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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

# An event's ids, read without a Python loop (a third faster than a set
# comprehension, measured).
_ORGANIZATION_ID = operator.attrgetter("organization_id")
_CAMPAIGN_ID = operator.attrgetter("campaign_id")

# A refusal keeps the buffer reported full this long (seconds); refusals
# closer together than this are one spell of a full buffer.
FULL_BUFFER_MEMORY = 5.0


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # The event id of the call's first event (index 0), once known: the reply
    # to a single event names it (assigned, when the event came without).
    first_event_id: str = ""

    @property
    def stored(self) -> int:
        return self.accepted + self.duplicates


class _Checked:
    """What checking a call's events found: the rows to write, the events
    rejected (with their payload) and the running result."""

    __slots__ = ("_payload_of", "dead", "now", "result", "rows", "seen", "undecodable")

    def __init__(
        self,
        now: int,
        undecodable: Sequence[tuple[Rejection, str]],
        payload_of: Callable[[Any], str],
    ) -> None:
        self.now = now
        self.rows: list[EventRow] = []
        self.result = IngestResult()
        self.dead: list[tuple[Rejection, str]] = list(undecodable)
        self.seen: set[bytes] = set()  # event ids, against repeats within the call
        self.undecodable = len(undecodable)  # how many
        self._payload_of = payload_of

    def add(self, event: IncomingEvent, checked: EventRow | Rejection) -> None:
        if isinstance(checked, Rejection):
            self.dead.append((checked, self._payload_of(event.source)))
        else:
            self.accept(event.index, event.event_id, checked)

    def accept(self, index: int, event_id: str, row: EventRow) -> None:
        if index == 0:
            self.result.first_event_id = event_id
        if row[1] in self.seen:  # the same id earlier in the call
            self.result.duplicates += 1
        else:
            self.seen.add(row[1])
            self.rows.append(row)

    def accept_all(self, index: int, messages: Sequence[Any], rows: list[EventRow]) -> bool:
        """``accept`` of consecutive events (from ``index``, as ``messages``
        and their ``rows``) at once, when none repeats an id (of the call so
        far, or of ``rows``); otherwise takes none and returns False."""
        ids = {row[1] for row in rows}
        if len(ids) < len(rows) or not self.seen.isdisjoint(ids):
            return False
        if index == 0:
            self.result.first_event_id = messages[0].event_id
        self.seen |= ids
        self.rows += rows
        return True


class _Admitted:
    """Room held for a call's events, given back when the ``with`` ends. (A
    class, not a generator-based context manager: it is taken on every call.)"""

    __slots__ = ("_admission", "_count")

    def __init__(self, admission: Admission, count: int) -> None:
        self._admission = admission
        self._count = count

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._admission.release(self._count)


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
        read_rows: Callable[
            [Sequence[Any], int, Mapping[str, str | None], Limits, bool], list[EventRow | None]
        ],
        decode: Callable[[Any, int], IncomingEvent],
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.writer = writer
        self.campaigns = campaigns
        self.dead_letters = dead_letters
        self.limits = limits
        self.max_batch_events = max_batch_events
        self._payload_of = payload_of
        self._read_rows = read_rows
        self._decode = decode
        self.events_rejected = 0
        self.refusals = BufferRefusals()
        # Events held from before decoding until answered: as many as the
        # writer may buffer (see ``admit``).
        self.admission = Admission(writer.capacity)
        # Decoding and validating, one call at a time, in slices.
        self.turns = Turns()
        self._metrics = metrics or ServerMetrics()

    def admit(self, count: int) -> "_Admitted":
        """Holds room for a call's ``count`` events, from before they are
        decoded until the call is answered (``with``); refuses the call at
        once (``ResourceExhausted``, retry-after) when the ingest path already
        holds ``buffer_capacity`` events (see ``server.ingest.admission``)."""
        try:
            self.admission.take_now(count)
        except ResourceExhausted:
            self.refusals.note(count)
            self._metrics.events_refused.inc(count)
            raise
        return _Admitted(self.admission, count)

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
        campaign_ids = self._campaigns_of(principal, events)
        # Usually every campaign is known by now: no query, and no coroutine.
        owners = self.campaigns.known_owners(campaign_ids) or await self.campaigns.owners(
            campaign_ids
        )
        checked = _Checked(now_us(), undecodable, self._payload_of)
        limits = self.limits

        def check(part: Sequence[IncomingEvent]) -> None:
            for event in part:
                checked.add(event, validate(event, checked.now, owners, limits))

        if not self.turns.run_at_once(events, check):
            await self.turns.run(events, check)
        return await self._commit(principal, checked, len(events), timeout, wait_for_room)

    async def ingest_messages(
        self,
        principal: Principal,
        messages: Sequence[Any],
        undecodable: Sequence[tuple[Rejection, str]] = (),
        *,
        offset: int = 0,
        skipped: frozenset[int] = frozenset(),
        sizes_checked: bool = False,
        timeout: float | None = None,
        wait_for_room: bool = False,
    ) -> IngestResult:
        """``ingest`` of events as they came (protocol messages), numbered
        from ``offset`` in request order, leaving out the ``skipped`` indexes
        (those of ``undecodable``). An event that keeps every rule goes
        straight from its message to its row (``read_rows``); any other is
        decoded (``decode``) and validated as ``ingest`` does, so that its
        rejection says why. ``sizes_checked``: no event is larger than
        ``limits.max_event_bytes`` (their request is not)."""
        count = len(messages)
        self.check_batch_size(count + len(undecodable))
        # As a list: each pass over a protocol's repeated field makes its items
        # anew, and a pass over a list of them takes half the time (measured).
        events = list(messages)
        del messages
        campaign_ids = self._campaigns_of(principal, events)
        owners = self.campaigns.known_owners(campaign_ids) or await self.campaigns.owners(
            campaign_ids
        )
        checked = _Checked(now_us(), undecodable, self._payload_of)
        limits, read_rows, decode = self.limits, self._read_rows, self._decode
        accept = checked.accept
        index = offset

        def check(part: Sequence[Any]) -> None:
            nonlocal index
            now = checked.now
            rows = read_rows(part, now, owners, limits, sizes_checked)
            # Usually every event keeps every rule: the rows are taken at once.
            if not skipped and None not in rows and checked.accept_all(index, part, rows):  # type: ignore[arg-type]
                index += len(rows)
                return
            for message, row in zip(part, rows, strict=True):
                while index in skipped:
                    index += 1
                if row is None:
                    event = decode(message, index)
                    checked.add(event, validate(event, now, owners, limits))
                else:
                    accept(index, message.event_id, row)
                index += 1

        if not self.turns.run_at_once(events, check):
            await self.turns.run(events, check)
        # Not held while waiting for the commit: the collector walks what is.
        del events
        checked.seen.clear()
        return await self._commit(principal, checked, count, timeout, wait_for_room)

    async def ingest_message(
        self,
        principal: Principal,
        message: Any,
        *,
        sizes_checked: bool = False,
        timeout: float | None = None,
    ) -> IngestResult:
        """``ingest_messages`` of one event. Most calls, from browsers and
        services alike, carry one event that keeps every rule, for a campaign
        already known: such an event goes from its row to the writer with
        nothing around it (about 4% less of the event loop's CPU per call,
        measured alternating); any other takes ``ingest_messages``."""
        campaign_id = message.campaign_id
        owner = self.campaigns.known_owner(campaign_id)
        if owner is not None and message.organization_id == principal.organization_id:
            row = self._read_rows(
                (message,), now_us(), {campaign_id: owner}, self.limits, sizes_checked
            )[0]
            if row is not None:
                duplicates = await self._submit([row], timeout, wait_for_room=False)
                return IngestResult(1 - duplicates, duplicates, first_event_id=message.event_id)
        return await self.ingest_messages(
            principal, (message,), sizes_checked=sizes_checked, timeout=timeout
        )

    def _campaigns_of(self, principal: Principal, events: Sequence[Any]) -> set[str]:
        """The campaigns the events name; refuses the call when an event
        names another organization than the caller's."""
        for organization_id in set(map(_ORGANIZATION_ID, events)):
            if organization_id and organization_id != principal.organization_id:
                raise PermissionDenied(
                    f"the key may not write for organization {organization_id!r}"
                )
        campaign_ids = set(map(_CAMPAIGN_ID, events))
        campaign_ids.discard("")
        return campaign_ids

    async def _commit(
        self,
        principal: Principal,
        checked: _Checked,
        count: int,
        timeout: float | None,
        wait_for_room: bool,
    ) -> IngestResult:
        """Dead-letters the rejected events and commits the rows (``count``
        events were checked)."""
        rows, result, dead = checked.rows, checked.result, checked.dead
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
                    count + checked.undecodable,
                    ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())),
                    principal.organization_id,
                    extra={"organization_id": principal.organization_id, "rejected": dict(codes)},
                )

        # Events that repeat an id earlier in the call are counted here; the
        # writer counts those it stored and those already stored, once per
        # flush, whether or not their callers are still waiting.
        repeated = result.duplicates
        if rows:
            duplicates = await self._submit(rows, timeout, wait_for_room)
            result.duplicates += duplicates
            result.accepted += len(rows) - duplicates
        if repeated:
            self._metrics.events_duplicate.inc(repeated)
        return result

    async def _submit(
        self, rows: list[EventRow], timeout: float | None, wait_for_room: bool
    ) -> int:
        """Hands ``rows`` to the writer and waits for their commit; returns
        how many of them were already stored."""
        try:
            return await self.writer.submit(rows, wait_for_room=wait_for_room, timeout=timeout)
        except ResourceExhausted:
            self.refusals.note(len(rows))
            self._metrics.events_refused.inc(len(rows))
            raise
        except TimeoutError:
            raise Unavailable(
                "the events were not committed before the deadline; retry with the same "
                "eventIds (retries are safe: stored events count as duplicates)"
            ) from None
