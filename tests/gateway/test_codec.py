"""codec: messages to the seed's JSON, and the seed's JSON events to messages."""

import json
import math

import orjson
import pytest
from google.protobuf import struct_pb2

from clients.pb import (
    Campaign,
    Event,
    EventType,
    GetCampaignMetricsResponse,
    GetDashboardResponse,
    GetPipelineStatusResponse,
    IngestCampaignEventResponse,
    IngestEventsResponse,
    PipelineStatus,
    RealTimeMetrics,
    RejectedEvent,
    UndecodableEvent,
)
from gateway import codec, models

# ---------------------------------------------------------------------------
# Messages -> JSON
# ---------------------------------------------------------------------------


def test_names_are_camel_case_and_counters_are_numbers() -> None:
    metrics = RealTimeMetrics(
        campaign_id="camp_123",
        impressions=2**40,
        clicks=45,
        conversion_rate=6.666666666666667,
        total_spent=67.5,
        ad_playbacks=7,
        time_window=3600,
    )

    out = codec.message_to_dict(metrics)

    assert out["campaignId"] == "camp_123"
    assert out["impressions"] == 2**40 and isinstance(out["impressions"], int)
    assert out["conversionRate"] == 6.666666666666667
    assert out["totalSpent"] == 67.5
    assert out["adPlaybacks"] == 7
    assert out["timeWindow"] == 3600
    assert "campaign_id" not in out and "total_spent" not in out
    # Serialised as JSON numbers, not the strings of proto3 JSON.
    assert b'"impressions":1099511627776' in orjson.dumps(out)


def test_every_scalar_is_present_even_when_zero() -> None:
    out = codec.message_to_dict(RealTimeMetrics())

    assert set(out) == {field.json_name for field in RealTimeMetrics.DESCRIPTOR.fields}
    assert out["impressions"] == 0
    assert out["ctr"] == 0.0
    assert out["campaignId"] == ""
    assert out["bounceRate"] == 0.0


def test_unset_messages_are_null() -> None:
    response = GetPipelineStatusResponse(status=PipelineStatus(buffer_size=25))

    out = codec.message_to_dict(response)

    assert out["metrics"] is None
    assert out["timestamp"] is None
    assert out["status"]["bufferSize"] == 25
    assert out["status"]["isProcessing"] is False
    assert out["status"]["lastFlush"] is None
    assert out["organizationMetrics"] == []
    empty = codec.message_to_dict(GetCampaignMetricsResponse(success=True))
    assert empty["metrics"] is None


def test_enums_are_the_seeds_words() -> None:
    response = IngestCampaignEventResponse(event_type=EventType.EVENT_TYPE_CLICK)

    assert codec.message_to_dict(response)["eventType"] == "click"
    words = [
        codec.enum_word(EventType.DESCRIPTOR, number)
        for number in EventType.DESCRIPTOR.values_by_number
    ]
    assert words == [
        "unspecified",
        "impression",
        "click",
        "conversion",
        "view",
        "engagement",
        "completion",
        "skip",
    ]
    # A value from a newer protocol stays a number.
    assert codec.enum_word(EventType.DESCRIPTOR, 42) == 42


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (1_752_582_600, 0, "2025-07-15T12:30:00.000Z"),
        (1_752_582_600, 123_456_789, "2025-07-15T12:30:00.123Z"),
        (0, 999_999_999, "1970-01-01T00:00:00.999Z"),
        (-1, 0, "1969-12-31T23:59:59.000Z"),
        (-62_135_596_800, 0, "0001-01-01T00:00:00.000Z"),
    ],
)
def test_timestamps_are_iso_utc_with_milliseconds(seconds: int, nanos: int, text: str) -> None:
    response = IngestEventsResponse()
    response.timestamp.seconds = seconds
    response.timestamp.nanos = nanos

    assert codec.message_to_dict(response)["timestamp"] == text
    assert codec.timestamp_text(seconds, nanos) == text


def test_now_text_has_the_same_shape() -> None:
    text = codec.now_text()

    assert len(text) == len("2025-07-15T12:30:00.000Z")
    assert text.endswith("Z") and text[19] == "."


