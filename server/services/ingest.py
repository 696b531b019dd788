"""IngestService: events in, each accepted, duplicate or rejected."""

import asyncio
from collections.abc import AsyncIterator

import grpc

from clients import pb
from server import codec
from server.auth import KeyStore
from server.domain import Role
from server.errors import InvalidArgument, NotFound, PermissionDenied
from server.ingest.pipeline import IngestPipeline, IngestResult
from server.ingest.validation import IncomingEvent
from server.services.common import Authenticated, commit_budget, reports_errors

# Events of one stream validated and waiting for their commit at once: enough
# for the writer's group commit to form large batches, bounded so that a
# stream cannot take the whole buffer.
STREAM_EVENTS_IN_FLIGHT = 20_000


class IngestServicer(Authenticated, pb.IngestServiceServicer):
    def __init__(self, keys: KeyStore, pipeline: IngestPipeline) -> None:
        super().__init__(keys)
        self._pipeline = pipeline

    @reports_errors
    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        principal = await self.caller(context, Role.INGEST)
        messages = list(request.events)
        single = request.HasField("event") and not messages and not request.undecodable_events
        if request.HasField("event"):
            messages.insert(0, request.event)
        undecodable = frozenset(u.index for u in request.undecodable_events)
        result = await self._pipeline.ingest(
            principal,
            codec.decode_events(messages, undecodable=undecodable),
            codec.decode_undecodable(request.undecodable_events),
            timeout=commit_budget(context),
        )
        if single:
            _raise_if_rejected(result)
        return pb.IngestEventsResponse(
            success=result.stored > 0,
            message=_summary(result, single),
            count=result.accepted,
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[codec.encode_rejection(r) for r in result.rejected],
            timestamp=codec.now_timestamp(),
            event_id=result.event_ids.get(0, "") if single else "",
        )

    @reports_errors
    async def IngestCampaignEvent(
        self, request: pb.IngestCampaignEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestCampaignEventResponse:
        principal = await self.caller(context, Role.INGEST)
        campaign_id = request.campaign_id
        owner = await self._pipeline.campaigns.owner(campaign_id) if campaign_id else None
        if owner is None:
            raise NotFound("Campaign not found")
        if owner != principal.organization_id:
            raise PermissionDenied(f"campaign {campaign_id!r} belongs to another organization")
        event = pb.Event()
        event.CopyFrom(request.event)
        if event.campaign_id and event.campaign_id != campaign_id:
            raise InvalidArgument(
                f"the event names campaign {event.campaign_id!r} but the path names {campaign_id!r}"
            )
        event.campaign_id = campaign_id
        if not event.organization_id:
            event.organization_id = principal.organization_id
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
            event_id=result.event_ids.get(0, ""),
            duplicate=result.duplicates > 0,
        )

    @reports_errors
    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[pb.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.StreamEventsResponse:
        principal = await self.caller(context, Role.INGEST)
        total = IngestResult()
        failures: list[BaseException] = []
        in_flight: set[asyncio.Task[None]] = set()
        window = _EventWindow(STREAM_EVENTS_IN_FLIGHT)

        async def ingest(events: list[IncomingEvent]) -> None:
            try:
                # A stream waits for room in a full buffer instead of failing:
                # while it waits it reads no further, which slows the sender.
                result = await self._pipeline.ingest(
                    principal, events, timeout=commit_budget(context), wait_for_room=True
                )
                total.accepted += result.accepted
                total.duplicates += result.duplicates
                total.rejected.extend(result.rejected)
            except Exception as exc:
                failures.append(exc)
            finally:
                await window.release(len(events))

        offset = batches = 0
        try:
            async for message in request_iterator:
                if failures:
                    break
                batches += 1
                if not message.events:
                    continue  # nothing to do; not worth failing the stream over
                self._pipeline.check_batch_size(len(message.events))
                events = codec.decode_events(message.events, offset)
                offset += len(message.events)
                await window.acquire(len(events))
                task = asyncio.create_task(ingest(events))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            for task in in_flight:
                task.cancel()
        if failures:
            raise failures[0]
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
        raise InvalidArgument(f"event rejected{where}: {rejection.reason}")
