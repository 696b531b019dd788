"""The one place where the server meets generated code: protocol messages to
domain values and back. Pure functions, no I/O."""

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from clients import pb
from server.admin import CampaignRecord
from server.domain import Rejection
from server.ingest.validation import (
    EVENT_TYPE_NUMBERS,
    IncomingEvent,
    Limits,
    parse_uuid,
    truncate_ip,
)
from server.ingest.writer import WriterStats
from server.metrics.formulas import MICROS, CampaignMetrics
from server.metrics.reader import Dashboard
from server.observability.condition import Condition, PipelineState
from server.simulation.simulations import Options, Simulation, State
from server.store.events import EventRow
from server.store.staging_copy import jsonb
from server.updates.hub import Subscription, Update

# EventMetadata's fields by number: for the string fields, the JSON (camelCase)
# key kept in storage. Metadata is read with ListFields, which names only the
# fields that are set: cheaper than reading each of the twelve (measured).
_METADATA_FIELDS = pb.EventMetadata.DESCRIPTOR.fields_by_name
_METADATA_TEXT = {
    _METADATA_FIELDS[name].number: key
    for name, key in (
        ("session_id", "sessionId"),
        ("user_agent", "userAgent"),
        ("device_type", "deviceType"),
        ("location", "location"),
        ("ad_slot_id", "adSlotId"),
        ("episode_id", "episodeId"),
        ("show_id", "showId"),
        ("ip_address", "ipAddress"),
        ("referrer", "referrer"),
    )
}
_SESSION_ID = _METADATA_FIELDS["session_id"].number
_IP_ADDRESS = _METADATA_FIELDS["ip_address"].number
_DURATION = _METADATA_FIELDS["duration"].number
_POSITION = _METADATA_FIELDS["position"].number
_EXTRA = _METADATA_FIELDS["extra"].number
# ListFields lists fields by number, so ``extra`` comes last: its keys are
# added only where no field of EventMetadata took the key already.
assert max(f.number for f in pb.EventMetadata.DESCRIPTOR.fields) == _EXTRA
_MIN_SECONDS = -62_135_596_800  # 0001-01-01
_MAX_SECONDS = 253_402_300_799  # 9999-12-31


# -- events in -----------------------------------------------------------------


def decode_event(message: pb.Event, index: int) -> IncomingEvent:
    # The hot path of ingest: positional construction, one HasField lookup.
    has = message.HasField
    occurred_us, timestamp_error = None, ""
    if has("timestamp"):
        occurred_us, timestamp_error = _decode_timestamp(message.timestamp)
    session_id, duration, metadata, metadata_error = "", None, None, ""
    if has("metadata"):
        session_id, duration, metadata, metadata_error = _decode_metadata(message.metadata)
    return IncomingEvent(
        index,
        message.ByteSize(),
        message.event_id,
        message.event_type,
        message.campaign_id,
        message.organization_id,
        occurred_us,
        timestamp_error,
        message.value if has("value") else None,
        session_id,
        duration,
        metadata,
        message,
        metadata_error,
    )