def test_repeated_and_nested_messages() -> None:
    response = IngestEventsResponse(
        success=True,
        count=2,
        rejected=[RejectedEvent(index=1, field="eventType", reason="unknown", code="bad")],
    )
    dashboard = GetDashboardResponse()
    dashboard.trend_data.add(impressions=3).timestamp.FromSeconds(60)

    out = codec.message_to_dict(response)

    assert out["rejected"] == [
        {"index": 1, "field": "eventType", "reason": "unknown", "code": "bad", "eventId": ""}
    ]
    assert codec.message_to_dict(dashboard)["trendData"] == [
        {
            "timestamp": "1970-01-01T00:01:00.000Z",
            "impressions": 3,
            "clicks": 0,
            "conversions": 0,
            "spent": 0.0,
        }
    ]


def test_optional_scalars_and_struct() -> None:
    event = Event(event_type=EventType.EVENT_TYPE_VIEW)
    event.metadata.duration = 12.5
    event.metadata.extra.update({"plan": "pro", "tags": [1, 2.5, None], "nested": {"ok": True}})

    out = codec.message_to_dict(event)

    assert out["value"] is None  # optional, unset
    assert out["eventType"] == "view"
    assert out["metadata"]["duration"] == 12.5
    assert out["metadata"]["position"] is None
    assert out["metadata"]["extra"] == {
        "plan": "pro",
        "tags": [1, 2.5, None],
        "nested": {"ok": True},
    }


def test_documented_models_name_every_field_the_codec_writes() -> None:
    pairs = [
        (IngestEventsResponse, models.IngestResponse),
        (IngestCampaignEventResponse, models.CampaignEventResponse),
        (RealTimeMetrics, models.RealTimeMetrics),
        (GetCampaignMetricsResponse, models.CampaignMetricsResponse),
        (PipelineStatus, models.PipelineStatus),
        (GetPipelineStatusResponse, models.PipelineStatusResponse),
        (GetDashboardResponse, models.DashboardResponse),
        (Campaign, models.Campaign),
        (RejectedEvent, models.RejectedEvent),
    ]
    for message, model in pairs:
        assert set(codec.message_to_dict(message())) == set(model.model_fields), model


# ---------------------------------------------------------------------------
# JSON -> events
# ---------------------------------------------------------------------------


def decode(value: object, index: int = 0) -> Event:
    decoded = codec.decode_event(value, index)
    assert isinstance(decoded, Event), decoded
    return decoded


def undecodable(value: object, index: int = 0) -> UndecodableEvent:
    decoded = codec.decode_event(value, index)
    assert isinstance(decoded, UndecodableEvent), decoded
    assert decoded.index == index
    return decoded


def test_the_seeds_event_decodes() -> None:
    event = decode(
        {
            "eventType": "click",
            "campaignId": "camp_123",
            "organizationId": "org_456",
            "metadata": {
                "sessionId": "session_abc",
                "deviceType": "mobile",
                "location": "New York, NY",
            },
            "value": 1.50,
        }
    )

    assert event.event_type == EventType.EVENT_TYPE_CLICK
    assert event.campaign_id == "camp_123"
    assert event.organization_id == "org_456"
    assert event.HasField("value") and event.value == 1.5
    assert event.metadata.session_id == "session_abc"
    assert event.metadata.device_type == "mobile"
    assert event.metadata.location == "New York, NY"
    assert not event.HasField("timestamp")
    assert not event.metadata.HasField("extra")


@pytest.mark.parametrize(
    "word", ["click", "CLICK", " Click ", "EVENT_TYPE_CLICK", "event_type_click", 2]
)
def test_event_type_as_word_or_enum_name(word: object) -> None:
    assert decode({"eventType": word}).event_type == EventType.EVENT_TYPE_CLICK


def test_snake_case_keys() -> None:
    event = decode(
        {
            "event_id": "0190a8e0-0000-7000-8000-000000000001",
            "event_type": "impression",
            "campaign_id": "c",
            "organization_id": "o",
            "metadata": {"session_id": "s", "ad_slot_id": "pre", "ip_address": "203.0.113.9"},
        }
    )

    assert event.event_id == "0190a8e0-0000-7000-8000-000000000001"
    assert event.event_type == EventType.EVENT_TYPE_IMPRESSION
    assert (event.campaign_id, event.organization_id) == ("c", "o")
    assert event.metadata.session_id == "s"
    assert event.metadata.ad_slot_id == "pre"
    assert event.metadata.ip_address == "203.0.113.9"


