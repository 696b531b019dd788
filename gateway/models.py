"""The JSON the REST routes take and give, as pydantic models for the API description.

These models describe; they do not validate. Request bodies are decoded event by
event by ``gateway.codec``, which is more lenient than a schema can say (an event
of a batch that it cannot decode is reported as rejected, not refused with the
batch), and responses are written from the server's messages.
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from clients.pb import EventType
from gateway.codec import enum_word

__all__ = [
    "Campaign",
    "CampaignEventResponse",
    "CampaignListResponse",
    "CampaignMetricsResponse",
    "CampaignResponse",
    "DashboardResponse",
    "DashboardSummary",
    "ErrorResponse",
    "Event",
    "EventMetadata",
    "IngestRequest",
    "IngestResponse",
    "NewCampaign",
    "PipelineStatus",
    "PipelineStatusResponse",
    "RealTimeMetrics",
    "RejectedEvent",
    "SimulateRequest",
    "SimulateResponse",
    "Simulation",
    "SimulationOptions",
    "SimulationStatus",
    "SimulationStatusResponse",
    "TopCampaign",
    "TrendPoint",
    "TrendsResponse",
]

_EVENT_TYPE_WORDS = [
    str(enum_word(EventType.DESCRIPTOR, value.number))
    for value in EventType.DESCRIPTOR.values
    if value.number != 0
]
_EVENT_TYPE_NAMES = [value.name for value in EventType.DESCRIPTOR.values if value.number != 0]

EventTypeWord = Annotated[
    str,
    Field(
        description="The event type: one of the seed's words.",
        json_schema_extra={"enum": _EVENT_TYPE_WORDS},
    ),
]
Time = Annotated[datetime, Field(description="ISO 8601, UTC, with milliseconds.")]
Count = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(description="A percentage (0 when its denominator is 0).")]


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


class EventMetadata(BaseModel):
    """Context of an event. Keys not listed here are kept as they are (in ``extra``)."""

    model_config = ConfigDict(extra="allow")

    sessionId: str | None = None
    userAgent: str | None = None
    deviceType: str | None = Field(None, examples=["mobile"])
    location: str | None = Field(None, examples=["New York, NY"])
    duration: float | str | None = Field(None, description="Seconds the content was played.")
    position: int | str | None = Field(None, description="Position of the ad slot.")
    adSlotId: str | None = None
    episodeId: str | None = None
    showId: str | None = None
    ipAddress: str | None = Field(None, description="Kept only truncated (/24, /48).")
    referrer: str | None = None
    extra: dict[str, Any] | None = Field(None, description="Free keys, as an object.")


class Event(BaseModel):
    """One analytics event. snake_case keys are accepted too.

    In a batch, an event that cannot be decoded (wrong types, an unknown event
    type, a bad time, NaN) does not fail the request: it is reported in
    ``rejected`` with its index, field and reason, and kept in the dead-letter
    table.
    """

    eventId: str | None = Field(
        None, description="Idempotency key (a UUID); a retry with the same id changes nothing."
    )
    eventType: Annotated[
        str,
        Field(
            description="One of the seed's words, or the protocol's enum name.",
            json_schema_extra={"enum": _EVENT_TYPE_WORDS + _EVENT_TYPE_NAMES},
        ),
    ]
    campaignId: str = Field(examples=["camp_123"])
    organizationId: str | None = Field(
        None, examples=["org_456"], description="Required, except on the campaign route."
    )
    timestamp: datetime | int | None = Field(
        None, description="ISO 8601 text or epoch milliseconds; the time of receipt when absent."
    )
    value: float | str | None = Field(
        None,
        examples=[1.5],
        description="Money: the event's cost, or for a conversion its value (revenue).",
    )
    metadata: EventMetadata | None = None


class IngestRequest(BaseModel):
    """One event (``event``) or a batch (``events``, at most 5,000)."""

    event: Event | None = None
    events: list[Event] | None = None


class NewCampaign(BaseModel):
    """A campaign to create in the caller's organization."""

    campaignId: str = Field(description="Unique across organizations.", examples=["camp_123"])
    organizationId: str | None = Field(None, description="Defaults to the caller's organization.")
    name: str | None = Field("", examples=["Summer launch"], description="null: no name.")


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