def event_rows(
    messages: Sequence[pb.Event],
    now_us: int,
    campaign_owners: Mapping[str, str | None],
    limits: Limits,
    sizes_checked: bool = False,
) -> list[EventRow | None]:
    """The row of each event that keeps every rule, read straight from its
    message: the ingest hot path, without the ``IncomingEvent`` in between.
    None for an event that needs the full path (``decode_event``, then
    ``validation.validate``): a rule is broken (and the rejection must say
    which), its id is to be assigned, or its metadata holds ``extra`` keys
    or an IP address to truncate. Wherever this gives a row, the full path
    gives the same row (tests/server/test_ingest_properties.py).

    ``sizes_checked``: the caller knows that no event is larger than
    ``limits.max_event_bytes`` (their whole request is not; see
    ``smaller_than_an_event``), so no event's size is computed.

    One call reads a slice of events, its limits and names bound once:
    less time per event than a call per event (3.55 µs against 3.80,
    measured over slices of 100)."""
    max_id = limits.max_id_length
    max_text = limits.max_text_length
    max_session = limits.max_session_id_length
    max_value = limits.max_value
    max_duration = limits.max_duration
    max_bytes = limits.max_event_bytes
    # The times allowed: within the age limits, and a date _decode_timestamp takes.
    earliest = max(now_us - limits.max_age_us, _MIN_SECONDS * 1_000_000)
    latest = min(now_us + limits.max_future_us, _MAX_SECONDS * 1_000_000 + 999_999)
    owner_of = campaign_owners.get
    types = EVENT_TYPE_NUMBERS
    text_key = _METADATA_TEXT.get
    dumps = orjson.dumps
    rows: list[EventRow | None] = []
    append = rows.append
    for message in messages:
        campaign_id = message.campaign_id
        organization_id = message.organization_id
        event_type = message.event_type
        event_id = parse_uuid(message.event_id)
        if (
            event_id is None
            or not organization_id
            or owner_of(campaign_id) != organization_id
            or len(campaign_id) > max_id
            or len(organization_id) > max_id
            or event_type not in types
        ):
            append(None)
            continue
        has = message.HasField
        occurred_us = now_us
        if has("timestamp"):
            ts = message.timestamp
            nanos = ts.nanos
            occurred_us = ts.seconds * 1_000_000 + nanos // 1000
            if not (0 <= nanos < 1_000_000_000 and earliest <= occurred_us <= latest):
                append(None)
                continue
        value_micros = None
        if has("value"):
            value = message.value
            if not 0 <= value <= max_value:  # NaN is neither
                append(None)
                continue
            value_micros = round(value * 1_000_000)
        session_id = duration = document = None
        # Set or not, the metadata reads the same (an empty message when not).
        listed = message.metadata.ListFields()
        if listed:
            metadata: dict[str, Any] = {}
            broken = False
            for field, value in listed:
                number = field.number
                key = text_key(number)
                if key is not None:
                    if (
                        len(value) > max_text
                        or number == _IP_ADDRESS
                        or (number == _SESSION_ID and len(value) > max_session)
                    ):
                        broken = True
                        break
                    metadata[key] = value
                    if number == _SESSION_ID:
                        session_id = value
                elif number == _DURATION:
                    if not 0 <= value <= max_duration:
                        broken = True
                        break
                    duration = metadata["duration"] = value
                elif number == _POSITION:
                    metadata["position"] = value
                else:  # extra
                    broken = True
                    break
            if broken:
                append(None)
                continue
            if metadata:
                document = dumps(metadata)
                if b"\\u0000" in document:  # a NUL, perhaps
                    append(None)
                    continue
                document = jsonb(document)
        if not sizes_checked and message.ByteSize() > max_bytes:
            append(None)
            continue
        append(
            (
                organization_id,
                event_id,
                campaign_id,
                event_type,
                occurred_us,
                value_micros,
                session_id,
                duration,
                document,
            )
        )
    return rows


# The least an event read straight (``event_rows``) takes: an id of 32
# characters, with its tag and length, and the event's own.
_SMALLEST_EVENT_BYTES = 36


def smaller_than_an_event(request: Message, events: int, limits: Limits) -> bool:
    """Whether ``request``, holding ``events`` events, is no larger than one
    event may be: then none of its events is too large. False, without
    computing the size, when the request holds too many events for that."""
    max_bytes = limits.max_event_bytes
    return events * _SMALLEST_EVENT_BYTES <= max_bytes and request.ByteSize() <= max_bytes


def _decode_metadata(m: pb.EventMetadata) -> tuple[str, float | None, dict[str, Any], str]:
    """(session id, duration, the metadata as stored: camelCase keys, extras
    flat, and why ``extra`` could not be read, if so)."""
    metadata: dict[str, Any] = {}
    session_id, duration = "", None
    for field, value in m.ListFields():
        number = field.number
        key = _METADATA_TEXT.get(number)
        if key is not None:
            metadata[key] = value
            if number == _SESSION_ID:
                session_id = value
        elif number == _DURATION:
            duration = metadata["duration"] = value
        elif number == _POSITION:
            metadata["position"] = value
        elif number == _EXTRA:
            try:
                extra = json_format.MessageToDict(value)
            except ValueError as exc:  # NaN or Infinity, which JSON cannot hold
                return session_id, duration, metadata, f"metadata.extra cannot be stored: {exc}"
            for extra_key, extra_value in extra.items():
                metadata.setdefault(extra_key, extra_value)
    return session_id, duration, metadata, ""


# The codes a front end may give an event it could not decode: those this
# server gives for the same mistake in an Event (UndecodableEvent.code).
_UNDECODABLE_CODES = frozenset({"invalid_event_type"})


def decode_undecodable(
    items: Sequence[pb.UndecodableEvent], offset: int = 0
) -> list[tuple[Rejection, str]]:
    return [
        (
            Rejection(
                offset + item.index,
                item.field,
                item.code if item.code in _UNDECODABLE_CODES else "undecodable",
                item.reason,
            ),
            _truncate_payload_ip(item.payload),
        )
        for item in items
    ]