@pytest.mark.parametrize(
    ("value", "seconds", "nanos"),
    [
        ("2025-07-15T12:30:00.000Z", 1_752_582_600, 0),
        ("2025-07-15T12:30:00.250Z", 1_752_582_600, 250_000_000),
        ("2025-07-15T14:30:00+02:00", 1_752_582_600, 0),
        ("2025-07-15T12:30:00", 1_752_582_600, 0),  # no zone: UTC
        ("2025-07-15", 1_752_537_600, 0),
        (1_752_582_600_123, 1_752_582_600, 123_000_000),
        (1_752_582_600_123.5, 1_752_582_600, 123_500_000),
        (-1, -1, 999_000_000),
    ],
)
def test_timestamp_as_iso_text_or_epoch_millis(value: object, seconds: int, nanos: int) -> None:
    event = decode({"timestamp": value})

    assert (event.timestamp.seconds, event.timestamp.nanos) == (seconds, nanos)


@pytest.mark.parametrize(
    ("value", "expected"), [(1.5, 1.5), (2, 2.0), ("1.50", 1.5), ("1e2", 100.0)]
)
def test_value_as_number_or_numeric_text(value: object, expected: float) -> None:
    assert decode({"value": value}).value == expected


def test_metadata_fields_and_extra_keys() -> None:
    event = decode(
        {
            "metadata": {
                "sessionId": "s",
                "userAgent": "UA",
                "duration": "12.5",
                "position": 0,
                "episodeId": "ep1",
                "showId": "show1",
                "referrer": "https://example.com",
                "plan": "pro",
                "abVariant": 2,
                "flags": {"beta": True, "list": [1, "a", None]},
                "extra": {"campaignGroup": "g"},
            }
        }
    )
    metadata = event.metadata

    assert metadata.user_agent == "UA"
    assert metadata.duration == 12.5
    assert metadata.HasField("position") and metadata.position == 0
    assert (metadata.episode_id, metadata.show_id) == ("ep1", "show1")
    assert metadata.referrer == "https://example.com"
    extra = codec.message_to_dict(metadata.extra)
    assert extra == {
        "plan": "pro",
        "abVariant": 2,
        "flags": {"beta": True, "list": [1, "a", None]},
        "campaignGroup": "g",
    }
    assert isinstance(metadata.extra, struct_pb2.Struct)


def test_nulls_mean_absent() -> None:
    event = decode(
        {"eventType": "view", "value": None, "timestamp": None, "metadata": {"duration": None}}
    )

    assert not event.HasField("value")
    assert not event.HasField("timestamp")
    assert not event.metadata.HasField("duration")


def test_unknown_top_level_keys_are_ignored() -> None:
    assert decode({"eventType": "skip", "somethingElse": 1}).event_type == EventType.EVENT_TYPE_SKIP


