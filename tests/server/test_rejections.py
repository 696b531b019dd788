"""Every rejection reason: the event is refused with its index, field and
code, the rest of the batch goes through, and the refused event is in the
dead-letter table with its payload."""

import math
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from support import Stubs, Tenant, event

from clients import pb
from server.domain import Role
from server.store.database import libpq_url


def dead_letters(database_url: str, organization_id: str) -> list[tuple[int, str, str, str]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(
            "SELECT event_index, field, code, payload FROM dead_letters"
            " WHERE organization_id = %s ORDER BY event_index",
            (organization_id,),
        ).fetchall()


def test_each_rejection_reason_is_reported_and_dead_lettered(
    stubs: Stubs, tenant: Tenant, other_tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    now = datetime.now(UTC)
    good = event("click", campaign, org, value=1.0)
    cases: list[tuple[pb.Event, str, str]] = []

    def case(message: pb.Event, field: str, code: str) -> None:
        cases.append((message, field, code))

    case(
        pb.Event(event_type=99, campaign_id=campaign, organization_id=org),
        "eventType",
        "invalid_event_type",
    )
    case(
        pb.Event(event_type=0, campaign_id=campaign, organization_id=org),
        "eventType",
        "invalid_event_type",
    )
    case(pb.Event(event_type=1, organization_id=org), "campaignId", "missing_field")
    case(pb.Event(event_type=1, campaign_id=campaign), "organizationId", "missing_field")
    case(
        pb.Event(event_type=1, campaign_id="x" * 200, organization_id=org),
        "campaignId",
        "field_too_long",
    )
    case(event("click", campaign, org, event_id="not-a-uuid"), "eventId", "invalid_event_id")
    case(
        event("click", campaign, org, when=now + timedelta(hours=25)),
        "timestamp",
        "timestamp_in_future",
    )
    case(
        event("click", campaign, org, when=now - timedelta(days=31)),
        "timestamp",
        "timestamp_too_old",
    )
    bad_time = event("click", campaign, org)
    bad_time.timestamp.seconds = 10**12
    case(bad_time, "timestamp", "invalid_timestamp")
    case(event("click", campaign, org, value=-1.0), "value", "invalid_value")
    case(event("click", campaign, org, value=math.nan), "value", "invalid_value")
    case(event("click", campaign, org, value=math.inf), "value", "invalid_value")
    case(event("view", campaign, org, duration=-5.0), "metadata.duration", "invalid_duration")
    long_agent = event("view", campaign, org)
    long_agent.metadata.user_agent = "a" * 5000
    case(long_agent, "metadata.userAgent", "field_too_long")
    huge = event("view", campaign, org)
    huge.metadata.extra.update({f"k{i}": "v" * 100 for i in range(400)})
    case(huge, "", "event_too_large")
    case(event("click", "camp_missing_" + org, org), "campaignId", "campaign_not_found")
    case(
        event("click", other_tenant.campaign_ids[0], org),
        "campaignId",
        "campaign_organization_mismatch",
    )

    batch = [good] + [message for message, _, _ in cases]
    reply = stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=batch), metadata=tenant.auth(Role.INGEST)
    )
    assert reply.success and reply.accepted == 1 and reply.duplicates == 0
    got = [(r.index, r.field, r.code) for r in reply.rejected]
    want = [(i + 1, field, code) for i, (_, field, code) in enumerate(cases)]
    assert got == want
    assert all(r.reason for r in reply.rejected)

    stored = dead_letters(database_url, org)
    assert [(i, f, c) for i, f, c, _ in stored] == want
    # The payload is the event as sent, so it can be inspected and replayed.
    assert campaign in stored[0][3]


def test_undecodable_events_are_dead_lettered_at_their_index(
    stubs: Stubs, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    request = pb.IngestEventsRequest(
        events=[event("impression", campaign, org), event("click", campaign, org)],
        undecodable_events=[
            pb.UndecodableEvent(
                index=1, field="value", reason="value must be a number", payload='{"value": "abc"}'
            ),
            # A front end may name the code the server gives for the same
            # mistake in an Event; any other code stays "undecodable".
            pb.UndecodableEvent(
                index=3,
                field="eventType",
                reason="unknown event type 'tap'",
                payload='{"eventType": "tap"}',
                code="invalid_event_type",
            ),
            pb.UndecodableEvent(
                index=4, field="", reason="not an object", payload="[]", code="all_good"
            ),
        ],
    )
    reply = stubs.ingest.IngestEvents(request, metadata=tenant.auth(Role.INGEST))
    assert reply.accepted == 2
    assert [(r.index, r.field, r.code) for r in reply.rejected] == [
        (1, "value", "undecodable"),
        (3, "eventType", "invalid_event_type"),
        (4, "", "undecodable"),
    ]
    assert dead_letters(database_url, org) == [
        (1, "value", "undecodable", '{"value": "abc"}'),
        (3, "eventType", "invalid_event_type", '{"eventType": "tap"}'),
        (4, "", "undecodable", "[]"),
    ]


def test_single_rejected_event_is_an_invalid_argument(stubs: Stubs, tenant: Tenant) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(event=event("click", "nope", tenant.organization_id)),
            metadata=tenant.auth(Role.INGEST),
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign" in raised.value.details()
    # The status names the field at fault, as a google.rpc.BadRequest.
    assert bad_request_fields(raised.value) == ["campaignId"]


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields of the google.rpc.BadRequest in a call's rich status."""
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]  # type: ignore[attr-defined]
    assert status.message == error.details()  # type: ignore[attr-defined]
    fields = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        assert detail.Unpack(request)
        fields += [violation.field for violation in request.field_violations]
    return fields