class RejectedEvent(BaseModel):
    index: int = Field(description="Position of the event in the request.")
    field: str = Field(description="The event's field that was wrong (camelCase).")
    reason: str
    code: str = Field(description="Stable machine-readable code, e.g. campaign_not_found.")
    eventId: str


class IngestResponse(BaseModel):
    success: bool = Field(description="False when no event was accepted or already stored.")
    message: str = Field(examples=["Event ingested successfully"])
    count: Count = Field(description="Events newly ingested (the same as accepted).")
    accepted: Count = Field(description="Events newly committed.")
    duplicates: Count = Field(description="Events whose eventId was already stored.")
    rejected: list[RejectedEvent]
    timestamp: Time
    eventId: str = Field(description="The event's id, when the request carried one event.")


class CampaignEventResponse(BaseModel):
    success: bool
    message: str = Field(examples=["Analytics event ingested successfully"])
    campaignId: str
    eventType: EventTypeWord
    timestamp: Time
    eventId: str
    duplicate: bool = Field(description="The eventId was already stored; nothing changed.")


class RealTimeMetrics(BaseModel):
    """Metrics of one campaign over a window of ``timeWindow`` seconds ending at ``timestamp``."""

    campaignId: str
    timestamp: Time
    impressions: Count
    clicks: Count
    conversions: Count
    ctr: Rate
    conversionRate: Rate
    totalSpent: float
    cpc: float
    cpa: float
    engagementRate: Rate
    averageViewTime: float = Field(description="Seconds.")
    bounceRate: Rate
    adPlaybacks: Count = Field(description="Views.")
    completionRate: Rate
    skipRate: Rate
    conversionValue: float = Field(description="Revenue of conversions.")
    engagements: Count
    completions: Count
    skips: Count
    organizationId: str
    timeWindow: int = Field(description="Seconds.")
    windowStart: Time
    sessions: Count


class CampaignMetricsResponse(BaseModel):
    success: bool
    metrics: RealTimeMetrics | None = Field(description="null when the window had no events.")
    message: str | None = Field(None, examples=["No recent analytics data found"])
    timeWindow: int
    timestamp: Time


class PipelineStatus(BaseModel):
    bufferSize: Count = Field(description="Events waiting for the next flush.")
    isProcessing: bool
    lastFlush: Time | None = Field(description="End of the last flush; null before the first.")
    flushThreshold: Count
    flushInterval: Count = Field(description="Milliseconds.")
    bufferCapacity: Count
    degraded: bool = Field(description="The state is not healthy; degradedReason says why.")
    degradedReason: str = Field(
        description='What stands in the way, since when: "PostgreSQL unreachable since '
        '<time>: <error>", "buffer full since <time>: ...", "the server is stopping ...".'
    )
    eventsAccepted: Count
    eventsDuplicate: Count
    eventsRejected: Count
    flushes: Count
    lastFlushEvents: Count
    lastFlushDurationMs: float
    state: str = Field(
        description="healthy; degraded (PostgreSQL unreachable, or the buffer full); stopping.",
        json_schema_extra={"enum": ["healthy", "degraded", "stopping"]},
    )
    degradedSince: Time | None = Field(description="Since when it is not healthy; null if it is.")
    serving: bool = Field(
        description="What the gRPC health check answers: SERVING (true) unless PostgreSQL is "
        "unreachable or the server is stopping."
    )
    commitErrors: Count = Field(
        description="Failed attempts to commit a flush (unreachable, conflict, refused)."
    )
    eventsRefused: Count = Field(description="Events refused because the buffer was full (429).")


class PipelineStatusResponse(BaseModel):
    status: PipelineStatus
    metrics: RealTimeMetrics | None = Field(
        description="Metrics of campaignId, when asked for and active in the window."
    )
    organizationMetrics: list[RealTimeMetrics] | None = Field(
        description="Metrics of each active campaign of organizationId; null when not asked."
    )
    timeWindow: int
    timestamp: Time


