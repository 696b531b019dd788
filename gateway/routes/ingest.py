"""Ingest: events in, one at a time or in batches (IngestService)."""

from typing import Any, NoReturn

from fastapi import APIRouter

from clients.pb import (
    Event,
    IngestCampaignEventRequest,
    IngestEventsRequest,
    IngestServiceStub,
    UndecodableEvent,
)
from gateway import codec, models
from gateway.deps import Call, CallOptions, CampaignIdPath, IngestStub, RawBody
from gateway.errors import bad_request
from gateway.responses import JsonResponse, respond

router = APIRouter(tags=["ingest"])

EVENT_OR_EVENTS_REQUIRED = 'Either "event" or "events" array is required'
SINGLE_EVENT_INGESTED = "Event ingested successfully"
CAMPAIGN_EVENT_INGESTED = "Analytics event ingested successfully"


@router.post(
    "/api/analytics/real-time",
    summary="Ingest one event or a batch",
    response_model=models.IngestResponse,
    responses=models.error_responses(413, 429),
    openapi_extra=models.request_body(
        models.IngestRequest,
        description='`{"event": {...}}` or `{"events": [...]}`. In a batch each event is '
        "accepted, a duplicate, or rejected on its own, with its index, field and reason; "
        "one that cannot be decoded never fails the batch. A lone event that is rejected "
        "gets 400. Rejected events are kept in the dead-letter table.",
    ),
)
async def ingest_events(body: RawBody, stub: IngestStub, call: Call) -> JsonResponse:
    document = codec.parse_body(body)
    if not isinstance(document, dict):
        raise bad_request(EVENT_OR_EVENTS_REQUIRED)
    event, events = document.get("event"), document.get("events")
    if event is not None and events is not None:
        raise bad_request('Send either "event" or "events", not both')
    request = IngestEventsRequest()
    if event is not None:
        decoded = codec.decode_event(event, 0)
        if isinstance(decoded, UndecodableEvent):
            await _refuse(decoded, stub, call)
        request.event.CopyFrom(decoded)
    elif isinstance(events, list):
        good, bad = codec.decode_events(events)
        request.events.extend(good)
        request.undecodable_events.extend(bad)
    else:
        raise bad_request(EVENT_OR_EVENTS_REQUIRED)

    response = await stub.IngestEvents(request, metadata=call.metadata, timeout=call.timeout)
    content = codec.message_to_dict(response)
    if not content["message"]:  # the server words it; this is for one that does not
        content["message"] = (
            SINGLE_EVENT_INGESTED
            if event is not None
            else f"{response.count} events ingested successfully"
        )
    return respond(content)


@router.post(
    "/api/campaigns/{campaign_id}/analytics/real-time",
    summary="Ingest one event of a campaign",
    response_model=models.CampaignEventResponse,
    responses=models.error_responses(404, 413, 429),
    openapi_extra=models.request_body(
        models.Event,
        models.IngestRequest,
        description="One bare event (or wrapped as `event`, or `events` with one element). "
        "campaignId comes from the path, organizationId from the caller's key.",
    ),
)
async def ingest_campaign_event(
    campaign_id: CampaignIdPath, body: RawBody, stub: IngestStub, call: Call
) -> JsonResponse:
    raw = _one_event(codec.parse_body(body))
    decoded = codec.decode_event(raw, 0)
    if isinstance(decoded, UndecodableEvent):
        await _refuse(decoded, stub, call)
    event: Event = decoded
    if event.campaign_id and event.campaign_id != campaign_id:
        raise bad_request(
            f"campaignId {event.campaign_id!r} does not match the campaign of the path "
            f"({campaign_id!r})",
            "campaignId",
        )
    event.campaign_id = campaign_id
    response = await stub.IngestCampaignEvent(
        IngestCampaignEventRequest(campaign_id=campaign_id, event=event),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    content = codec.message_to_dict(response)
    if not content["message"]:
        content["message"] = CAMPAIGN_EVENT_INGESTED
    return respond(content)


async def _refuse(
    undecodable: UndecodableEvent, stub: IngestServiceStub, call: CallOptions
) -> NoReturn:
    """Refuses a lone event that cannot be decoded, as the server refuses a lone invalid one.

    The server records it first, so it is kept in the dead-letter table like
    every rejected event.
    """
    await stub.IngestEvents(
        IngestEventsRequest(undecodable_events=[undecodable]),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    field = undecodable.field
    where = f" ({field})" if field else ""
    raise bad_request(f"event rejected{where}: {undecodable.reason}", field)


def _one_event(document: Any) -> Any:
    """The event of a campaign route body: bare, or in an ``event``/``events`` wrapper."""
    if not isinstance(document, dict):
        return document
    event, events = document.get("event"), document.get("events")
    if event is not None and events is not None:
        raise bad_request('Send either "event" or "events", not both')
    if event is not None:
        return event
    if events is None:
        return document
    if not isinstance(events, list) or len(events) != 1:
        raise bad_request(
            "This route takes one event; send batches to POST /api/analytics/real-time",
            "events",
        )
    return events[0]
