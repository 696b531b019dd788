"""Malformed input of every kind, over gRPC and REST, against the real server
and PostgreSQL: corrupt protobuf bytes, messages over the size limit,
unknown enum numbers, huge metadata, NaN and infinities, timestamps far in
the past or future, bytes that are not UTF-8. Each is refused with a clear
reason, never INTERNAL or UNKNOWN, and where it was an event it is in the
dead-letter table; the good events beside it are counted."""

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from bad_input import Figures
from google.protobuf import descriptor_pool
from support import Stubs, Tenant, event

from clients import pb
from server.domain import Role
from server.services.undecodable import PAYLOAD_PREFIX
from server.store.database import libpq_url

CORRUPT = b"\xff\xff\xff\xff"  # a field number and wire type that cannot be


def dead_letters(database_url: str, organization_id: str) -> list[tuple[int, str, str, str]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(
            "SELECT event_index, field, code, payload FROM dead_letters"
            " WHERE organization_id = %s ORDER BY event_index",
            (organization_id,),
        ).fetchall()


def _methods() -> Iterator[Any]:
    for name in pb.SERVICE_NAMES:
        yield from descriptor_pool.Default().FindServiceByName(name).methods


METHODS = {f"{m.containing_service.name}/{m.name}": m for m in _methods()}


@pytest.fixture(scope="module")
def figures_of_corrupt_requests() -> Iterator[Figures]:
    figures = Figures("grpc: corrupt protobuf request, every RPC")
    yield figures
    figures.report()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_corrupt_request_is_invalid_argument_on_every_rpc(
    name: str,
    channel: grpc.Channel,
    tenant: Tenant,
    figures_of_corrupt_requests: Figures,
) -> None:
    method = METHODS[name]
    path = f"/{method.containing_service.full_name}/{method.name}"
    auth = tenant.auth(Role.ADMIN)
    figures_of_corrupt_requests.trials += 1
    with pytest.raises(grpc.RpcError) as raised:
        if method.client_streaming:
            call = channel.stream_unary(path, request_serializer=None, response_deserializer=None)
            call(iter([CORRUPT]), metadata=auth, timeout=10)
        elif method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            next(iter(stream(CORRUPT, metadata=auth, timeout=10)))
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            call(CORRUPT, metadata=auth, timeout=10)
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert f"not a valid {method.input_type.full_name} message" in error.details()
    if method.client_streaming:
        assert error.details().startswith("stream message 1: ")


def test_an_event_that_cannot_be_decoded_is_rejected_alone_and_kept(
    stubs: Stubs, channel: grpc.Channel, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    figures = Figures("grpc: undecodable events in a batch (bad UTF-8, corrupt bytes)")
    good = [event("impression", campaign, org) for _ in range(3)]
    # An event whose campaignId holds bytes that are not UTF-8, and one whose
    # bytes are not an event at all: written by hand, as a broken client would.
    not_utf8 = event("click", "XXXX", org).SerializeToString().replace(b"XXXX", b"caf\xe9")
    garbage = b"\x08\xff"  # a varint cut short
    request = b"".join(
        b"\x12" + bytes([len(chunk)]) + chunk
        for chunk in (
            good[0].SerializeToString(),
            not_utf8,
            good[1].SerializeToString(),
            garbage,
            good[2].SerializeToString(),
        )
    )
    raw = channel.unary_unary(
        "/analytics.v1.IngestService/IngestEvents",
        request_serializer=None,
        response_deserializer=pb.IngestEventsResponse.FromString,
    )
    reply = raw(request, metadata=tenant.auth(Role.INGEST), timeout=30)
    figures.trials, figures.sent = 1, 5
    figures.add_reply(reply.accepted, reply.duplicates, len(reply.rejected))

    assert (reply.accepted, reply.duplicates) == (3, 0)
    assert [(r.index, r.field, r.code) for r in reply.rejected] == [
        (1, "campaignId", "undecodable"),
        (3, "", "undecodable"),
    ]
    assert "campaignId is corrupt or holds text that is not UTF-8" in reply.rejected[0].reason
    assert "not an analytics.v1.Event" in reply.rejected[1].reason
    stored = dead_letters(database_url, org)
    assert [(i, f, c) for i, f, c, _ in stored] == [
        (1, "campaignId", "undecodable"),
        (3, "", "undecodable"),
    ]
    assert all(payload.startswith(PAYLOAD_PREFIX) for *_, payload in stored)

    # A lone event that cannot be decoded: refused with its reason, once kept.
    lone = b"\x0a" + bytes([len(not_utf8)]) + not_utf8
    with pytest.raises(grpc.RpcError) as raised:
        raw(lone, metadata=tenant.auth(Role.INGEST), timeout=30)
    figures.trials += 1
    figures.sent += 1
    figures.rejected += 1
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("event rejected: the event cannot be decoded")
    assert len(dead_letters(database_url, org)) == 3

    figures.count_stored(database_url, [org])
    figures.report()
    assert (figures.counted, figures.dead_lettered, figures.lost) == (3, 3, 0)


def test_an_event_that_cannot_be_decoded_in_a_stream_is_rejected_alone_and_kept(
    channel: grpc.Channel, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    figures = Figures("grpc: undecodable events in a stream message")
    good = [event("impression", campaign, org) for _ in range(4)]
    not_utf8 = event("click", "XXXX", org).SerializeToString().replace(b"XXXX", b"caf\xe9")

    def message(*chunks: bytes) -> bytes:  # StreamEventsRequest.events is field 1
        return b"".join(b"\x0a" + bytes([len(chunk)]) + chunk for chunk in chunks)

    stream = channel.stream_unary(
        "/analytics.v1.IngestService/StreamEvents",
        request_serializer=None,
        response_deserializer=pb.StreamEventsResponse.FromString,
    )
    reply = stream(
        iter(
            [
                message(good[0].SerializeToString(), good[1].SerializeToString()),
                message(good[2].SerializeToString(), not_utf8, b"\x08\xff"),
                message(good[3].SerializeToString()),
            ]
        ),
        metadata=tenant.auth(Role.INGEST),
        timeout=30,
    )
    figures.trials, figures.sent = 1, 6
    figures.add_reply(reply.accepted, reply.duplicates, len(reply.rejected))
    assert (reply.accepted, reply.batches) == (4, 3)
    # Indexes count events across the whole stream.
    assert [(r.index, r.field, r.code) for r in reply.rejected] == [
        (3, "campaignId", "undecodable"),
        (4, "", "undecodable"),
    ]
    stored = dead_letters(database_url, org)
    assert [(i, f, c) for i, f, c, _ in stored] == [
        (3, "campaignId", "undecodable"),
        (4, "", "undecodable"),
    ]
    figures.count_stored(database_url, [org])
    figures.report()
    assert (figures.counted, figures.dead_lettered, figures.lost) == (4, 2, 0)


def test_a_campaign_event_that_cannot_be_decoded_is_refused_and_kept(
    channel: grpc.Channel, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    not_utf8 = event("click", "XXXX", org).SerializeToString().replace(b"XXXX", b"caf\xe9")
    campaign_id = campaign.encode()
    # IngestCampaignEventRequest: campaign_id (1), then the broken event (2).
    request = (
        b"\x0a"
        + bytes([len(campaign_id)])
        + campaign_id
        + b"\x12"
        + bytes([len(not_utf8)])
        + not_utf8
    )
    call = channel.unary_unary(
        "/analytics.v1.IngestService/IngestCampaignEvent",
        request_serializer=None,
        response_deserializer=pb.IngestCampaignEventResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=tenant.auth(Role.INGEST), timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("event rejected: the event cannot be decoded")
    stored = dead_letters(database_url, org)
    assert [(i, f, c) for i, f, c, _ in stored] == [(0, "campaignId", "undecodable")]
    assert stored[0][3].startswith(PAYLOAD_PREFIX)


def test_a_message_over_the_size_limit_is_resource_exhausted(
    channel: grpc.Channel, tenant: Tenant
) -> None:
    figures = Figures("grpc: message over the 64 MiB limit")
    raw = channel.unary_unary(
        "/analytics.v1.IngestService/IngestEvents",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as raised:
        raw(b"\x00" * (64 * 1024 * 1024 + 1), metadata=tenant.auth(Role.INGEST), timeout=60)
    figures.trials = 1
    figures.report()
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in raised.value.details()


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer " + "k" * 20_000),),
        (("x-padding", "p" * 100_000),),
        tuple((f"x-header-{i}", "v" * 100) for i in range(300)),
    ],
    ids=["long-key", "long-header", "many-headers"],
)
def test_huge_call_metadata_is_refused_with_its_size(
    stubs: Stubs, tenant: Tenant, database_url: str, metadata: tuple[tuple[str, str], ...]
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    request = pb.IngestEventsRequest(events=[event("impression", campaign, org)])
    with pytest.raises(grpc.RpcError) as raised:
        stubs.ingest.IngestEvents(request, metadata=(*tenant.auth(Role.INGEST), *metadata))
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    if len(metadata) == 1:
        assert "metadata size exceeds" in raised.value.details()
    # Of many headers gRPC's reason lists every one: too long a message to
    # send back (over 2 KiB), it is dropped, and the code alone says it.
    figures = Figures(f"grpc: huge call metadata ({len(str(metadata))} characters)")
    figures.trials, figures.sent, figures.refused = 1, 1, 1
    figures.count_stored(database_url, [org])
    figures.report()
    assert figures.counted == 0  # refused whole: nothing stored


def test_unknown_enums_nan_infinities_and_far_timestamps_are_rejected_and_kept(
    stubs: Stubs, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    now = datetime.now(UTC)
    cases: list[tuple[pb.Event, str, str]] = []

    def case(message: pb.Event, field: str, code: str) -> None:
        cases.append((message, field, code))

    for number in (-1, 8, 2**31 - 1):
        message = event("click", campaign, org)
        message.event_type = number  # type: ignore[assignment]
        case(message, "eventType", "invalid_event_type")
    for value in (math.nan, math.inf, -math.inf, -0.01, 1e9 + 1):
        case(event("click", campaign, org, value=value), "value", "invalid_value")
    for duration in (math.nan, math.inf, -math.inf, 86_401.0):
        case(
            event("view", campaign, org, duration=duration), "metadata.duration", "invalid_duration"
        )
    for number in (math.nan, math.inf, -math.inf):
        message = event("view", campaign, org)
        message.metadata.extra.update({"score": number})
        case(message, "metadata.extra", "invalid_metadata")
    for seconds, nanos in (
        (-62_135_596_801, 0),  # before year 1
        (253_402_300_800, 0),  # after year 9999
        (int(now.timestamp()), -1),
        (int(now.timestamp()), 1_000_000_000),
        (-(2**62), 0),
        (2**62, 0),
    ):
        message = event("click", campaign, org)
        message.timestamp.seconds, message.timestamp.nanos = seconds, nanos
        case(message, "timestamp", "invalid_timestamp")
    for when, code in (
        (datetime(1, 1, 1, tzinfo=UTC), "timestamp_too_old"),
        (datetime(1970, 1, 1, tzinfo=UTC), "timestamp_too_old"),
        (now - timedelta(days=30, minutes=1), "timestamp_too_old"),
        (now + timedelta(hours=24, minutes=1), "timestamp_in_future"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "timestamp_in_future"),
    ):
        case(event("click", campaign, org, when=when), "timestamp", code)
    case(event("click", "camp\x00", org), "campaignId", "invalid_character")
    huge = event("view", campaign, org)
    huge.metadata.extra.update({"blob": "x" * (1024 * 1024)})
    case(huge, "", "event_too_large")
    long_key = event("view", campaign, org)
    long_key.metadata.extra.update({"k\x00": "x" * 3000})  # a NUL in the key it quotes
    case(long_key, "metadata.k\x00", "field_too_long")

    good = [
        event("impression", campaign, org, when=now - timedelta(days=29, hours=23)),
        event("click", campaign, org, value=1e9, when=now + timedelta(hours=23)),
        event("view", campaign, org, duration=86_400.0),
    ]
    batch = good + [message for message, _, _ in cases]
    reply = stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=batch), metadata=tenant.auth(Role.INGEST)
    )
    figures = Figures("grpc: unknown enums, NaN/Infinity, far timestamps, huge metadata")
    figures.trials, figures.sent = len(batch), len(batch)
    figures.add_reply(reply.accepted, reply.duplicates, len(reply.rejected))

    assert (reply.accepted, reply.duplicates) == (len(good), 0)
    want = [(len(good) + i, field, code) for i, (_, field, code) in enumerate(cases)]
    assert [(r.index, r.field, r.code) for r in reply.rejected] == want
    assert all(r.reason for r in reply.rejected)
    stored = dead_letters(database_url, org)
    # PostgreSQL's text cannot hold a NUL: the dead letter spells it out.
    assert [(i, f, c) for i, f, c, _ in stored] == [
        (i, f.replace("\x00", "\\u0000"), c) for i, f, c in want
    ]

    figures.count_stored(database_url, [org])
    figures.report()
    assert (figures.counted, figures.dead_lettered, figures.lost, figures.duplicated) == (
        len(good),
        len(cases),
        0,
        0,
    )


def test_a_nul_in_a_campaign_id_names_no_campaign(stubs: Stubs, tenant: Tenant) -> None:
    # PostgreSQL's text cannot hold a NUL: looking such an id up used to fail the call.
    calls = [
        lambda: stubs.ingest.IngestCampaignEvent(
            pb.IngestCampaignEventRequest(campaign_id="c\x00", event=pb.Event(event_type=1)),
            metadata=tenant.auth(Role.INGEST),
        ),
        lambda: stubs.metrics.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id="c\x00"), metadata=tenant.auth(Role.READ)
        ),
        lambda: stubs.metrics.GetTrends(
            pb.GetTrendsRequest(campaign_id="c\x00"), metadata=tenant.auth(Role.READ)
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND, raised.value.details()


def test_rest_bad_json_values_are_rejected_and_kept(
    http: httpx.Client, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    figures = Figures("rest: NaN/Infinity, far timestamps, bad enums, non-UTF-8 bytes")
    head = f'"campaignId": "{campaign}", "organizationId": "{org}"'.encode()
    good = b'{"eventType": "impression", ' + head + b"}"
    bad = [
        (b'{"eventType": "click", "value": NaN, ' + head + b"}", "value"),
        (b'{"eventType": "click", "value": Infinity, ' + head + b"}", "value"),
        (b'{"eventType": "click", "value": -Infinity, ' + head + b"}", "value"),
        (
            b'{"eventType": "view", "metadata": {"duration": NaN}, ' + head + b"}",
            "metadata.duration",
        ),
        (
            b'{"eventType": "view", "metadata": {"score": Infinity}, ' + head + b"}",
            "metadata.score",
        ),
        (b'{"eventType": "hover", ' + head + b"}", "eventType"),
        (b'{"eventType": 99, ' + head + b"}", "eventType"),
        (b'{"eventType": "click", "timestamp": 1e20, ' + head + b"}", "timestamp"),
        (b'{"eventType": "click", "timestamp": "-271821-04-20", ' + head + b"}", "timestamp"),
        (
            b'{"eventType": "click", "timestamp": "0001-01-01T00:00:00Z", ' + head + b"}",
            "timestamp",
        ),
        (
            b'{"eventType": "click", "timestamp": "9999-12-31T23:59:59Z", ' + head + b"}",
            "timestamp",
        ),
        (
            b'{"eventType": "click", "campaignId": "caf\xe9", "organizationId": "'
            + org.encode()
            + b'"}',
            "campaignId",
        ),
        (b'{"eventType": "view", "metadata": {"show\xff": "x"}, ' + head + b"}", "metadata"),
        (
            b'{"eventType": "view", "metadata": {"showId": "\xc3\x28"}, ' + head + b"}",
            "metadata.showId",
        ),
    ]
    body = b'{"events": [' + b", ".join([good, *(item for item, _ in bad), good]) + b"]}"
    reply = http.post(
        "/api/analytics/real-time",
        content=body,
        headers={**tenant.headers(Role.INGEST), "content-type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()
    figures.trials, figures.sent = len(bad) + 2, len(bad) + 2
    figures.add_reply(data["accepted"], data["duplicates"], len(data["rejected"]))
    assert (data["accepted"], data["duplicates"]) == (2, 0)
    assert [(r["index"], r["field"]) for r in data["rejected"]] == [
        (i + 1, field) for i, (_, field) in enumerate(bad)
    ]
    assert all(r["reason"] for r in data["rejected"])
    assert "not valid UTF-8" in data["rejected"][11]["reason"]
    # An unknown event type has the code it has over gRPC; NaN cannot be decoded.
    codes = {r["field"]: r["code"] for r in data["rejected"]}
    assert [r["code"] for r in data["rejected"] if r["field"] == "eventType"] == [
        "invalid_event_type"
    ] * 2
    assert codes["value"] == codes["metadata.duration"] == "undecodable"

    # Alone, a bad event gets 400 with its reason, and is kept all the same.
    for item, field in bad[:1] + bad[11:12]:
        lone = http.post(
            "/api/analytics/real-time",
            content=b'{"event": ' + item + b"}",
            headers={**tenant.headers(Role.INGEST), "content-type": "application/json"},
        )
        figures.trials += 1
        figures.sent += 1
        figures.rejected += 1
        assert lone.status_code == 400, lone.text
        assert lone.json()["error"].startswith(f"event rejected ({field}): ")

    stored = dead_letters(database_url, org)
    assert len(stored) == len(bad) + 2
    # The dead letter keeps the event as sent, unknown word and all.
    assert any('"hover"' in payload for *_, payload in stored)
    figures.count_stored(database_url, [org])
    figures.report()
    assert (figures.counted, figures.lost, figures.duplicated) == (2, 0, 0)