class DashboardSummary(BaseModel):
    totalImpressions: Count
    totalClicks: Count
    totalConversions: Count
    totalSpent: float
    activeCampaigns: Count = Field(description="Campaigns with events in the window.")
    overallCtr: Rate
    overallConversionRate: Rate
    overallCpc: float
    overallCpa: float
    averageViewTime: float
    totalConversionValue: float
    totalAdPlaybacks: Count
    overallCompletionRate: Rate
    overallSkipRate: Rate
    overallEngagementRate: Rate


class TopCampaign(BaseModel):
    campaignId: str
    impressions: Count
    clicks: Count
    conversions: Count
    ctr: Rate
    spent: float


class TrendPoint(BaseModel):
    timestamp: Time = Field(description="Start of the bucket.")
    impressions: Count
    clicks: Count
    conversions: Count
    spent: float


class DashboardResponse(BaseModel):
    success: bool
    organizationId: str
    timeWindow: int
    summary: DashboardSummary
    topCampaigns: list[TopCampaign] = Field(description="Up to 5, by impressions.")
    trendData: list[TrendPoint] = Field(description="Up to 60 buckets, oldest first.")
    campaignMetrics: list[RealTimeMetrics]
    timestamp: Time


class Campaign(BaseModel):
    campaignId: str
    organizationId: str
    name: str
    createTime: Time | None


class CampaignResponse(BaseModel):
    campaign: Campaign
    timestamp: Time


class CampaignListResponse(BaseModel):
    campaigns: list[Campaign]
    timestamp: Time


class NewSubscription(BaseModel):
    organizationId: str = Field(examples=["org_456"])
    campaignIds: list[str] | None = Field(
        None, description="The campaigns to follow; none: every campaign of the organization."
    )
    timeWindow: int | None = Field(
        None, description="Window of the metrics snapshots, seconds (default 3600)."
    )


class Subscription(BaseModel):
    id: str = Field(description="An unguessable capability, bound to the organization.")
    organizationId: str
    campaignIds: list[str] = Field(description="Empty: every campaign.")
    active: bool
    createTime: Time
    timeWindow: int


class SubscriptionResponse(BaseModel):
    success: bool
    subscription: Subscription
    timestamp: Time


class SubscriptionRemovedResponse(BaseModel):
    success: bool
    message: str = Field(examples=["Subscription removed"])
    subscriptionId: str
    timestamp: Time


class MetricsUpdate(BaseModel):
    campaignId: str
    metrics: RealTimeMetrics
    summary: DashboardSummary = Field(description="The organization's totals after the change.")


class AnalyticsUpdate(BaseModel):
    type: str = Field(examples=["metrics"])
    data: MetricsUpdate
    timestamp: Time
    organizationId: str
    campaignId: str
    sequence: Count = Field(description="Increases with every update the server publishes.")


class UpdatesResponse(BaseModel):
    success: bool
    subscriptionId: str
    updates: list[AnalyticsUpdate] = Field(description="The queued updates; the queue is drained.")
    count: Count
    timestamp: Time


class TrendsResponse(BaseModel):
    success: bool
    organizationId: str
    campaignId: str = Field(description="Empty for the organization's trend.")
    timeWindow: Count = Field(description="Seconds the points cover: points x step.")
    step: Count = Field(description="Seconds per point.")
    totals: RealTimeMetrics = Field(description="The metrics over all the points.")
    points: list[RealTimeMetrics] = Field(
        description="Oldest first, aligned to multiples of step (UTC); each covers step "
        "seconds from its windowStart. A point without events is zeros."
    )
    timestamp: Time


class SimulationOptions(BaseModel):
    """Knobs of a simulation; an unset one takes its default."""

    eventsPerMinute: float | None = Field(
        None, examples=[120], description="start: events per minute (default 60, at most 600,000)."
    )
    duration: float | None = Field(
        None, examples=[30], description="start: minutes it runs (default 60, at most 10,080)."
    )
    impressionRate: float | None = Field(
        None, examples=[0.7], description="Share of impressions (default 0.7)."
    )
    clickRate: float | None = Field(None, examples=[0.25], description="Share of clicks (0.25).")
    conversionRate: float | None = Field(
        None,
        examples=[0.05],
        description="Share of conversions (0.05). The three rates add up to at most 1; the rest "
        "is spread over view, engagement, completion and skip.",
    )
    count: int | None = Field(
        None, examples=[500], description="burst: events (default 100, at most 100,000)."
    )
    seed: int | None = Field(
        None, description="Makes the events reproducible (but for their ids and times)."
    )


