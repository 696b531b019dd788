"""From commits to updates.

Every flush sends, inside its transaction, a NOTIFY naming the campaigns it
changed (``server.store.events``), so every server process on the database
can learn of every commit, its own or another's. The publisher of a process
LISTENs from its first subscription on (``follow``, awaited before the
subscription is made, so that no commit after it goes unheard), and for the
changed campaigns that someone here follows reads fresh metrics and hands
them to the hub: at most one snapshot per campaign every ``min_interval``
seconds, the newest numbers always. A process nobody has followed updates
on (one that only ingests) does not listen: it is not woken by every commit
of every process (16 single-event calls in flight: about 4% of its CPU per
call, ``python -m bench.ingest``).
"""

import asyncio
import contextlib
import contextvars
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg

from server.metrics.reader import MetricsReader
from server.metrics.window import Window
from server.store.events import UPDATES_CHANNEL
from server.updates.hub import Update, UpdateHub

log = logging.getLogger(__name__)

Campaign = tuple[str, str]  # (organization_id, campaign_id)

LISTEN_WAIT = 10  # seconds the first subscription waits, at most, for LISTEN


class UpdatePublisher:
    def __init__(
        self,
        hub: UpdateHub,
        reader: MetricsReader,
        database_url: str,
        *,
        min_interval: float = 0.25,
        sweep_interval: float = 30.0,
    ) -> None:
        self._hub = hub
        self._reader = reader
        self._url = database_url
        self.min_interval = min_interval
        self.sweep_interval = sweep_interval
        self._dirty: dict[Campaign, None] = {}  # an ordered set
        self._next_allowed: dict[Campaign, float] = {}
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()
        self._catching_up: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        # The listener's first try ended (or took ``LISTEN_WAIT``): no more waits.
        self._tried = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Starts publishing; listening starts with the first ``follow``."""
        self._tasks = [
            asyncio.create_task(self._publish(), name="updates-publish"),
            asyncio.create_task(self._sweep(), name="updates-sweep"),
        ]

    async def follow(self) -> None:
        """Called before a subscription is made: starts listening if this
        process does not yet, and returns once LISTEN is in place. When
        PostgreSQL cannot be reached (the first try failed, or took
        ``LISTEN_WAIT`` seconds) it returns at once: the subscription is
        made, and gets fresh numbers once LISTEN is in place."""
        if self._stopped:
            return
        if self._listener is None:
            # In a context of its own, not the first subscriber's (its
            # request id would name every line the listener logs).
            self._listener = asyncio.create_task(
                self._listen(), name="updates-listen", context=contextvars.Context()
            )
            self._tasks.append(self._listener)
        if not self._tried.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), LISTEN_WAIT)
            self._tried.set()

    async def stop(self) -> None:
        self._stopped = True
        tasks = [*self._tasks, *([self._catching_up] if self._catching_up else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def heard(self, payload: str) -> None:
        """A commit's NOTIFY: marks the campaigns it names of the
        organizations someone here follows (the others need no snapshot)."""
        follows = self._hub.follows_organization
        self.mark(campaign for campaign in _parse(payload) if follows(campaign[0]))

    def mark(self, campaigns: Iterable[Campaign]) -> None:
        """Notes campaigns whose numbers changed."""
        dirty = len(self._dirty)
        for campaign in campaigns:
            self._dirty[campaign] = None
        if len(self._dirty) > dirty:
            self._wake.set()

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=LISTEN_WAIT
                ) as conn:
                    await conn.execute(f"LISTEN {UPDATES_CHANNEL}")
                    self.listening.set()
                    self._tried.set()
                    delay = 0.1
                    if self._hub.followed_organizations():
                        # Commits made while nobody listened went unheard: after
                        # a lost connection, or for subscriptions made while
                        # ``follow`` could not reach PostgreSQL.
                        self._catching_up = asyncio.create_task(self._catch_up())
                    async for note in conn.notifies():
                        self.heard(note.payload)
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                self._tried.set()
                log.warning("live updates paused, PostgreSQL unreachable: %s", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _catch_up(self) -> None:
        """Marks every followed campaign that has numbers, so that its
        subscribers get them fresh after LISTEN was lost for a while."""
        try:
            for organization_id, windows in self._hub.followed_organizations().items():
                window = Window.ending_now(max(windows))
                metrics = await self._reader.organization(organization_id, window)
                self.mark(
                    (organization_id, m.campaign_id)
                    for m in metrics
                    if self._hub.windows(organization_id, m.campaign_id)
                )
        except Exception:
            log.exception("refreshing live updates after a lost connection failed")

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                now = loop.time()
                ready = [c for c in self._dirty if self._next_allowed.get(c, 0.0) <= now]
                if not ready:
                    # Rate limit: wait for the first campaign allowed again,
                    # or for news.
                    first = min(self._next_allowed[c] for c in self._dirty)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), first - now)
                    self._wake.clear()
                    continue
                for campaign in ready:
                    del self._dirty[campaign]
                    self._next_allowed[campaign] = now + self.min_interval
                try:
                    await self._publish_now(ready)
                except Exception:
                    log.exception("publishing live updates failed")

    async def _publish_now(self, campaigns: list[Campaign]) -> None:
        wanted: dict[tuple[str, int], set[str]] = defaultdict(set)
        for organization_id, campaign_id in campaigns:
            for seconds in self._hub.windows(organization_id, campaign_id):
                wanted[organization_id, seconds].add(campaign_id)
        for (organization_id, seconds), campaign_ids in wanted.items():
            window = Window.ending_now(seconds)
            metrics, summary = await self._reader.organization_with_summary(organization_id, window)
            now = datetime.now(UTC)
            for m in metrics:
                if m.campaign_id in campaign_ids:
                    update = Update(
                        self._hub.next_sequence(),
                        organization_id,
                        m.campaign_id,
                        m,
                        summary,
                        now,
                        active_campaigns=len(metrics),
                    )
                    self._hub.publish(update, seconds)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval)
            removed = self._hub.sweep()
            if removed:
                log.info("removed %d idle subscriptions", removed)
            cutoff = loop.time() - 10 * self.min_interval
            for campaign in [c for c, t in self._next_allowed.items() if t < cutoff]:
                del self._next_allowed[campaign]


def _parse(payload: str) -> list[Campaign]:
    campaigns = []
    for line in payload.splitlines():
        organization_id, _, campaign_id = line.partition("\t")
        if campaign_id:
            campaigns.append((organization_id, campaign_id))
    return campaigns