@pytest.mark.parametrize(
    ("value", "field", "reason_part"),
    [
        ({"eventType": "clik"}, "eventType", "unknown event type 'clik'"),
        ({"eventType": 9}, "eventType", "unknown event type 9"),
        ({"eventType": "EVENT_TYPE_UNSPECIFIED"}, "eventType", "unknown event type"),
        ({"eventType": True}, "eventType", "not a boolean"),
        ({"campaignId": 123}, "campaignId", "must be a string, not a number"),
        ({"eventId": ["x"]}, "eventId", "must be a string, not an array"),
        ({"timestamp": "yesterday"}, "timestamp", "not an ISO 8601 time"),
        ({"timestamp": "2025-13-40T00:00:00Z"}, "timestamp", "not an ISO 8601 time"),
        ({"timestamp": True}, "timestamp", "not a boolean"),
        ({"timestamp": 10**18}, "timestamp", "out of range"),
        ({"timestamp": math.inf}, "timestamp", "finite"),
        ({"value": "1,50"}, "value", "must be a number"),
        ({"value": "NaN"}, "value", "must be a number"),
        ({"value": math.nan}, "value", "finite"),
        ({"value": -math.inf}, "value", "finite"),
        ({"value": "1e400"}, "value", "finite"),
        ({"value": 10**400}, "value", "out of range"),
        ({"value": False}, "value", "not a boolean"),
        ({"value": {"amount": 1}}, "value", "not an object"),
        ({"metadata": "mobile"}, "metadata", "must be a JSON object"),
        ({"metadata": {"sessionId": 5}}, "metadata.sessionId", "must be a string"),
        ({"metadata": {"session_id": 5}}, "metadata.sessionId", "must be a string"),
        ({"metadata": {"duration": "long"}}, "metadata.duration", "must be a number"),
        ({"metadata": {"duration": math.nan}}, "metadata.duration", "finite"),
        ({"metadata": {"position": 1.5}}, "metadata.position", "whole number"),
        ({"metadata": {"position": 2**31}}, "metadata.position", "32-bit"),
        ({"metadata": {"score": math.nan}}, "metadata.score", "finite"),
        ({"metadata": {"deep": {"x": [math.inf]}}}, "metadata.deep.x", "finite"),
        ({"metadata": {"big": 2**60}}, "metadata.big", "too large"),
        ({"campaignId": "caf\udce9"}, "campaignId", "lone surrogate"),
    ],
)
def test_undecodable_events_say_field_and_reason(
    value: dict[str, object], field: str, reason_part: str
) -> None:
    result = undecodable(value, index=7)

    assert result.field == field
    assert reason_part in result.reason
    assert result.payload  # the JSON text, kept for the dead-letter table
    json.loads(result.payload)
    # An event type the server does not know gets the code the server gives
    # it in an Event; everything else is left to "undecodable".
    unknown_type = "unknown event type" in reason_part
    assert result.code == ("invalid_event_type" if unknown_type else "")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ([1, 2], "an array"),
        ("click", "a string"),
        (5, "a number"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_events_that_are_not_objects(value: object, kind: str) -> None:
    result = undecodable(value, index=3)

    assert result.field == ""
    assert result.reason == f"an event must be a JSON object, not {kind}"
    assert json.loads(result.payload) == value


def test_payload_keeps_nan_as_written() -> None:
    result = undecodable({"eventType": "click", "value": math.nan})

    assert result.payload == '{"eventType":"click","value":NaN}'


def test_payload_escapes_lone_surrogates() -> None:
    result = undecodable({"campaignId": "caf\udce9"})

    result.payload.encode("utf-8")
    assert result.payload == '{"campaignId":"caf\\udce9"}'


def test_decode_events_keeps_the_batch_positions() -> None:
    events, bad = codec.decode_events(
        [{"eventType": "impression"}, {"eventType": "nope"}, "x", {"eventType": "click"}]
    )

    assert [event.event_type for event in events] == [
        EventType.EVENT_TYPE_IMPRESSION,
        EventType.EVENT_TYPE_CLICK,
    ]
    assert [(u.index, u.field) for u in bad] == [(1, "eventType"), (2, "")]


# ---------------------------------------------------------------------------
# Request bodies and campaigns
# ---------------------------------------------------------------------------


def test_parse_body_lets_nan_through_for_the_events_to_refuse() -> None:
    document = codec.parse_body(b'{"events": [{"value": NaN}, {"value": -Infinity}, {"value": 1}]}')

    events, bad = codec.decode_events(document["events"])
    assert len(events) == 1
    assert [(u.index, u.field) for u in bad] == [(0, "value"), (1, "value")]


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b'{"a": "\xff"', "not valid UTF-8"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[" * 5000, "not valid JSON"),
    ],
)
def test_parse_body_refuses_what_is_not_json(body: bytes, message_part: str) -> None:
    with pytest.raises(codec.BodyError, match=message_part):
        codec.parse_body(body)


def test_parse_body_leaves_bytes_that_are_not_utf8_for_their_event_to_refuse() -> None:
    document = codec.parse_body(b'{"events": [{"campaignId": "\xff"}, {"campaignId": "c"}]}')

    events, bad = codec.decode_events(document["events"])
    assert [e.campaign_id for e in events] == ["c"]
    assert [(u.index, u.field) for u in bad] == [(0, "campaignId")]
    assert "not valid UTF-8" in bad[0].reason


def test_campaign_from_json() -> None:
    campaign = codec.campaign_from_json({"campaignId": "camp_9", "name": "Launch", "x": 1})

    assert (campaign.campaign_id, campaign.name, campaign.organization_id) == (
        "camp_9",
        "Launch",
        "",
    )
    with pytest.raises(codec.CodecError) as error:
        codec.campaign_from_json({"campaign_id": 9})
    assert error.value.field == "campaignId"
    with pytest.raises(codec.CodecError):
        codec.campaign_from_json([])


def test_status_details() -> None:
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=8)
    status.details.add().Pack(error_details_pb2.RetryInfo())
    status.details.add(type_url="type.googleapis.com/unknown.Thing", value=b"\x08\x01")

    assert codec.status_details(status.SerializeToString()) == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo"},
        {"@type": "type.googleapis.com/unknown.Thing"},
    ]
    assert codec.status_details(b"\xff\xff") == []