class SimulateRequest(BaseModel):
    action: str = Field(
        "start",
        description="start, stop, burst or journey (one user journey per campaign).",
        json_schema_extra={"enum": ["start", "stop", "burst", "journey"]},
    )
    organizationId: str = Field(examples=["org_456"])
    campaignIds: list[str] | None = Field(
        None, examples=[["camp_123", "camp_124"]], description="Required but for stop."
    )
    options: SimulationOptions | None = None
    simulationId: str | None = Field(
        None, description="stop: the simulation to stop; none stops all of the organization's."
    )


class Simulation(BaseModel):
    id: str
    organizationId: str
    campaignIds: list[str]
    options: SimulationOptions = Field(description="The options in use, defaults filled in.")
    state: str = Field(
        description="running, completed, stopped or failed.",
        json_schema_extra={"enum": ["running", "completed", "stopped", "failed"]},
    )
    eventsSent: Count = Field(description="Events accepted so far.")
    eventsFailed: Count = Field(description="Events rejected, or not committed.")
    startTime: Time
    endTime: Time = Field(description="When it ends (running) or ended.")
    error: str = Field(description="Why it failed, or why events were not committed.")


class SimulateResponse(BaseModel):
    success: bool
    message: str = Field(examples=["Analytics simulation started"])
    campaignIds: list[str]
    options: SimulationOptions | None
    simulation: Simulation | None = Field(description="start: the new simulation.")
    stopped: list[Simulation] = Field(description="stop: the simulations stopped.")
    count: Count = Field(description="burst, journey: events generated.")
    accepted: Count = Field(description="burst, journey: events committed as new.")
    sessionIds: list[str] = Field(description="journey: each campaign's session.")
    timestamp: Time


class SimulationStatus(BaseModel):
    isRunning: bool
    simulations: list[Simulation] = Field(description="Running ones, then recently ended ones.")
    eventsSent: Count


class SimulationStatusResponse(BaseModel):
    success: bool
    status: SimulationStatus
    timestamp: Time


class ErrorResponse(BaseModel):
    """An error, in the grpc-gateway style."""

    error: str = Field(description="What was wrong.")
    code: int = Field(description="The gRPC status code number.")
    message: str = Field(description="Same as error.")
    details: list[dict[str, Any]] = Field(
        description="Status details, such as google.rpc.BadRequest field violations."
    )
    timestamp: Time


# ---------------------------------------------------------------------------
# Route descriptions
# ---------------------------------------------------------------------------

#: Request body models, added to the API description's components.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    Event,
    IngestRequest,
    NewCampaign,
    NewSubscription,
    SimulateRequest,
)

_ERROR_DESCRIPTIONS = {
    400: "The request is malformed, or a parameter or event is invalid.",
    401: "No API key, or an unknown one.",
    403: "The key may not act on this organization, or lacks the role.",
    404: "The campaign (or subscription, or simulation) does not exist.",
    409: "The id is taken.",
    413: "The body is larger than the gateway accepts.",
    429: "The ingest buffer is full (or a limit is reached): retry after Retry-After seconds.",
    503: "The server or its database cannot be reached: retry after Retry-After seconds.",
    504: "The server did not answer within the deadline.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, for the API description."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in (400, 401, 403, *statuses, 503, 504)
    }
    responses["default"] = {"model": ErrorResponse, "description": "Any other error."}
    return responses


# The subscription id is a capability: routes that take one need no key (a
# browser's EventSource cannot send one). FastAPI adds these requirements to
# the key's, so the route reads "the key, or nothing".
KEY_OPTIONAL: dict[str, Any] = {"security": [{}]}


def request_body(*models: type[BaseModel], description: str) -> dict[str, Any]:
    """An ``openapi_extra`` naming the request body's models (read by the route, not FastAPI)."""
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in models]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }
