"""Subscriptions: create and remove, poll queued updates, or receive them as
Server-Sent Events (SubscriptionService)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from starlette.types import Receive, Scope, Send

from clients.pb import (
    CreateSubscriptionRequest,
    DeleteSubscriptionRequest,
    GetSubscriptionRequest,
    GetUpdatesRequest,
)
from gateway import codec, models
from gateway.deps import Call, CallOptions, RawBody, SubscriptionStub
from gateway.errors import bad_request
from gateway.responses import JsonResponse, respond
from gateway.updates import UpdateStreams

router = APIRouter(tags=["subscriptions"])

SUBSCRIPTION_ID_REQUIRED = "subscriptionId is required"
SubscriptionIdQuery = Annotated[
    str | None,
    Query(alias="subscriptionId", description="The subscription's id (from subscribe)."),
]
RequiredSubscriptionIdQuery = Annotated[
    str,
    Query(
        alias="subscriptionId",
        description="The subscription's id (from subscribe).",
        json_schema_extra={"minLength": 1},
    ),
]


@router.post(
    "/api/analytics/real-time/subscribe",
    summary="Subscribe to live updates of an organization's campaigns",
    response_model=models.SubscriptionResponse,
    responses=models.error_responses(404),
    openapi_extra=models.request_body(
        models.NewSubscription,
        description="The organization and, optionally, the campaigns to follow.",
    ),
)
async def subscribe(body: RawBody, stub: SubscriptionStub, call: Call) -> JsonResponse:
    fields = codec.parse_body(body)
    if not isinstance(fields, dict):
        raise bad_request("The body must be a JSON object")
    organization_id = fields.get("organizationId") or fields.get("organization_id")
    if not organization_id or not isinstance(organization_id, str):
        raise bad_request("organizationId is required", "organizationId")
    # null is "not given"; any other value must have the right type (an empty
    # object must not pass for "no campaigns", which follows them all).
    campaign_ids = fields.get("campaignIds", fields.get("campaign_ids"))
    if campaign_ids is None:
        campaign_ids = []
    if not isinstance(campaign_ids, list) or not all(isinstance(c, str) for c in campaign_ids):
        raise bad_request("campaignIds must be an array of campaign ids", "campaignIds")
    time_window = fields.get("timeWindow", fields.get("time_window"))
    if time_window is None:
        time_window = 0
    if not isinstance(time_window, int) or isinstance(time_window, bool):
        raise bad_request("timeWindow must be a whole number of seconds", "timeWindow")
    response = await stub.CreateSubscription(
        CreateSubscriptionRequest(
            organization_id=organization_id, campaign_ids=campaign_ids, time_window=time_window
        ),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    return respond(codec.message_to_dict(response))


@router.delete(
    "/api/analytics/real-time/subscribe",
    summary="Remove a subscription",
    response_model=models.SubscriptionRemovedResponse,
    responses=models.error_responses(404),
    openapi_extra=models.KEY_OPTIONAL,
)
async def unsubscribe(
    stub: SubscriptionStub,
    call: Call,
    body: RawBody,
    subscription_id: SubscriptionIdQuery = None,
) -> JsonResponse:
    if not subscription_id and body.strip():
        fields = codec.parse_body(body)
        if isinstance(fields, dict):
            subscription_id = fields.get("subscriptionId") or fields.get("subscription_id")
    if not subscription_id or not isinstance(subscription_id, str):
        raise bad_request(SUBSCRIPTION_ID_REQUIRED, "subscriptionId")
    response = await stub.DeleteSubscription(
        DeleteSubscriptionRequest(subscription_id=subscription_id),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    return respond(codec.message_to_dict(response))


@router.get(
    "/api/analytics/real-time/updates",
    summary="Get a subscription's updates: queued ones as JSON, or a live stream (SSE)",
    response_model=models.UpdatesResponse,
    responses={
        **models.error_responses(404),
        200: {
            "description": "JSON (the queued updates; the queue is drained), or with "
            "format=sse a text/event-stream of frames: connected, update (with id:), "
            "heartbeat.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    openapi_extra=models.KEY_OPTIONAL,
)
async def updates(
    stub: SubscriptionStub,
    call: Call,
    subscription_id: RequiredSubscriptionIdQuery,
    response_format: Annotated[
        Literal["json", "sse"], Query(alias="format", description="json (polling) or sse.")
    ] = "json",
    last_event_id_header: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Set by a reconnecting EventSource."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(alias="lastEventId", description="Resume: start with the current numbers."),
    ] = None,
) -> Any:
    if not subscription_id:
        raise bad_request(SUBSCRIPTION_ID_REQUIRED, "subscriptionId")
    if response_format == "sse":
        # Refuse an unknown or foreign subscription with a plain error, before
        # the stream starts.
        await stub.GetSubscription(
            GetSubscriptionRequest(subscription_id=subscription_id),
            metadata=call.metadata,
            timeout=call.timeout,
        )
        resume = bool(last_event_id_header or last_event_id)
        return EventStream(subscription_id, call, resume)
    response = await stub.GetUpdates(
        GetUpdatesRequest(subscription_id=subscription_id),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    return respond(codec.message_to_dict(response))


class EventStream(Response):
    """The SSE response, for an app served without ``EventStreamFastPath``
    in front (which serves the same streams outside the middleware): the
    app's ``UpdateStreams`` writes the frames to the connection."""

    media_type = "text/event-stream"

    def __init__(self, subscription_id: str, call: CallOptions, resume: bool) -> None:
        super().__init__(status_code=200, media_type=self.media_type)
        self.subscription_id = subscription_id
        self.call = call
        self.resume = resume

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams: UpdateStreams = scope["app"].state.update_streams
        await streams.respond(self.subscription_id, self.call.metadata, self.resume, send, receive)
