"""Retries, deadlines and close, against a real gRPC server, for both clients."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from fake_analytics_server import API_KEY, DEADLINE_ROUNDING, Failure, Server

from clients import (
    AnalyticsClient,
    AsyncAnalyticsClient,
    ClientClosedError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryPolicy,
    ServiceError,
    UnavailableError,
    make_event,
    pb,
)

UNAVAILABLE = Failure(grpc.StatusCode.UNAVAILABLE)
EXHAUSTED = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED)

# Short waits keep the tests quick; jitter stays on as in real use.
FAST = RetryPolicy(max_attempts=5, initial_backoff=0.001, max_backoff=0.01)

KINDS = ["sync", "async"]


def call(
    kind: str,
    server: Server,
    method: str,
    *args: Any,
    call_timeout: float | None = None,
    **client_options: Any,
) -> Any:
    """Calls ``method`` once on a fresh client of the given kind."""
    client_options.setdefault("retry", FAST)
    if kind == "sync":
        with AnalyticsClient(server.target, API_KEY, **client_options) as client:
            return getattr(client, method)(*args, timeout=call_timeout)

    async def main() -> Any:
        async with AsyncAnalyticsClient(server.target, API_KEY, **client_options) as client:
            return await getattr(client, method)(*args, timeout=call_timeout)

    return asyncio.run(main())


def events(count: int = 3) -> list[pb.Event]:
    return [
        pb.Event(
            event_type=pb.EventType.EVENT_TYPE_CLICK, campaign_id="camp_1", organization_id="org_1"
        )
        for _ in range(count)
    ]


def assert_uuid7(event_id: str) -> None:
    parsed = uuid.UUID(event_id)
    assert str(parsed) == event_id
    assert parsed.version == 7


# Retried codes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("failure", [UNAVAILABLE, EXHAUSTED], ids=lambda f: f.code.name)
def test_retryable_codes_are_retried_with_the_same_event_ids(
    kind: str, server: Server, failure: Failure
) -> None:
    server.recorder.fail(failure, failure)
    batch = events(3)

    reply = call(kind, server, "ingest", batch)

    assert reply.accepted == 3
    received = server.recorder.received
    assert len(received) == 3
    ids = received[0].event_ids
    assert len(set(ids)) == 3
    for event_id in ids:
        assert_uuid7(event_id)
    assert all(attempt.event_ids == ids for attempt in received)
    # The ids are written into the caller's events.
    assert [event.event_id for event in batch] == ids
    assert all(attempt.metadata["authorization"] == f"Bearer {API_KEY}" for attempt in received)


@pytest.mark.parametrize("kind", KINDS)
def test_an_event_id_given_by_the_caller_is_kept(kind: str, server: Server) -> None:
    server.recorder.fail(UNAVAILABLE)
    event = make_event("click", "camp_1", "org_1", event_id="0190a0e6-7b2d-7c3e-8f00-000000000001")

    reply = call(kind, server, "ingest_event", event)

    assert reply.event_id == "0190a0e6-7b2d-7c3e-8f00-000000000001"
    assert [a.event_ids for a in server.recorder.received] == [[reply.event_id]] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_campaign_event_is_retried_with_the_same_event_id(kind: str, server: Server) -> None:
    server.recorder.fail(EXHAUSTED)
    event = events(1)[0]

    reply = call(kind, server, "ingest_campaign_event", "camp_1", event)

    assert reply.event_id == event.event_id
    assert_uuid7(event.event_id)
    assert [a.event_ids for a in server.recorder.received] == [[event.event_id]] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_reads_are_retried(kind: str, server: Server) -> None:
    server.recorder.fail(UNAVAILABLE)

    reply = call(kind, server, "get_campaign_metrics", "camp_1", 60)

    assert reply.metrics.impressions == 1500
    assert server.recorder.attempts("GetCampaignMetrics") == 2


@pytest.mark.parametrize("kind", KINDS)
def test_attempts_stop_at_max_attempts(kind: str, server: Server) -> None:
    server.recorder.fail(*[UNAVAILABLE] * 10)

    with pytest.raises(UnavailableError) as caught:
        call(kind, server, "ingest", events(), retry=RetryPolicy(max_attempts=3, max_backoff=0.01))

    assert server.recorder.attempts() == 3
    assert caught.value.attempts == 3
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details == "scripted UNAVAILABLE"


@pytest.mark.parametrize("kind", KINDS)
def test_max_attempts_one_turns_retries_off(kind: str, server: Server) -> None:
    server.recorder.fail(UNAVAILABLE)

    with pytest.raises(UnavailableError):
        call(kind, server, "ingest", events(), retry=RetryPolicy(max_attempts=1))

    assert server.recorder.attempts() == 1


# Codes that are not retried


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    ],
)
def test_other_codes_raise_their_typed_error_at_once(
    kind: str, server: Server, code: grpc.StatusCode, error: type[ServiceError]
) -> None:
    server.recorder.fail(Failure(code), Failure(code))

    with pytest.raises(error) as caught:
        call(kind, server, "ingest", events())

    assert server.recorder.attempts() == 1
    assert type(caught.value) is error
    assert caught.value.code is code
    assert caught.value.attempts == 1


@pytest.mark.parametrize("kind", KINDS)
def test_retryable_codes_are_configurable(kind: str, server: Server) -> None:
    server.recorder.fail(UNAVAILABLE, EXHAUSTED)
    policy = RetryPolicy(max_backoff=0.01, retryable_codes={grpc.StatusCode.UNAVAILABLE})

    with pytest.raises(ResourceExhaustedError):
        call(kind, server, "ingest", events(), retry=policy)

    assert server.recorder.attempts() == 2


# retry-after and the deadline


@pytest.mark.parametrize("kind", KINDS)
def test_retry_after_is_the_minimum_wait(kind: str, server: Server) -> None:
    server.recorder.fail(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.2))
    no_backoff = RetryPolicy(initial_backoff=0, max_backoff=0)

    call(kind, server, "ingest", events(), retry=no_backoff)

    first, second = server.recorder.received
    # A lower bound only: the wait cannot be shorter than the hint.
    assert second.arrived_at - first.arrived_at >= 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_after_past_the_deadline_raises_the_last_error_at_once(
    kind: str, server: Server
) -> None:
    server.recorder.fail(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=30))

    with pytest.raises(ResourceExhaustedError) as caught:
        call(kind, server, "ingest", events(), timeout=1.0)

    assert server.recorder.attempts() == 1
    assert caught.value.retry_after == 30
    assert caught.value.attempts == 1


@pytest.mark.parametrize("kind", KINDS)
def test_one_deadline_covers_every_attempt(kind: str, server: Server) -> None:
    # Each wait is 0.6 s (the hint); a 1 s deadline leaves room for one wait
    # only, however many attempts the policy would allow.
    server.recorder.fail(*[Failure(grpc.StatusCode.UNAVAILABLE, retry_after=0.6)] * 10)
    policy = RetryPolicy(max_attempts=10, initial_backoff=0, max_backoff=0)

    with pytest.raises(UnavailableError) as caught:
        call(kind, server, "ingest", events(), timeout=1.0, retry=policy)

    assert server.recorder.attempts() == 2
    assert caught.value.attempts == 2
    first, second = server.recorder.received
    assert first.time_remaining is not None
    assert first.time_remaining <= 1.0 + DEADLINE_ROUNDING
    # The second attempt is given what is left after the wait (at most 0.4 s),
    # not a fresh 1 s.
    assert second.time_remaining is not None
    assert second.time_remaining <= 0.4 + DEADLINE_ROUNDING


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_can_name_its_own_deadline(kind: str, server: Server) -> None:
    reply = call(kind, server, "list_campaigns", call_timeout=5.0, timeout=1.0)

    assert reply.campaigns[0].campaign_id == "camp_1"
    (received,) = server.recorder.received
    assert received.time_remaining is not None
    assert 1.0 + DEADLINE_ROUNDING < received.time_remaining <= 5.0 + DEADLINE_ROUNDING


# Client streaming


def batches_of(batch_events: list[pb.Event], size: int) -> Iterator[list[pb.Event]]:
    for start in range(0, len(batch_events), size):
        yield batch_events[start : start + size]


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_stream_resends_every_batch(kind: str, server: Server) -> None:
    server.recorder.fail(UNAVAILABLE, EXHAUSTED)
    all_events = events(5)

    # A generator can be read once only; the client keeps the batches.
    reply = call(kind, server, "stream_events", batches_of(all_events, 2))

    assert reply.batches == 3
    assert reply.accepted == 5
    received = server.recorder.received
    assert len(received) == 3
    for attempt in received:
        assert [len(batch.events) for batch in attempt.request] == [2, 2, 1]
        assert attempt.event_ids == [event.event_id for event in all_events]
    for event in all_events:
        assert_uuid7(event.event_id)


def test_the_async_client_streams_async_iterables(server: Server) -> None:
    server.recorder.fail(UNAVAILABLE)
    all_events = events(4)

    async def batches() -> AsyncIterator[list[pb.Event]]:
        for batch in batches_of(all_events, 3):
            yield batch

    reply = call("async", server, "stream_events", batches())

    assert reply.batches == 2
    assert [len(a.request) for a in server.recorder.received] == [2, 2]
    assert server.recorder.received[1].event_ids == [event.event_id for event in all_events]


# Closing interrupts waits and calls


class RetryLogged(logging.Handler):
    """Calls ``on_retry`` when the client logs that it will wait to retry."""

    def __init__(self, on_retry: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self.on_retry = on_retry

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.on_retry()


@pytest.fixture
def retry_log() -> Iterator[logging.Logger]:
    retry_logger = logging.getLogger("clients._retry")
    level = retry_logger.level
    retry_logger.setLevel(logging.DEBUG)
    yield retry_logger
    retry_logger.setLevel(level)


LONG_WAIT = Failure(grpc.StatusCode.UNAVAILABLE, retry_after=60)


def test_close_interrupts_a_waiting_retry(server: Server, retry_log: logging.Logger) -> None:
    server.recorder.fail(LONG_WAIT)
    waiting = threading.Event()
    handler = RetryLogged(waiting.set)
    retry_log.addHandler(handler)
    client = AnalyticsClient(server.target, API_KEY, timeout=120, retry=FAST)
    outcome: list[BaseException] = []

    def ingest() -> None:
        try:
            client.ingest(events())
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=ingest)
    try:
        caller.start()
        assert waiting.wait(timeout=30)
        client.close()
        caller.join(timeout=30)
    finally:
        retry_log.removeHandler(handler)
        client.close()
    assert not caller.is_alive()
    (error,) = outcome
    assert isinstance(error, ClientClosedError)
    assert "waited to retry" in str(error)
    assert isinstance(error.__cause__, UnavailableError)
    assert server.recorder.attempts() == 1


def test_close_interrupts_a_waiting_retry_async(server: Server, retry_log: logging.Logger) -> None:
    server.recorder.fail(LONG_WAIT)

    async def main() -> None:
        waiting = asyncio.Event()
        handler = RetryLogged(waiting.set)
        retry_log.addHandler(handler)
        try:
            client = AsyncAnalyticsClient(server.target, API_KEY, timeout=120, retry=FAST)
            call = asyncio.create_task(client.ingest(events()))
            await waiting.wait()
            await client.close()
            with pytest.raises(ClientClosedError, match="waited to retry"):
                await call
        finally:
            retry_log.removeHandler(handler)

    asyncio.run(main())
    assert server.recorder.attempts() == 1


def test_close_ends_a_running_call(server: Server) -> None:
    server.recorder.hold = True
    client = AnalyticsClient(server.target, API_KEY, timeout=120, retry=FAST)
    outcome: list[BaseException] = []

    def ingest() -> None:
        try:
            client.ingest(events())
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=ingest)
    try:
        caller.start()
        assert server.recorder.holding.wait(timeout=30)
        client.close()
        caller.join(timeout=30)
    finally:
        client.close()
    assert not caller.is_alive()
    (error,) = outcome
    assert isinstance(error, ClientClosedError)
    assert "while the call was running" in str(error)
    assert server.recorder.attempts() == 1


def test_close_ends_a_running_call_async(server: Server) -> None:
    server.recorder.hold = True

    async def main() -> None:
        client = AsyncAnalyticsClient(server.target, API_KEY, timeout=120, retry=FAST)
        call = asyncio.create_task(client.ingest(events()))
        await asyncio.to_thread(server.recorder.holding.wait, 30)
        await client.close()
        with pytest.raises(ClientClosedError, match="while the call was running"):
            await call

    asyncio.run(main())
    assert server.recorder.attempts() == 1


def test_cancelling_the_callers_task_still_cancels(server: Server) -> None:
    server.recorder.hold = True

    async def main() -> None:
        async with AsyncAnalyticsClient(server.target, API_KEY, retry=FAST) as client:
            call = asyncio.create_task(client.ingest(events()))
            await asyncio.to_thread(server.recorder.holding.wait, 30)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(main())


# The policy itself


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=False)

    assert [policy.backoff(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1, 1])
    assert policy.backoff(10_000) == 1.0


def test_full_jitter_stays_between_zero_and_the_bound() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    rng = random.Random(7)

    waits = [policy.backoff(3, rng) for _ in range(200)]

    assert all(0 <= wait <= 0.4 for wait in waits)
    assert len(set(waits)) > 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"initial_backoff": -1},
        {"max_backoff": -1},
        {"multiplier": 0.5},
        {"max_backoff": float("inf")},
    ],
)
def test_a_policy_refuses_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)