def test_a_rejected_event_names_its_field_over_rest(
    http: httpx.Client, tenant: Tenant, database_url: str
) -> None:
    """The field a server-side rule finds at fault reaches REST callers as a
    field violation, as a field the gateway cannot decode does."""
    reply = http.post(
        "/api/analytics/real-time",
        json={"event": {"eventType": "click", "campaignId": tenant.campaign_ids[0],
                        "organizationId": tenant.organization_id, "value": -5}},
        headers=tenant.headers(Role.INGEST),
    )  # fmt: skip
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["error"].startswith("event rejected (value): ")
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "value", "description": body["error"]}],
        }
    ]
    assert [field for _, field, _, _ in dead_letters(database_url, tenant.organization_id)] == [
        "value"
    ]


@pytest.mark.parametrize("count", [0, 5001])
def test_empty_and_oversized_batches_are_refused(stubs: Stubs, tenant: Tenant, count: int) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    events = [event("impression", campaign, org) for _ in range(count)]
    with pytest.raises(grpc.RpcError) as raised:
        stubs.ingest.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert ("5000" in raised.value.details()) == (count > 0)


def test_oversized_stream_message_is_refused(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    batch = pb.StreamEventsRequest(events=[event("impression", campaign, org)] * 5001)
    with pytest.raises(grpc.RpcError) as raised:
        stubs.ingest.StreamEvents(iter([batch]), metadata=tenant.auth(Role.INGEST))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_stream_rejections_are_numbered_across_the_stream(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    batches = [
        pb.StreamEventsRequest(events=[event("impression", campaign, org) for _ in range(3)]),
        pb.StreamEventsRequest(
            events=[event("impression", campaign, org), event("click", "nope", org)]
        ),
    ]
    reply = stubs.ingest.StreamEvents(iter(batches), metadata=tenant.auth(Role.INGEST))
    assert (reply.accepted, reply.batches) == (4, 2)
    assert [(r.index, r.code) for r in reply.rejected] == [(4, "campaign_not_found")]


def test_characters_and_sizes_postgresql_cannot_hold_are_rejected(
    stubs: Stubs, tenant: Tenant, database_url: str
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    nul_agent = event("view", campaign, org)
    nul_agent.metadata.user_agent = "Mozilla\x00"
    nul_extra = event("view", campaign, org)
    nul_extra.metadata.extra.update({"note": "a\x00b"})
    long_session = event("view", campaign, org, session_id="s" * 300)
    nan_extra = event("view", campaign, org)
    nan_extra.metadata.extra.update({"score": math.nan})
    ip = event("click", campaign, org, value=-1.0)
    ip.metadata.ip_address = "203.0.113.77"
    reply = stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(
            events=[
                event("impression", campaign, org),
                nul_agent,
                nul_extra,
                long_session,
                nan_extra,
                ip,
            ]
        ),
        metadata=tenant.auth(Role.INGEST),
    )
    assert reply.accepted == 1
    assert [(r.index, r.field, r.code) for r in reply.rejected] == [
        (1, "metadata", "invalid_character"),
        (2, "metadata", "invalid_character"),
        (3, "metadata.sessionId", "field_too_long"),
        (4, "metadata.extra", "invalid_metadata"),
        (5, "value", "invalid_value"),
    ]
    stored = dead_letters(database_url, org)
    assert len(stored) == 5
    # The IP address is personal data: kept truncated, in dead letters too.
    assert "203.0.113.0" in stored[-1][3] and "203.0.113.77" not in stored[-1][3]


def test_a_long_stream_of_undecodable_events_keeps_flowing(stubs: Stubs, tenant: Tenant) -> None:
    # A stream holds at most 20,000 events in flight; undecodable ones count
    # while in flight and are let go with the rest, so a stream of more than
    # that many never stalls.
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    bad = [
        pb.UndecodableEvent(index=i + 1, field="value", reason="not a number", payload="{}")
        for i in range(2_000)
    ]
    messages = [
        pb.StreamEventsRequest(events=[event("impression", campaign, org)], undecodable_events=bad)
        for _ in range(12)
    ]
    reply = stubs.ingest.StreamEvents(iter(messages), metadata=tenant.auth(Role.INGEST), timeout=60)
    assert (reply.accepted, reply.batches, len(reply.rejected)) == (12, 12, 24_000)
