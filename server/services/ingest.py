"""IngestService: events in, each accepted, duplicate or rejected."""

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence

import grpc

from clients import pb
from server import codec
from server.auth import KeyStore
from server.domain import Rejection, Role
from server.errors import InvalidArgument, Unavailable
from server.ingest.admission import Admission
from server.ingest.pipeline import IngestPipeline, IngestResult
from server.services.common import (
    Authenticated,
    campaign_not_found,
    commit_budget,
    reports_errors,
)

# Events of one stream validated and waiting for their commit at once: enough
# for the writer's group commit to form large batches, bounded so that a
# stream cannot take the whole buffer.
STREAM_EVENTS_IN_FLIGHT = 20_000
_NONE_SKIPPED: frozenset[int] = frozenset()


class IngestServicer(Authenticated, pb.IngestServiceServicer):
    def __init__(self, keys: KeyStore, pipeline: IngestPipeline) -> None:
        super().__init__(keys)
        self._pipeline = pipeline
        self._draining = asyncio.Event()

    def drain(self) -> None:
        """At shutdown: open streams stop reading at their next message,
        commit what they read and end with UNAVAILABLE saying so; new streams
        are refused. Unary calls in flight finish as usual."""
        self._draining.set()

    @reports_errors
    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        principal = await self.caller(
            context,
            Role.INGEST,
            events=len(request.events)
            + len(request.undecodable_events)
            + request.HasField("event"),
        )
        has_event = request.HasField("event")
        single = has_event and not request.events and not request.undecodable_events
        count = len(request.events) + has_event + len(request.undecodable_events)
        self._pipeline.check_batch_size(count)
        # Room is held before decoding, the costly part: under overload the
        # call is refused at once rather than queued (server.ingest.admission).
        undecodable = request.undecodable_events
        with self._pipeline.admit(count):
            sizes_checked = codec.smaller_than_an_event(request, count, self._pipeline.limits)
            if single:
                result = await self._pipeline.ingest_message(
                    principal,
                    request.event,
                    sizes_checked=sizes_checked,
                    timeout=commit_budget(context),
                )
            else:
                result = await self._pipeline.ingest_messages(
                    principal,
                    [request.event, *request.events] if has_event else request.events,
                    codec.decode_undecodable(undecodable) if undecodable else [],
                    skipped=frozenset(u.index for u in undecodable)
                    if undecodable
                    else _NONE_SKIPPED,
                    sizes_checked=sizes_checked,
                    timeout=commit_budget(context),
                )
        if single:
            _raise_if_rejected(result)
        response = pb.IngestEventsResponse(
            success=result.stored > 0,
            message=_summary(result, single),
            count=result.accepted,
            accepted=result.accepted,
            duplicates=result.duplicates,
            event_id=result.first_event_id if single else "",
        )
        if result.rejected:
            response.rejected.extend(map(codec.encode_rejection, result.rejected))
        codec.stamp_now(response.timestamp)
        return response

    @reports_errors
    async def IngestCampaignEvent(
        self, request: pb.IngestCampaignEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestCampaignEventResponse:
        principal = await self.caller(context, Role.INGEST, events=1)
        campaign_id = request.campaign_id
        await self._pipeline.campaigns.check(
            principal.organization_id, [campaign_id], campaign_not_found
        )
        if request.HasField("undecodable_event"):
            # Kept with its reason, as every rejected event, then refused.
            undecodable = codec.decode_undecodable([request.undecodable_event])
            with self._pipeline.admit(1):
                await self._pipeline.ingest(principal, [], undecodable)
            lone = request.undecodable_event
            raise InvalidArgument(f"event rejected: {lone.reason}", lone.field)
        event = pb.Event()
        event.CopyFrom(request.event)
        if event.campaign_id and event.campaign_id != campaign_id:
            raise InvalidArgument(
                f"the event names campaign {event.campaign_id!r} but the path names "
                f"{campaign_id!r}",
                "campaignId",
            )
        event.campaign_id = campaign_id
        if not event.organization_id:
            event.organization_id = principal.organization_id
        with self._pipeline.admit(1):
            result = await self._pipeline.ingest(
                principal, [codec.decode_event(event, 0)], timeout=commit_budget(context)
            )
        _raise_if_rejected(result)
        return pb.IngestCampaignEventResponse(
            success=True,
            message=(
                "Analytics event ingested successfully"
                if result.accepted
                else "Analytics event already ingested (same eventId); nothing changed"
            ),
            campaign_id=campaign_id,
            event_type=event.event_type,
            timestamp=codec.now_timestamp(),
            event_id=result.first_event_id,
            duplicate=result.duplicates > 0,
        )

    @reports_errors
    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[pb.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.StreamEventsResponse:
        principal = await self.caller(context, Role.INGEST, stream=True)
        total = IngestResult()
        failures: list[BaseException] = []
        in_flight: set[asyncio.Task[None]] = set()
        window = _EventWindow(STREAM_EVENTS_IN_FLIGHT)

        async def ingest(
            messages: Sequence[pb.Event],
            undecodable: list[tuple[Rejection, str]],
            offset: int,
            skipped: frozenset[int],
            sizes_checked: bool,
            count: int,
        ) -> None:
            try:
                # A stream waits for room in a full buffer instead of failing:
                # while it waits it reads no further, which slows the sender.
                result = await self._pipeline.ingest_messages(
                    principal,
                    messages,
                    undecodable,
                    offset=offset,
                    skipped=skipped,
                    sizes_checked=sizes_checked,
                    timeout=commit_budget(context),
                    wait_for_room=True,
                )
                total.accepted += result.accepted
                total.duplicates += result.duplicates
                total.rejected.extend(result.rejected)
            except Exception as exc:
                failures.append(exc)
            finally:
                await window.release(count)

        offset = batches = taken = 0
        admission = self._pipeline.admission
        limits = self._pipeline.limits

        async def read() -> None:
            nonlocal offset, batches, taken
            async for message in request_iterator:
                if failures:
                    break
                batches += 1
                set_apart = message.undecodable_events
                if not message.events and not set_apart:
                    continue  # nothing to do; not worth failing the stream over
                count = len(message.events) + len(set_apart)
                self._pipeline.check_batch_size(count)
                await self.stream_events(principal, count)
                # Room is taken before decoding (server.ingest.admission).
                await window.acquire(count)
                await admission.take(count)
                skipped = frozenset(offset + u.index for u in set_apart)
                undecodable = codec.decode_undecodable(set_apart, offset)
                sizes_checked = codec.smaller_than_an_event(message, count, limits)
                task = asyncio.create_task(
                    ingest(message.events, undecodable, offset, skipped, sizes_checked, count)
                )
                offset += count
                # A callback, not a finally: it runs even if the task is
                # cancelled before it starts.
                task.add_done_callback(functools.partial(_release, admission, count))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                taken = batches

        if self._draining.is_set():
            raise Unavailable(_DRAINING)
        reader = asyncio.create_task(read())
        try:
            cut_short = await _read_unless_draining(reader, self._draining)
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            reader.cancel()
            for task in in_flight:
                task.cancel()
        if failures:
            raise failures[0]
        if cut_short:
            raise Unavailable(
                f"the server is shutting down: this stream's first {taken} messages were "
                f"committed ({total.accepted} events accepted, {total.duplicates} already "
                f"stored, {len(total.rejected)} rejected); send the rest again, or the whole "
                "stream (events already stored count as duplicates)"
            )
        total.rejected.sort(key=lambda r: r.index)
        return pb.StreamEventsResponse(
            success=total.stored > 0 or offset == 0,
            message=_summary(total, single=False),
            count=total.accepted,
            accepted=total.accepted,
            duplicates=total.duplicates,
            rejected=[codec.encode_rejection(r) for r in total.rejected],
            timestamp=codec.now_timestamp(),
            batches=batches,
        )


def _release(admission: Admission, count: int, _task: object) -> None:
    admission.release(count)


_DRAINING = "the server is shutting down; send the stream to another server, or again shortly"


async def _read_unless_draining(reader: asyncio.Task[None], draining: asyncio.Event) -> bool:
    """Waits for a stream's ``reader`` to read the whole stream, or for the
    server to start draining: then the reader is stopped between two
    messages. Returns whether the stream was cut short; raises what the
    reader raised."""
    drained = asyncio.create_task(draining.wait())
    try:
        await asyncio.wait({reader, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        drained.cancel()
    if reader.done():
        reader.result()
        return False
    reader.cancel()
    await asyncio.wait({reader})
    return True


class _EventWindow:
    """At most ``limit`` events in flight (but always at least one batch)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._events = 0
        self._changed = asyncio.Condition()

    async def acquire(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._events == 0 or self._events + count <= self._limit
            )
            self._events += count

    async def release(self, count: int) -> None:
        async with self._changed:
            self._events -= count
            self._changed.notify_all()


def _summary(result: IngestResult, single: bool) -> str:
    """The seed's message ("<n> events ingested successfully"), saying also
    what was already stored and what was rejected."""
    if single:
        if result.accepted:
            return "Event ingested successfully"
        return "Event already ingested (same eventId); nothing changed"
    parts = [f"{_events(result.accepted)} ingested successfully"]
    if result.duplicates:
        parts.append(f"{_events(result.duplicates)} already ingested (same eventId)")
    if result.rejected:
        parts.append(f"{_events(len(result.rejected))} rejected")
    return "; ".join(parts)


def _events(count: int) -> str:
    return f"{count} event" if count == 1 else f"{count} events"


def _raise_if_rejected(result: IngestResult) -> None:
    if result.rejected:
        rejection = result.rejected[0]
        where = f" ({rejection.field})" if rejection.field else ""
        raise InvalidArgument(f"event rejected{where}: {rejection.reason}", rejection.field)
