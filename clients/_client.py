"""Typed clients of the analytics service: one blocking, one for asyncio.

Both offer one method per RPC, take and return the protocol's messages
(``clients.pb``), send the API key as ``authorization: Bearer`` metadata on
every call, give every call a deadline (the client's ``timeout`` unless the
call names its own) that covers all of its attempts, and retry the status
codes of their ``RetryPolicy``. Before the first
attempt every event without an ``event_id`` is given a time-ordered UUIDv7,
written into the caller's event, so that a retry is recognised by the service
as a duplicate and a rejected event can be matched by its id.

A client holds one gRPC channel, is safe to share between threads (or tasks),
and is closed with ``close()`` or by leaving its ``with`` block; a closed
client raises ``ClientClosedError`` and cannot be reopened. Closing ends the
calls still running and interrupts their waits.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import grpc
import grpc.aio

from clients import pb
from clients._events import assign_event_ids
from clients._exceptions import ClientClosedError, from_rpc_error
from clients._retry import (
    CLOSED_BEFORE_CALL,
    DEFAULT_RETRY,
    RetryPolicy,
    call_with_retry,
    call_with_retry_async,
)

__all__ = ["DEFAULT_TARGET", "DEFAULT_TIMEOUT", "AnalyticsClient", "AsyncAnalyticsClient"]

DEFAULT_TARGET = "127.0.0.1:50051"
# Seconds; the deadline of a call over all of its attempts.
DEFAULT_TIMEOUT = 10.0
# Seconds; the service's default metrics window.
DEFAULT_WINDOW = 3600

_T = TypeVar("_T")

# For calls that must not be repeated.
_ONCE = RetryPolicy(max_attempts=1)

ChannelOptions = Sequence[tuple[str, Any]]


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class _BaseClient:
    """What both clients share: configuration, lifecycle state and requests."""

    def __init__(
        self,
        target: str,
        api_key: str | None,
        *,
        timeout: float | None,
        retry: RetryPolicy,
        credentials: grpc.ChannelCredentials | None,
        options: ChannelOptions,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive seconds or None, not {timeout}")
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._target = target
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._timeout = timeout
        self._retry = retry
        self._credentials = credentials
        self._options = tuple(options)
        self._state = _State.OPEN

    @property
    def target(self) -> str:
        """The server address, for example ``127.0.0.1:50051``."""
        return self._target

    @property
    def timeout(self) -> float | None:
        """Default deadline of a call in seconds, over all attempts (None: none)."""
        return self._timeout

    @property
    def retry(self) -> RetryPolicy:
        """How failed calls are retried."""
        return self._retry

    @property
    def is_closed(self) -> bool:
        """Whether the client has been closed."""
        return self._state is _State.CLOSED

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ClientClosedError(CLOSED_BEFORE_CALL)

    def _check_reopen(self) -> None:
        if self._state is _State.CLOSED:
            raise ClientClosedError("Cannot reopen a client once it has been closed.")

    def _call_timeout(self, timeout: float | None) -> float | None:
        if timeout is None:
            return self._timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout}")
        return timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self._target!r}, state={self._state.value})"


def _ingest_events_request(events: Iterable[pb.Event]) -> pb.IngestEventsRequest:
    return pb.IngestEventsRequest(events=assign_event_ids(events))


def _ingest_event_request(event: pb.Event) -> pb.IngestEventsRequest:
    return pb.IngestEventsRequest(event=assign_event_ids([event])[0])


def _ingest_campaign_event_request(
    campaign_id: str, event: pb.Event
) -> pb.IngestCampaignEventRequest:
    return pb.IngestCampaignEventRequest(
        campaign_id=campaign_id, event=assign_event_ids([event])[0]
    )


def _stream_requests(batches: Iterable[Sequence[pb.Event]]) -> list[pb.StreamEventsRequest]:
    return [pb.StreamEventsRequest(events=assign_event_ids(batch)) for batch in batches]


def _create_campaign_request(
    campaign_id: str, name: str, organization_id: str
) -> pb.CreateCampaignRequest:
    return pb.CreateCampaignRequest(
        campaign=pb.Campaign(campaign_id=campaign_id, name=name, organization_id=organization_id)
    )


def _stream_updates_request(
    subscription_id: str,
    organization_id: str,
    campaign_ids: Iterable[str],
    time_window: int,
    resume: bool,
) -> pb.StreamUpdatesRequest:
    return pb.StreamUpdatesRequest(
        subscription_id=subscription_id,
        organization_id=organization_id,
        campaign_ids=campaign_ids,
        time_window=time_window,
        resume=resume,
    )


def _simulate_request(
    action: str | int,
    campaign_ids: Iterable[str],
    organization_id: str,
    simulation_id: str,
    options: dict[str, float | int],
) -> pb.SimulateRequest:
    if isinstance(action, str):
        action = pb.SimulationAction.Value(f"SIMULATION_ACTION_{action.upper()}")
    return pb.SimulateRequest(
        action=action,  # type: ignore[arg-type]
        organization_id=organization_id,
        campaign_ids=campaign_ids,
        options=pb.SimulationOptions(**options),  # type: ignore[arg-type]
        simulation_id=simulation_id,
    )


class AnalyticsClient(_BaseClient):
    """Blocking client of the analytics service.

    >>> with AnalyticsClient("127.0.0.1:50051", api_key="...") as client:
    ...     reply = client.ingest([make_event("click", "camp_1", "org_1", value=1.5)])

    ``timeout`` is the default deadline of a call in seconds, shared by all of
    its attempts (None: no deadline); every method also takes its own
    ``timeout``. ``credentials`` (``grpc.ssl_channel_credentials()``, for
    example) make the channel use TLS; ``options`` are gRPC channel options.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions = (),
    ) -> None:
        super().__init__(
            target,
            api_key,
            timeout=timeout,
            retry=retry,
            credentials=credentials,
            options=options,
        )
        self._closed = threading.Event()
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=self._options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=self._options)
        self._ingest = pb.IngestServiceStub(self._channel)
        self._metrics = pb.MetricsServiceStub(self._channel)
        self._campaigns = pb.CampaignServiceStub(self._channel)
        self._subscriptions = pb.SubscriptionServiceStub(self._channel)
        self._simulation = pb.SimulationServiceStub(self._channel)

    def __enter__(self) -> Self:
        self._check_reopen()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel: running calls end and waiting retries stop,
        both with ``ClientClosedError``. Closing twice does nothing."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._closed.set()
        self._channel.close()

    def _call(
        self,
        name: str,
        send: Callable[..., _T],
        request: Any,
        timeout: float | None,
        *,
        stream: bool = False,
        retry: bool = True,
    ) -> _T:
        """Sends ``request`` (for a stream: the list of its messages); with
        ``retry`` false, once only (a call that is not safe to repeat)."""
        self._check_open()

        def attempt(time_left: float | None) -> _T:
            # A stream is resent from its first message on every attempt.
            message = iter(request) if stream else request
            return send(message, timeout=time_left, metadata=self._metadata)

        return call_with_retry(
            attempt,
            policy=self._retry if retry else _ONCE,
            timeout=self._call_timeout(timeout),
            closed=self._closed,
            name=name,
        )

    # IngestService

    def ingest(
        self, events: Iterable[pb.Event], *, timeout: float | None = None
    ) -> pb.IngestEventsResponse:
        """Ingests a batch of events (at most 5,000), each accepted or
        rejected on its own; the reply counts them and explains each rejection."""
        request = _ingest_events_request(events)
        return self._call("IngestEvents", self._ingest.IngestEvents, request, timeout)

    def ingest_event(
        self, event: pb.Event, *, timeout: float | None = None
    ) -> pb.IngestEventsResponse:
        """Ingests one event; the reply carries its ``event_id``."""
        request = _ingest_event_request(event)
        return self._call("IngestEvents", self._ingest.IngestEvents, request, timeout)

    def ingest_campaign_event(
        self, campaign_id: str, event: pb.Event, *, timeout: float | None = None
    ) -> pb.IngestCampaignEventResponse:
        """Ingests one event for a campaign of the caller's organization.
        Raises ``NotFoundError`` when the campaign does not exist."""
        request = _ingest_campaign_event_request(campaign_id, event)
        return self._call("IngestCampaignEvent", self._ingest.IngestCampaignEvent, request, timeout)

    def stream_events(
        self, batches: Iterable[Sequence[pb.Event]], *, timeout: float | None = None
    ) -> pb.StreamEventsResponse:
        """Sends batches of events as one client stream; the reply comes once
        every accepted event is committed.

        The batches are read into memory before the first attempt, so that a
        retry can resend the whole stream; the service recognises the events
        already stored by their ids and counts them as duplicates. Split
        streams too large to hold in memory into several calls.
        """
        requests = _stream_requests(batches)
        return self._call("StreamEvents", self._ingest.StreamEvents, requests, timeout, stream=True)

    # MetricsService

    def get_campaign_metrics(
        self, campaign_id: str, time_window: int = DEFAULT_WINDOW, *, timeout: float | None = None
    ) -> pb.GetCampaignMetricsResponse:
        """Metrics of one campaign over the last ``time_window`` seconds.
        Raises ``NotFoundError`` when the campaign does not exist."""
        request = pb.GetCampaignMetricsRequest(campaign_id=campaign_id, time_window=time_window)
        return self._call("GetCampaignMetrics", self._metrics.GetCampaignMetrics, request, timeout)

    def get_pipeline_status(
        self,
        campaign_id: str = "",
        organization_id: str = "",
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.GetPipelineStatusResponse:
        """The ingest pipeline's state, with the metrics of a campaign and of
        an organization's campaigns when they are named."""
        request = pb.GetPipelineStatusRequest(
            campaign_id=campaign_id, organization_id=organization_id, time_window=time_window
        )
        return self._call("GetPipelineStatus", self._metrics.GetPipelineStatus, request, timeout)

    def get_dashboard(
        self,
        organization_id: str,
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.GetDashboardResponse:
        """An organization's dashboard over the last ``time_window`` seconds."""
        request = pb.GetDashboardRequest(organization_id=organization_id, time_window=time_window)
        return self._call("GetDashboard", self._metrics.GetDashboard, request, timeout)

    def get_trends(
        self,
        campaign_id: str = "",
        time_window: int = DEFAULT_WINDOW,
        step: int = 0,
        *,
        organization_id: str = "",
        timeout: float | None = None,
    ) -> pb.GetTrendsResponse:
        """A campaign's metrics (none named: the organization's) over the last
        ``time_window`` seconds (up to 400 days) as points of ``step`` seconds
        (0: a round step giving at most 300 points)."""
        request = pb.GetTrendsRequest(
            organization_id=organization_id,
            campaign_id=campaign_id,
            time_window=time_window,
            step=step,
        )
        return self._call("GetTrends", self._metrics.GetTrends, request, timeout)

    # CampaignService

    def create_campaign(
        self,
        campaign_id: str,
        name: str = "",
        organization_id: str = "",
        *,
        timeout: float | None = None,
    ) -> pb.CreateCampaignResponse:
        """Creates a campaign (in the caller's organization when none is
        named). Raises ``AlreadyExistsError`` when the id is taken, which after
        a retry may mean an earlier attempt created it."""
        request = _create_campaign_request(campaign_id, name, organization_id)
        return self._call("CreateCampaign", self._campaigns.CreateCampaign, request, timeout)

    def list_campaigns(
        self, organization_id: str = "", *, timeout: float | None = None
    ) -> pb.ListCampaignsResponse:
        """The campaigns of the caller's organization."""
        request = pb.ListCampaignsRequest(organization_id=organization_id)
        return self._call("ListCampaigns", self._campaigns.ListCampaigns, request, timeout)

    # SubscriptionService

    def subscribe(
        self,
        organization_id: str,
        campaign_ids: Iterable[str] = (),
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.CreateSubscriptionResponse:
        """Subscribes to live updates of some (none named: all) campaigns."""
        request = pb.CreateSubscriptionRequest(
            organization_id=organization_id, campaign_ids=campaign_ids, time_window=time_window
        )
        return self._call(
            "CreateSubscription", self._subscriptions.CreateSubscription, request, timeout
        )

    def unsubscribe(
        self, subscription_id: str, *, timeout: float | None = None
    ) -> pb.DeleteSubscriptionResponse:
        """Removes a subscription; its update streams end."""
        request = pb.DeleteSubscriptionRequest(subscription_id=subscription_id)
        return self._call(
            "DeleteSubscription", self._subscriptions.DeleteSubscription, request, timeout
        )

    def poll_updates(
        self, subscription_id: str, *, timeout: float | None = None
    ) -> pb.GetUpdatesResponse:
        """The subscription's queued updates (the queue is drained)."""
        request = pb.GetUpdatesRequest(subscription_id=subscription_id)
        return self._call("GetUpdates", self._subscriptions.GetUpdates, request, timeout)

    def updates(
        self,
        subscription_id: str = "",
        *,
        organization_id: str = "",
        campaign_ids: Iterable[str] = (),
        time_window: int = DEFAULT_WINDOW,
        resume: bool = False,
    ) -> Iterator[pb.AnalyticsUpdate]:
        """Live updates, as they come, until the subscription ends or the
        client closes: of ``subscription_id``, or of the organization's
        campaigns given inline. When the connection is lost it reconnects by
        itself (backing off as the retry policy says) and starts again from
        the current numbers of every followed campaign, so no change is
        missed for long. ``resume`` starts that way from the first connection."""
        self._check_open()
        request = _stream_updates_request(
            subscription_id, organization_id, campaign_ids, time_window, resume
        )
        failures = 0
        while True:
            call = self._subscriptions.StreamUpdates(request, metadata=self._metadata)
            try:
                for message in call:
                    failures = 0
                    if message.HasField("update"):
                        yield message.update
                return  # the subscription was removed
            except grpc.RpcError as error:
                if self.is_closed:
                    raise ClientClosedError("the client was closed") from None
                if error.code() not in self._retry.retryable_codes:
                    raise from_rpc_error(error) from None
            finally:
                call.cancel()
            failures += 1
            request.resume = True
            if self._closed.wait(self._retry.backoff(failures)):
                raise ClientClosedError("the client was closed")

    # SimulationService

    def simulate(
        self,
        action: str | int = "start",
        campaign_ids: Iterable[str] = (),
        *,
        organization_id: str = "",
        simulation_id: str = "",
        timeout: float | None = None,
        **options: float | int,
    ) -> pb.SimulateResponse:
        """Controls simulated traffic: ``"start"`` a continuous simulation,
        ``"stop"`` one (``simulation_id``) or all, generate a ``"burst"``, or
        simulate a ``"journey"`` per campaign. ``options`` are the fields of
        ``SimulationOptions`` (``events_per_minute=120``, ``duration=30``,
        ``count=500``, ``seed=1``, ...). Only stop is retried: a repeated
        start, burst or journey would generate its events twice."""
        request = _simulate_request(action, campaign_ids, organization_id, simulation_id, options)
        retry = request.action == pb.SimulationAction.SIMULATION_ACTION_STOP
        return self._call("Simulate", self._simulation.Simulate, request, timeout, retry=retry)

    def simulation_status(
        self, organization_id: str = "", *, timeout: float | None = None
    ) -> pb.GetSimulationStatusResponse:
        """The organization's simulations: running ones and recently ended ones."""
        request = pb.GetSimulationStatusRequest(organization_id=organization_id)
        return self._call(
            "GetSimulationStatus", self._simulation.GetSimulationStatus, request, timeout
        )


class _AsyncStubs(NamedTuple):
    ingest: pb.IngestServiceStub
    metrics: pb.MetricsServiceStub
    campaigns: pb.CampaignServiceStub
    subscriptions: pb.SubscriptionServiceStub
    simulation: pb.SimulationServiceStub


class AsyncAnalyticsClient(_BaseClient):
    """asyncio client of the analytics service; see ``AnalyticsClient``.

    >>> async with AsyncAnalyticsClient("127.0.0.1:50051", api_key="...") as client:
    ...     reply = await client.ingest([make_event("click", "camp_1", "org_1")])

    The channel is opened by the first call, on the running event loop, and
    the client must then be used on that loop only.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions = (),
    ) -> None:
        super().__init__(
            target,
            api_key,
            timeout=timeout,
            retry=retry,
            credentials=credentials,
            options=options,
        )
        self._closed = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._async_stubs: _AsyncStubs | None = None

    async def __aenter__(self) -> Self:
        self._check_reopen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel: running calls end and waiting retries stop,
        both with ``ClientClosedError``. Closing twice does nothing."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._closed.set()
        if self._channel is not None:
            await self._channel.close()

    def _stubs(self) -> _AsyncStubs:
        self._check_open()
        # grpc.aio binds a channel to the event loop it is made on, so it is
        # made on first use, inside the caller's loop.
        if self._async_stubs is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self._target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(
                    self._target, self._credentials, options=self._options
                )
            self._channel = channel
            self._async_stubs = _AsyncStubs(
                ingest=pb.IngestServiceStub(channel),
                metrics=pb.MetricsServiceStub(channel),
                campaigns=pb.CampaignServiceStub(channel),
                subscriptions=pb.SubscriptionServiceStub(channel),
                simulation=pb.SimulationServiceStub(channel),
            )
        return self._async_stubs

    async def _call(
        self,
        name: str,
        send: Callable[..., Awaitable[_T]],
        request: Any,
        timeout: float | None,
        *,
        stream: bool = False,
        retry: bool = True,
    ) -> _T:
        """Sends ``request`` (for a stream: the list of its messages); with
        ``retry`` false, once only (a call that is not safe to repeat)."""
        self._check_open()

        async def attempt(time_left: float | None) -> _T:
            # A stream is resent from its first message on every attempt.
            message = iter(request) if stream else request
            return await send(message, timeout=time_left, metadata=self._metadata)

        return await call_with_retry_async(
            attempt,
            policy=self._retry if retry else _ONCE,
            timeout=self._call_timeout(timeout),
            closed=self._closed,
            name=name,
        )

    # IngestService

    async def ingest(
        self, events: Iterable[pb.Event], *, timeout: float | None = None
    ) -> pb.IngestEventsResponse:
        """Ingests a batch of events (at most 5,000), each accepted or
        rejected on its own; the reply counts them and explains each rejection."""
        request = _ingest_events_request(events)
        return await self._call("IngestEvents", self._stubs().ingest.IngestEvents, request, timeout)

    async def ingest_event(
        self, event: pb.Event, *, timeout: float | None = None
    ) -> pb.IngestEventsResponse:
        """Ingests one event; the reply carries its ``event_id``."""
        request = _ingest_event_request(event)
        return await self._call("IngestEvents", self._stubs().ingest.IngestEvents, request, timeout)

    async def ingest_campaign_event(
        self, campaign_id: str, event: pb.Event, *, timeout: float | None = None
    ) -> pb.IngestCampaignEventResponse:
        """Ingests one event for a campaign of the caller's organization.
        Raises ``NotFoundError`` when the campaign does not exist."""
        request = _ingest_campaign_event_request(campaign_id, event)
        return await self._call(
            "IngestCampaignEvent", self._stubs().ingest.IngestCampaignEvent, request, timeout
        )

    async def stream_events(
        self,
        batches: Iterable[Sequence[pb.Event]] | AsyncIterable[Sequence[pb.Event]],
        *,
        timeout: float | None = None,
    ) -> pb.StreamEventsResponse:
        """Sends batches of events (a sync or async iterable) as one client
        stream; the reply comes once every accepted event is committed.

        The batches are read into memory before the first attempt, so that a
        retry can resend the whole stream; the service recognises the events
        already stored by their ids and counts them as duplicates. Split
        streams too large to hold in memory into several calls.
        """
        if isinstance(batches, AsyncIterable):
            requests = _stream_requests([batch async for batch in batches])
        else:
            requests = _stream_requests(batches)
        return await self._call(
            "StreamEvents", self._stubs().ingest.StreamEvents, requests, timeout, stream=True
        )

    # MetricsService

    async def get_campaign_metrics(
        self, campaign_id: str, time_window: int = DEFAULT_WINDOW, *, timeout: float | None = None
    ) -> pb.GetCampaignMetricsResponse:
        """Metrics of one campaign over the last ``time_window`` seconds.
        Raises ``NotFoundError`` when the campaign does not exist."""
        request = pb.GetCampaignMetricsRequest(campaign_id=campaign_id, time_window=time_window)
        return await self._call(
            "GetCampaignMetrics", self._stubs().metrics.GetCampaignMetrics, request, timeout
        )

    async def get_pipeline_status(
        self,
        campaign_id: str = "",
        organization_id: str = "",
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.GetPipelineStatusResponse:
        """The ingest pipeline's state, with the metrics of a campaign and of
        an organization's campaigns when they are named."""
        request = pb.GetPipelineStatusRequest(
            campaign_id=campaign_id, organization_id=organization_id, time_window=time_window
        )
        return await self._call(
            "GetPipelineStatus", self._stubs().metrics.GetPipelineStatus, request, timeout
        )

    async def get_dashboard(
        self,
        organization_id: str,
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.GetDashboardResponse:
        """An organization's dashboard over the last ``time_window`` seconds."""
        request = pb.GetDashboardRequest(organization_id=organization_id, time_window=time_window)
        return await self._call(
            "GetDashboard", self._stubs().metrics.GetDashboard, request, timeout
        )

    async def get_trends(
        self,
        campaign_id: str = "",
        time_window: int = DEFAULT_WINDOW,
        step: int = 0,
        *,
        organization_id: str = "",
        timeout: float | None = None,
    ) -> pb.GetTrendsResponse:
        """See ``AnalyticsClient.get_trends``."""
        request = pb.GetTrendsRequest(
            organization_id=organization_id,
            campaign_id=campaign_id,
            time_window=time_window,
            step=step,
        )
        return await self._call("GetTrends", self._stubs().metrics.GetTrends, request, timeout)

    # CampaignService

    async def create_campaign(
        self,
        campaign_id: str,
        name: str = "",
        organization_id: str = "",
        *,
        timeout: float | None = None,
    ) -> pb.CreateCampaignResponse:
        """Creates a campaign (in the caller's organization when none is
        named). Raises ``AlreadyExistsError`` when the id is taken, which after
        a retry may mean an earlier attempt created it."""
        request = _create_campaign_request(campaign_id, name, organization_id)
        return await self._call(
            "CreateCampaign", self._stubs().campaigns.CreateCampaign, request, timeout
        )

    async def list_campaigns(
        self, organization_id: str = "", *, timeout: float | None = None
    ) -> pb.ListCampaignsResponse:
        """The campaigns of the caller's organization."""
        request = pb.ListCampaignsRequest(organization_id=organization_id)
        return await self._call(
            "ListCampaigns", self._stubs().campaigns.ListCampaigns, request, timeout
        )

    # SubscriptionService

    async def subscribe(
        self,
        organization_id: str,
        campaign_ids: Iterable[str] = (),
        time_window: int = DEFAULT_WINDOW,
        *,
        timeout: float | None = None,
    ) -> pb.CreateSubscriptionResponse:
        """Subscribes to live updates of some (none named: all) campaigns."""
        request = pb.CreateSubscriptionRequest(
            organization_id=organization_id, campaign_ids=campaign_ids, time_window=time_window
        )
        return await self._call(
            "CreateSubscription", self._stubs().subscriptions.CreateSubscription, request, timeout
        )

    async def unsubscribe(
        self, subscription_id: str, *, timeout: float | None = None
    ) -> pb.DeleteSubscriptionResponse:
        """Removes a subscription; its update streams end."""
        request = pb.DeleteSubscriptionRequest(subscription_id=subscription_id)
        return await self._call(
            "DeleteSubscription", self._stubs().subscriptions.DeleteSubscription, request, timeout
        )

    async def poll_updates(
        self, subscription_id: str, *, timeout: float | None = None
    ) -> pb.GetUpdatesResponse:
        """The subscription's queued updates (the queue is drained)."""
        request = pb.GetUpdatesRequest(subscription_id=subscription_id)
        return await self._call(
            "GetUpdates", self._stubs().subscriptions.GetUpdates, request, timeout
        )

    async def updates(
        self,
        subscription_id: str = "",
        *,
        organization_id: str = "",
        campaign_ids: Iterable[str] = (),
        time_window: int = DEFAULT_WINDOW,
        resume: bool = False,
    ) -> AsyncIterator[pb.AnalyticsUpdate]:
        """Live updates, as ``AnalyticsClient.updates``: reconnects by itself
        and starts again from the current numbers after a lost connection."""
        stubs = self._stubs()
        request = _stream_updates_request(
            subscription_id, organization_id, campaign_ids, time_window, resume
        )
        failures = 0
        while True:
            call = stubs.subscriptions.StreamUpdates(request, metadata=self._metadata)
            try:
                async for message in call:
                    failures = 0
                    if message.HasField("update"):
                        yield message.update
                return  # the subscription was removed
            except grpc.RpcError as error:
                if self.is_closed:
                    raise ClientClosedError("the client was closed") from None
                if error.code() not in self._retry.retryable_codes:
                    raise from_rpc_error(error) from None
            finally:
                call.cancel()
            failures += 1
            request.resume = True
            try:
                await asyncio.wait_for(self._closed.wait(), self._retry.backoff(failures))
            except TimeoutError:
                continue
            raise ClientClosedError("the client was closed")

    # SimulationService

    async def simulate(
        self,
        action: str | int = "start",
        campaign_ids: Iterable[str] = (),
        *,
        organization_id: str = "",
        simulation_id: str = "",
        timeout: float | None = None,
        **options: float | int,
    ) -> pb.SimulateResponse:
        """See ``AnalyticsClient.simulate``."""
        request = _simulate_request(action, campaign_ids, organization_id, simulation_id, options)
        retry = request.action == pb.SimulationAction.SIMULATION_ACTION_STOP
        return await self._call(
            "Simulate", self._stubs().simulation.Simulate, request, timeout, retry=retry
        )

    async def simulation_status(
        self, organization_id: str = "", *, timeout: float | None = None
    ) -> pb.GetSimulationStatusResponse:
        """The organization's simulations: running ones and recently ended ones."""
        request = pb.GetSimulationStatusRequest(organization_id=organization_id)
        return await self._call(
            "GetSimulationStatus", self._stubs().simulation.GetSimulationStatus, request, timeout
        )
