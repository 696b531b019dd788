"""The clients' calls, lifecycle and event building."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

import grpc
import pytest
from fake_analytics_server import API_KEY, DEADLINE_ROUNDING, Failure, Server

from clients import (
    AnalyticsClient,
    AsyncAnalyticsClient,
    ClientClosedError,
    NotFoundError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    make_event,
    new_event_id,
    pb,
)

NO_RETRY = RetryPolicy(max_attempts=1)


# Every RPC, with both clients

CALLS: list[tuple[str, tuple[Any, ...], str]] = [
    ("get_campaign_metrics", ("camp_1", 60), "GetCampaignMetrics"),
    ("get_pipeline_status", ("camp_1", "org_1", 120), "GetPipelineStatus"),
    ("get_dashboard", ("org_1", 900), "GetDashboard"),
    ("create_campaign", ("camp_2", "Spring sale", "org_1"), "CreateCampaign"),
    ("list_campaigns", (), "ListCampaigns"),
]


def run_both(server: Server, method: str, *args: Any, api_key: str | None = API_KEY) -> list[Any]:
    """The replies of the sync and the async client to the same call."""
    with AnalyticsClient(server.target, api_key, retry=NO_RETRY) as client:
        sync_reply = getattr(client, method)(*args)

    async def main() -> Any:
        async with AsyncAnalyticsClient(server.target, api_key, retry=NO_RETRY) as client:
            return await getattr(client, method)(*args)

    return [sync_reply, asyncio.run(main())]


@pytest.mark.parametrize(("method", "args", "rpc"), CALLS, ids=[c[0] for c in CALLS])
def test_each_call_sends_its_request_with_the_key(
    server: Server, method: str, args: tuple[Any, ...], rpc: str
) -> None:
    sync_reply, async_reply = run_both(server, method, *args)

    assert sync_reply == async_reply
    sync_call, async_call = server.recorder.received
    assert sync_call.method == async_call.method == rpc
    assert sync_call.request == async_call.request
    assert sync_call.metadata["authorization"] == f"Bearer {API_KEY}"
    assert async_call.metadata["authorization"] == f"Bearer {API_KEY}"
    # Every call has a deadline: the client's default of 10 s.
    for received in (sync_call, async_call):
        assert received.time_remaining is not None
        assert 1 < received.time_remaining <= 10 + DEADLINE_ROUNDING


def test_requests_carry_the_arguments(server: Server) -> None:
    run_both(server, "get_pipeline_status", "camp_1", "org_1", 120)
    run_both(server, "create_campaign", "camp_2", "Spring sale", "org_1")

    status_request = server.recorder.received[0].request
    assert (status_request.campaign_id, status_request.organization_id) == ("camp_1", "org_1")
    assert status_request.time_window == 120
    create_request = server.recorder.received[2].request
    assert create_request.campaign == pb.Campaign(
        campaign_id="camp_2", name="Spring sale", organization_id="org_1"
    )


def test_windows_default_to_an_hour(server: Server) -> None:
    run_both(server, "get_campaign_metrics", "camp_1")
    run_both(server, "get_dashboard", "org_1")

    assert {call.request.time_window for call in server.recorder.received} == {3600}


def test_no_key_sends_no_authorization(server: Server) -> None:
    run_both(server, "list_campaigns", api_key=None)

    assert all("authorization" not in call.metadata for call in server.recorder.received)


def test_ingest_event_sends_the_single_event_field(server: Server) -> None:
    event = make_event("impression", "camp_1", "org_1")

    replies = run_both(server, "ingest_event", event)

    request = server.recorder.received[0].request
    assert request.HasField("event") and not request.events
    assert [reply.event_id for reply in replies] == [event.event_id] * 2


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
    ],
)
def test_errors_are_typed(server: Server, code: grpc.StatusCode, error: type[Exception]) -> None:
    server.recorder.fail(Failure(code))

    with (
        AnalyticsClient(server.target, API_KEY) as client,
        pytest.raises(error, match=f"{code.name}: scripted {code.name}"),
    ):
        client.get_campaign_metrics("camp_404")


def test_an_unreachable_server_is_unavailable_after_the_retries() -> None:
    # Port 1 on 127.0.0.1 refuses connections.
    policy = RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0)
    with (
        AnalyticsClient("127.0.0.1:1", API_KEY, retry=policy) as client,
        pytest.raises(UnavailableError) as caught,
    ):
        client.list_campaigns()
    assert caught.value.attempts == 2


# Lifecycle


def test_a_closed_client_refuses_calls(server: Server) -> None:
    client = AnalyticsClient(server.target, API_KEY)
    client.close()
    client.close()  # closing twice does nothing

    assert client.is_closed
    with pytest.raises(ClientClosedError, match="closed"):
        client.list_campaigns()
    with pytest.raises(ClientClosedError, match="reopen"), client:
        pass
    assert server.recorder.received == []


def test_a_closed_async_client_refuses_calls(server: Server) -> None:
    async def main() -> None:
        async with AsyncAnalyticsClient(server.target, API_KEY) as client:
            await client.list_campaigns()
        assert client.is_closed
        with pytest.raises(ClientClosedError, match="closed"):
            await client.list_campaigns()
        with pytest.raises(ClientClosedError, match="reopen"):
            async with client:
                pass
        # A client never used opens no channel, and closes all the same.
        unused = AsyncAnalyticsClient(server.target, API_KEY)
        await unused.close()
        await unused.close()

    asyncio.run(main())
    assert len(server.recorder.received) == 1


def test_the_async_client_can_be_made_outside_the_loop(server: Server) -> None:
    client = AsyncAnalyticsClient(server.target, API_KEY)

    async def main() -> pb.ListCampaignsResponse:
        async with client:
            return await client.list_campaigns()

    assert asyncio.run(main()).campaigns[0].campaign_id == "camp_1"


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeouts_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        AnalyticsClient(timeout=timeout)


def test_no_timeout_means_no_deadline(server: Server) -> None:
    with AnalyticsClient(server.target, API_KEY, timeout=None) as client:
        client.list_campaigns()

    assert server.recorder.received[0].time_remaining is None


def test_defaults() -> None:
    client = AnalyticsClient()
    try:
        assert client.target == "127.0.0.1:50051"
        assert client.timeout == 10.0
        assert client.retry == RetryPolicy()
        assert client.retry.retryable_codes == {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        assert "open" in repr(client)
    finally:
        client.close()


# Events


def test_make_event_uses_the_seeds_words() -> None:
    event = make_event(
        "click",
        "camp_1",
        "org_1",
        value=1.5,
        session_id="session_abc",
        deviceType="mobile",
        duration=12.5,
        position=0,
        creative="banner_7",
        extra={"experiment": "b"},
        location=None,
    )

    assert event.event_type == pb.EventType.EVENT_TYPE_CLICK
    assert (event.campaign_id, event.organization_id) == ("camp_1", "org_1")
    assert event.HasField("value") and event.value == 1.5
    assert event.metadata.session_id == "session_abc"
    assert event.metadata.device_type == "mobile"
    assert event.metadata.duration == 12.5
    assert event.metadata.HasField("position") and event.metadata.position == 0
    assert not event.metadata.location
    assert dict(event.metadata.extra) == {"creative": "banner_7", "experiment": "b"}
    assert uuid.UUID(event.event_id).version == 7
    assert event.HasField("timestamp")


@pytest.mark.parametrize(
    "word",
    ["impression", "click", "conversion", "view", "engagement", "completion", "skip"],
)
def test_make_event_knows_every_event_type(word: str) -> None:
    event = make_event(word, "camp_1", "org_1")

    assert event.event_type == pb.EventType.Value(f"EVENT_TYPE_{word.upper()}")
    assert make_event(event.event_type, "camp_1", "org_1").event_type == event.event_type


def test_make_event_leaves_out_what_is_not_given() -> None:
    event = make_event("view", "camp_1", "org_1", event_id="given")

    assert event.event_id == "given"
    assert not event.HasField("value")
    assert not event.HasField("metadata")


def test_make_event_timestamps() -> None:
    when = datetime.datetime(2024, 5, 1, 12, 0, 30, 250000, tzinfo=datetime.UTC)

    assert (
        make_event("view", "c", "o", timestamp=when).timestamp.ToDatetime(tzinfo=datetime.UTC)
        == when
    )
    assert (
        make_event("view", "c", "o", timestamp=when.timestamp()).timestamp.ToDatetime(
            tzinfo=datetime.UTC
        )
        == when
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        make_event("view", "c", "o", timestamp=datetime.datetime(2024, 5, 1))


@pytest.mark.parametrize("event_type", ["purchase", "", 0, 99])
def test_make_event_refuses_unknown_event_types(event_type: str | int) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        make_event(event_type, "camp_1", "org_1")


def test_event_ids_are_time_ordered() -> None:
    ids = [new_event_id() for _ in range(100)]

    assert ids == sorted(ids)
    assert all(uuid.UUID(event_id).version == 7 for event_id in ids)


def test_ingest_refuses_what_is_not_an_event(server: Server) -> None:
    with AnalyticsClient(server.target, API_KEY) as client, pytest.raises(TypeError):
        client.ingest([{"eventType": "click"}])  # type: ignore[list-item]
    assert server.recorder.received == []
