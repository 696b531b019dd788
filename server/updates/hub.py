"""The update hub of one server process: subscriptions and their queues.

An update is a snapshot of one campaign's metrics, so a subscription's queue
keeps only the newest per campaign: a slow reader loses intermediate states,
never the latest numbers, and the queue never holds more than
``max_queue_size`` campaigns (beyond that the oldest campaign's entry goes).
"""

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from server.errors import NotFound, PermissionDenied
from server.metrics.formulas import CampaignMetrics
from server.observability.metrics import ServerMetrics


@dataclass(slots=True)
class Update:
    sequence: int
    organization_id: str
    campaign_id: str
    metrics: CampaignMetrics
    summary: CampaignMetrics  # the organization's totals (campaign_id empty)
    published_at: datetime
    active_campaigns: int = 0  # the organization's campaigns with events in the window


@dataclass(eq=False, slots=True)
class Subscription:
    id: str
    organization_id: str
    campaign_ids: frozenset[str] | None  # None: every campaign of the organization
    time_window: int
    created_at: datetime
    queue: OrderedDict[str, Update] = field(default_factory=OrderedDict)
    last_activity: float = field(default_factory=time.monotonic)
    readers: int = 0
    closed: bool = False
    closed_by_shutdown: bool = False
    key_id: str = ""  # the API key that created it
    closed_by_revocation: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def follows(self, campaign_id: str) -> bool:
        return self.campaign_ids is None or campaign_id in self.campaign_ids

    def offer(self, update: Update, max_queue_size: int) -> None:
        self.queue.pop(update.campaign_id, None)
        self.queue[update.campaign_id] = update
        while len(self.queue) > max_queue_size:
            self.queue.popitem(last=False)
        self.changed.set()

    def drain(self) -> list[Update]:
        """The queued updates, oldest first; the queue is left empty."""
        updates = list(self.queue.values())
        self.queue.clear()
        self.changed.clear()
        self.touch()
        return updates

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class UpdateHub:
    def __init__(
        self,
        max_queue_size: int = 100,
        idle_timeout: float = 1800.0,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.max_queue_size = max_queue_size
        self.idle_timeout = idle_timeout
        self._subscriptions: dict[str, Subscription] = {}
        self._by_organization: dict[str, set[Subscription]] = {}
        self._sequence = 0
        self._metrics = metrics = metrics or ServerMetrics()
        metrics.subscriptions.set_function(self.subscription_count)
        metrics.queued_updates.set_function(self.queued_updates)

    def create(
        self,
        organization_id: str,
        campaign_ids: Iterable[str] | None,
        time_window: int,
        created_at: datetime,
        *,
        listed: bool = True,
        key_id: str = "",
    ) -> Subscription:
        """A new subscription; ``listed=False`` makes one that only its
        stream knows (it is not in the stats and cannot be polled).
        ``key_id`` names the key that creates it: revoking that key removes it."""
        ids = frozenset(campaign_ids) if campaign_ids else None
        subscription = Subscription(
            secrets.token_urlsafe(24), organization_id, ids, time_window, created_at, key_id=key_id
        )
        if listed:
            self._subscriptions[subscription.id] = subscription
        self._by_organization.setdefault(organization_id, set()).add(subscription)
        return subscription

    def find(self, subscription_id: str) -> Subscription:
        """The subscription with this id (the id is its capability)."""
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            raise NotFound("Subscription not found")
        subscription.touch()
        return subscription

    def get(self, subscription_id: str, organization_id: str) -> Subscription:
        """The subscription, which must belong to ``organization_id``."""
        subscription = self.find(subscription_id)
        if subscription.organization_id != organization_id:
            raise PermissionDenied("the subscription belongs to another organization")
        return subscription

    def remove(self, subscription: Subscription) -> None:
        subscription.closed = True
        subscription.changed.set()  # wakes its streams, which then end
        self._subscriptions.pop(subscription.id, None)
        siblings = self._by_organization.get(subscription.organization_id)
        if siblings is not None:
            siblings.discard(subscription)
            if not siblings:
                del self._by_organization[subscription.organization_id]

    def close_all(self) -> None:
        """Ends every subscription (at shutdown): their streams finish, telling
        readers to reconnect elsewhere."""
        for subscriptions in list(self._by_organization.values()):
            for subscription in list(subscriptions):
                subscription.closed_by_shutdown = True
                self.remove(subscription)

    def remove_created_with(self, key_id: str) -> int:
        """Removes the subscriptions a revoked key created (their id would
        otherwise go on reading without the key); returns how many."""
        revoked = [
            subscription
            for subscriptions in self._by_organization.values()
            for subscription in subscriptions
            if subscription.key_id == key_id
        ]
        for subscription in revoked:
            subscription.closed_by_revocation = True
            self.remove(subscription)
        return len(revoked)

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def followed_organizations(self) -> dict[str, set[int]]:
        """Each organization somebody follows, with the windows followed."""
        return {
            organization_id: {s.time_window for s in subscriptions}
            for organization_id, subscriptions in self._by_organization.items()
            if subscriptions
        }

    def follows_organization(self, organization_id: str) -> bool:
        """Whether anyone follows the organization or one of its campaigns."""
        return bool(self._by_organization.get(organization_id))

    def windows(self, organization_id: str, campaign_id: str) -> set[int]:
        """The windows in which someone follows this campaign (empty: nobody)."""
        return {
            s.time_window
            for s in self._by_organization.get(organization_id, ())
            if s.follows(campaign_id)
        }

    def publish(self, update: Update, time_window: int) -> None:
        offered = 0
        for subscription in self._by_organization.get(update.organization_id, ()):
            if subscription.time_window == time_window and subscription.follows(update.campaign_id):
                subscription.offer(update, self.max_queue_size)
                offered += 1
        if offered:
            self._metrics.updates_published.inc(offered)

    # Read by metrics scrapes on another thread: each copies what it walks
    # first (one step under the GIL), since the event loop may change it.

    def subscription_count(self) -> int:
        """Subscriptions of every organization, stream-only ones included."""
        return sum(len(group) for group in list(self._by_organization.values()))

    def queued_updates(self) -> int:
        """Updates waiting in the queues of every subscription."""
        return sum(
            len(subscription.queue)
            for group in list(self._by_organization.values())
            for subscription in list(group)
        )

    def sweep(self) -> int:
        """Removes subscriptions nobody has read or polled for ``idle_timeout``."""
        cutoff = time.monotonic() - self.idle_timeout
        idle = [
            s for s in self._subscriptions.values() if s.readers == 0 and s.last_activity < cutoff
        ]
        for subscription in idle:
            self.remove(subscription)
        return len(idle)

    def stats(self, organization_id: str) -> tuple[int, int, dict[str, int]]:
        """(active subscriptions, queued updates, subscriptions by organization),
        counting only ``organization_id``'s: one organization does not see
        another's."""
        mine = [s for s in self._subscriptions.values() if s.organization_id == organization_id]
        queued = sum(len(s.queue) for s in mine)
        return len(mine), queued, ({organization_id: len(mine)} if mine else {})