def _truncate_payload_ip(payload: str) -> str:
    """The payload with ``metadata.ipAddress`` truncated, where it can be found."""
    if "ip" not in payload.lower():
        return payload
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    metadata = event.get("metadata") if isinstance(event, dict) else None
    if not isinstance(metadata, dict):
        return payload
    for key in ("ipAddress", "ip_address"):
        if key in metadata:
            address = metadata[key]
            metadata[key] = truncate_ip(address) if isinstance(address, str) else ""
    return orjson.dumps(event).decode()


def event_payload(message: Any) -> str:
    """The event as JSON, for the dead-letter table (its IP address truncated)."""
    if message is None:
        return ""
    if message.HasField("metadata") and message.metadata.ip_address:
        copy = pb.Event()
        copy.CopyFrom(message)
        copy.metadata.ip_address = truncate_ip(copy.metadata.ip_address)
        message = copy
    try:
        return json_format.MessageToJson(message, indent=None)
    except json_format.Error:
        # Not expressible as JSON (an out-of-range timestamp, say): keep it
        # in protobuf text format rather than lose it.
        return text_format.MessageToString(message, as_one_line=True)


def _decode_timestamp(ts: Timestamp) -> tuple[int | None, str]:
    """Microseconds since the Unix epoch, or why the timestamp is invalid."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS) or not 0 <= nanos < 1_000_000_000:
        return None, "timestamp is not a valid date"
    return seconds * 1_000_000 + nanos // 1000, ""


# -- results out ---------------------------------------------------------------


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def now_timestamp() -> Timestamp:
    timestamp = Timestamp()
    stamp_now(timestamp)
    return timestamp


def stamp_now(timestamp: Timestamp) -> None:
    """Sets ``timestamp`` (a field of a message being built) to now: half the
    cost of building a ``Timestamp`` and copying it into its message."""
    # From the clock's nanoseconds: a fifth of the cost of going through datetime.
    timestamp.seconds, timestamp.nanos = divmod(time.time_ns(), 1_000_000_000)


def encode_rejection(rejection: Rejection) -> pb.RejectedEvent:
    return pb.RejectedEvent(
        index=rejection.index,
        field=rejection.field,
        reason=rejection.reason,
        code=rejection.code,
        event_id=rejection.event_id,
    )


def encode_metrics(m: CampaignMetrics) -> pb.RealTimeMetrics:
    t = m.totals
    return pb.RealTimeMetrics(
        campaign_id=m.campaign_id,
        organization_id=m.organization_id,
        timestamp=timestamp(m.timestamp),
        window_start=timestamp(m.window_start),
        time_window=m.time_window,
        impressions=t.impressions,
        clicks=t.clicks,
        conversions=t.conversions,
        ctr=m.ctr,
        conversion_rate=m.conversion_rate,
        total_spent=m.total_spent,
        cpc=m.cpc,
        cpa=m.cpa,
        engagement_rate=m.engagement_rate,
        average_view_time=m.average_view_time,
        bounce_rate=m.bounce_rate,
        ad_playbacks=t.views,
        completion_rate=m.completion_rate,
        skip_rate=m.skip_rate,
        conversion_value=m.conversion_value,
        engagements=t.engagements,
        completions=t.completions,
        skips=t.skips,
        sessions=t.sessions,
    )


def encode_dashboard(organization_id: str, d: Dashboard) -> pb.GetDashboardResponse:
    s = d.summary
    return pb.GetDashboardResponse(
        success=True,
        organization_id=organization_id,
        time_window=s.time_window,
        summary=encode_summary(s, d.active_campaigns),
        top_campaigns=[
            pb.TopCampaign(
                campaign_id=c.campaign_id,
                impressions=c.totals.impressions,
                clicks=c.totals.clicks,
                conversions=c.totals.conversions,
                ctr=c.ctr,
                spent=c.total_spent,
            )
            for c in d.top_campaigns
        ],
        trend_data=[
            pb.TrendPoint(
                timestamp=timestamp(b.start),
                impressions=b.impressions,
                clicks=b.clicks,
                conversions=b.conversions,
                spent=round(b.spent_micros / MICROS, 6),
            )
            for b in d.trend
        ],
        campaign_metrics=[encode_metrics(c) for c in d.campaigns],
        timestamp=timestamp(s.timestamp),
    )


def encode_status(
    stats: WriterStats,
    *,
    buffered: int,
    is_processing: bool,
    flush_threshold: int,
    flush_interval: float,
    capacity: int,
    events_rejected: int,
    condition: Condition,
    events_refused: int = 0,
) -> pb.PipelineStatus:
    status = pb.PipelineStatus(
        buffer_size=buffered,
        is_processing=is_processing,
        flush_threshold=flush_threshold,
        flush_interval=round(flush_interval * 1000),
        buffer_capacity=capacity,
        degraded=condition.state is not PipelineState.HEALTHY,
        degraded_reason=condition.cause,
        state=_PIPELINE_STATES[condition.state],
        serving=condition.serving,
        commit_errors=stats.commit_errors,
        events_refused=events_refused,
        events_accepted=stats.events_accepted,
        events_duplicate=stats.events_duplicate,
        events_rejected=events_rejected,
        flushes=stats.flushes,
        last_flush_events=stats.last_flush_events,
        last_flush_duration_ms=round(stats.last_flush_duration_ms, 3),
    )
    if stats.last_flush is not None:
        status.last_flush.CopyFrom(timestamp(stats.last_flush))
    if condition.since is not None:
        status.degraded_since.CopyFrom(timestamp(condition.since))
    return status


_PIPELINE_STATES = {
    PipelineState.HEALTHY: pb.PipelineState.PIPELINE_STATE_HEALTHY,
    PipelineState.DEGRADED: pb.PipelineState.PIPELINE_STATE_DEGRADED,
    PipelineState.STOPPING: pb.PipelineState.PIPELINE_STATE_STOPPING,
}


def encode_campaign(record: CampaignRecord) -> pb.Campaign:
    return pb.Campaign(
        campaign_id=record.campaign_id,
        organization_id=record.organization_id,
        name=record.name,
        create_time=timestamp(record.created_at),
    )


def encode_summary(s: CampaignMetrics, active_campaigns: int = 0) -> pb.DashboardSummary:
    t = s.totals
    return pb.DashboardSummary(
        total_impressions=t.impressions,
        total_clicks=t.clicks,
        total_conversions=t.conversions,
        total_spent=s.total_spent,
        active_campaigns=active_campaigns,
        overall_ctr=s.ctr,
        overall_conversion_rate=s.conversion_rate,
        overall_cpc=s.cpc,
        overall_cpa=s.cpa,
        average_view_time=s.average_view_time,
        total_conversion_value=s.conversion_value,
        total_ad_playbacks=t.views,
        overall_completion_rate=s.completion_rate,
        overall_skip_rate=s.skip_rate,
        overall_engagement_rate=s.engagement_rate,
    )


def encode_update(update: Update) -> pb.AnalyticsUpdate:
    return pb.AnalyticsUpdate(
        type=pb.UpdateType.UPDATE_TYPE_METRICS,
        data=pb.MetricsUpdate(
            campaign_id=update.campaign_id,
            metrics=encode_metrics(update.metrics),
            summary=encode_summary(update.summary, update.active_campaigns),
        ),
        timestamp=timestamp(update.published_at),
        organization_id=update.organization_id,
        campaign_id=update.campaign_id,
        sequence=update.sequence,
    )


def encode_subscription(subscription: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=subscription.id,
        organization_id=subscription.organization_id,
        campaign_ids=sorted(subscription.campaign_ids or ()),
        active=not subscription.closed,
        create_time=timestamp(subscription.created_at),
        time_window=subscription.time_window,
    )


# -- simulations -------------------------------------------------------------

_OPTION_FIELDS = (
    "events_per_minute",
    "duration",
    "impression_rate",
    "click_rate",
    "conversion_rate",
    "count",
    "seed",
)
_STATES = {
    State.RUNNING: pb.SimulationState.SIMULATION_STATE_RUNNING,
    State.COMPLETED: pb.SimulationState.SIMULATION_STATE_COMPLETED,
    State.STOPPED: pb.SimulationState.SIMULATION_STATE_STOPPED,
    State.FAILED: pb.SimulationState.SIMULATION_STATE_FAILED,
}


def decode_simulation_options(message: pb.SimulationOptions) -> dict[str, float | int]:
    """The options the request sets, by name (unset ones take their defaults)."""
    return {
        name: getattr(message, name)
        for name in _OPTION_FIELDS
        if message.HasField(name)  # type: ignore[arg-type]
    }


def encode_simulation_options(options: Options) -> pb.SimulationOptions:
    return pb.SimulationOptions(
        events_per_minute=options.events_per_minute,
        duration=options.duration,
        impression_rate=options.impression_rate,
        click_rate=options.click_rate,
        conversion_rate=options.conversion_rate,
        count=options.count,
        seed=options.seed,
    )


def _unix_timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def encode_simulation(simulation: Simulation) -> pb.Simulation:
    return pb.Simulation(
        id=simulation.id,
        organization_id=simulation.organization_id,
        campaign_ids=simulation.campaign_ids,
        options=encode_simulation_options(simulation.options),
        state=_STATES[simulation.state],
        events_sent=simulation.events_sent,
        events_failed=simulation.events_failed,
        start_time=_unix_timestamp(simulation.started_at),
        end_time=_unix_timestamp(simulation.ends_at),
        error=simulation.error,
    )
