"""SubscriptionService: subscriptions, polling and pushed updates."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from clients import pb
from server import codec
from server.auth import KeyStore
from server.domain import Role
from server.errors import InvalidArgument, NotFound
from server.ingest.campaigns import CampaignDirectory
from server.metrics.reader import MetricsReader
from server.metrics.window import Window
from server.services.common import (
    Authenticated,
    abort,
    authorization,
    reports_errors,
    same_organization,
)
from server.updates.hub import Subscription, Update, UpdateHub
from server.updates.publisher import UpdatePublisher


class SubscriptionServicer(Authenticated, pb.SubscriptionServiceServicer):
    def __init__(
        self,
        keys: KeyStore,
        hub: UpdateHub,
        publisher: UpdatePublisher,
        campaigns: CampaignDirectory,
        reader: MetricsReader,
        heartbeat_interval: float = 15.0,
    ) -> None:
        super().__init__(keys)
        self._hub = hub
        self._publisher = publisher
        self._campaigns = campaigns
        self._reader = reader
        self.heartbeat_interval = heartbeat_interval

    async def _followed(self, organization_id: str, campaign_ids: list[str]) -> list[str]:
        """The campaign ids, each checked to be the organization's, once this
        process hears of every commit (a subscription is made next)."""
        await self._campaigns.check(organization_id, campaign_ids, _no_such_campaign)
        await self._publisher.follow()
        return campaign_ids

    @reports_errors
    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSubscriptionResponse:
        principal = await self.caller(context, Role.READ)
        if not request.organization_id:
            raise InvalidArgument("organizationId is required", "organizationId")
        organization_id = same_organization(principal, request.organization_id)
        campaign_ids = await self._followed(organization_id, list(request.campaign_ids))
        window = Window.ending_now(request.time_window)
        subscription = self._hub.create(
            organization_id,
            campaign_ids,
            window.seconds,
            datetime.now(UTC),
            key_id=principal.key_id,
        )
        return pb.CreateSubscriptionResponse(
            success=True,
            subscription=codec.encode_subscription(subscription),
            timestamp=codec.now_timestamp(),
        )

    @reports_errors
    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSubscriptionResponse:
        subscription = await self._subscription(request.subscription_id, context)
        self._hub.remove(subscription)
        return pb.DeleteSubscriptionResponse(
            success=True,
            message="Subscription removed",
            subscription_id=subscription.id,
            timestamp=codec.now_timestamp(),
        )

    @reports_errors
    async def GetUpdates(
        self, request: pb.GetUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUpdatesResponse:
        subscription = await self._subscription(request.subscription_id, context)
        updates = [codec.encode_update(u) for u in subscription.drain()]
        return pb.GetUpdatesResponse(
            success=True,
            subscription_id=subscription.id,
            updates=updates,
            count=len(updates),
            timestamp=codec.now_timestamp(),
        )

    @reports_errors
    async def StreamUpdates(
        self, request: pb.StreamUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamUpdatesResponse]:
        try:
            subscription, own = await self._stream_subscription(request, context)
        except Exception as exc:
            await abort(context, exc, "StreamUpdates")
            return
        subscription.readers += 1
        self._keys.streams.ends_between_messages()
        try:
            if request.resume:
                for update in await self._snapshots(subscription):
                    yield pb.StreamUpdatesResponse(update=codec.encode_update(update))
            while not subscription.closed:
                with self._keys.streams.waiting(), contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscription.changed.wait(), self.heartbeat_interval)
                if subscription.closed:
                    break
                updates = subscription.drain()
                if not updates:
                    yield pb.StreamUpdatesResponse(
                        heartbeat=pb.Heartbeat(timestamp=codec.now_timestamp())
                    )
                for update in updates:
                    yield pb.StreamUpdatesResponse(update=codec.encode_update(update))
            if subscription.closed_by_shutdown:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the server is shutting down; reconnect (with resume) to go on",
                )
            if subscription.closed_by_revocation:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the API key that created this subscription was revoked",
                )
        finally:
            subscription.readers -= 1
            subscription.touch()
            if own:
                self._hub.remove(subscription)

    @reports_errors
    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionResponse:
        subscription = await self._subscription(request.subscription_id, context)
        return pb.GetSubscriptionResponse(subscription=codec.encode_subscription(subscription))

    @reports_errors
    async def GetSubscriptionStats(
        self, request: pb.GetSubscriptionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionStatsResponse:
        principal = await self.caller(context, Role.READ)
        active, queued, by_organization = self._hub.stats(principal.organization_id)
        return pb.GetSubscriptionStatsResponse(
            active_subscriptions=active,
            total_queued_updates=queued,
            subscriptions_by_organization=by_organization,
        )

    async def _subscription(
        self, subscription_id: str, context: grpc.aio.ServicerContext, *, stream: bool = False
    ) -> Subscription:
        """The subscription a call names. Its id is a capability: a call that
        carries it needs no key (a browser's EventSource cannot send one); a
        call that carries a key too must be of the subscription's organization."""
        if not subscription_id:
            raise InvalidArgument("subscriptionId is required", "subscriptionId")
        if authorization(context) is None:
            return self._hub.find(subscription_id)
        principal = await self.caller(context, Role.READ, stream=stream)
        return self._hub.get(subscription_id, principal.organization_id)

    async def _stream_subscription(
        self, request: pb.StreamUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> tuple[Subscription, bool]:
        """The subscription to stream, and whether the stream owns it (an
        inline one, removed when the stream ends)."""
        if request.subscription_id:
            return await self._subscription(request.subscription_id, context, stream=True), False
        principal = await self.caller(context, Role.READ, stream=True)
        organization_id = same_organization(principal, request.organization_id)
        campaign_ids = await self._followed(organization_id, list(request.campaign_ids))
        window = Window.ending_now(request.time_window)
        subscription = self._hub.create(
            organization_id,
            campaign_ids,
            window.seconds,
            datetime.now(UTC),
            listed=False,
            key_id=principal.key_id,
        )
        return subscription, True

    async def _snapshots(self, subscription: Subscription) -> list[Update]:
        """The current numbers of every followed campaign active in the window."""
        window = Window.ending_now(subscription.time_window)
        metrics, summary = await self._reader.organization_with_summary(
            subscription.organization_id, window
        )
        now = datetime.now(UTC)
        return [
            Update(
                self._hub.next_sequence(),
                m.organization_id,
                m.campaign_id,
                m,
                summary,
                now,
                active_campaigns=len(metrics),
            )
            for m in metrics
            if subscription.follows(m.campaign_id)
        ]


def _no_such_campaign(campaign_id: str) -> NotFound:
    return NotFound(f"campaign {campaign_id!r} does not exist")
