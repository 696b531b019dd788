"""Live updates: an event ingested anywhere reaches stream subscribers and
pollers with the new numbers; queues stay bounded; idle subscriptions go."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from support import ServerThread, Tenant, event, make_tenant
from tests_live import ingest

from clients import pb
from server.domain import Role


def next_update(stream: Iterator[pb.StreamUpdatesResponse]) -> pb.AnalyticsUpdate:
    for message in stream:
        if message.HasField("update"):
            return message.update
    raise AssertionError("the stream ended without an update")


def test_an_ingested_event_reaches_stream_subscribers_and_pollers(
    analytics_server: ServerThread, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    with grpc.insecure_channel(analytics_server.target) as channel:
        subs = pb.SubscriptionServiceStub(channel)
        created = subs.CreateSubscription(
            pb.CreateSubscriptionRequest(organization_id=org, campaign_ids=[campaign]),
            metadata=tenant.auth(Role.READ),
        )
        subscription = created.subscription
        assert created.success and subscription.active and len(subscription.id) >= 32
        stream = subs.StreamUpdates(
            pb.StreamUpdatesRequest(organization_id=org, campaign_ids=[campaign]),
            metadata=tenant.auth(Role.READ),
            timeout=20,
        )
        ingest(
            analytics_server.target,
            tenant,
            *(event("impression", campaign, org) for _ in range(10)),
            event("click", campaign, org, value=2.0),
            event("click", tenant.campaign_ids[1], org, value=5.0),  # not followed
        )
        update = next_update(stream)
        stream.cancel()
        assert update.type == pb.UpdateType.UPDATE_TYPE_METRICS
        assert (update.campaign_id, update.organization_id) == (campaign, org)
        m = update.data.metrics
        assert (m.impressions, m.clicks, m.ctr, m.total_spent) == (10, 1, 10.0, 2.0)
        assert update.data.summary.total_clicks == 2  # the organization's, both campaigns
        assert update.data.summary.active_campaigns == 2
        assert update.sequence > 0

        polled = subs.GetUpdates(
            pb.GetUpdatesRequest(subscription_id=subscription.id),
            metadata=tenant.auth(Role.READ),
        )
        assert polled.count == 1 and polled.updates[0].data.metrics.impressions == 10
        again = subs.GetUpdates(
            pb.GetUpdatesRequest(subscription_id=subscription.id),
            metadata=tenant.auth(Role.READ),
        )
        assert again.count == 0  # polling drains the queue

        stats = subs.GetSubscriptionStats(
            pb.GetSubscriptionStatsRequest(), metadata=tenant.auth(Role.READ)
        )
        assert stats.active_subscriptions == 1
        assert dict(stats.subscriptions_by_organization) == {org: 1}

        deleted = subs.DeleteSubscription(
            pb.DeleteSubscriptionRequest(subscription_id=subscription.id),
            metadata=tenant.auth(Role.READ),
        )
        assert deleted.message == "Subscription removed"
        with pytest.raises(grpc.RpcError) as raised:
            subs.GetUpdates(
                pb.GetUpdatesRequest(subscription_id=subscription.id),
                metadata=tenant.auth(Role.READ),
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_reader_that_never_reads_keeps_a_bounded_queue_of_the_latest(
    database_url: str,
) -> None:
    server = ServerThread(database_url, max_queue_size=3, update_interval_ms=0)
    try:
        tenant = make_tenant(server, campaigns=5)
        org = tenant.organization_id
        with grpc.insecure_channel(server.target) as channel:
            subs = pb.SubscriptionServiceStub(channel)
            subscription = subs.CreateSubscription(
                pb.CreateSubscriptionRequest(organization_id=org),
                metadata=tenant.auth(Role.READ),
            ).subscription
            for round_ in range(1, 4):
                for campaign in tenant.campaign_ids:
                    ingest(server.target, tenant, event("impression", campaign, org))
                    hub = server.components.hub
                    deadline = time.monotonic() + 10
                    while server.call(_queued(hub, subscription.id, campaign)) != round_:
                        assert time.monotonic() < deadline, "no update arrived"
                        time.sleep(0.01)
                    queued = server.call(_queue_length(hub, subscription.id))
                    assert queued <= 3
            updates = subs.GetUpdates(
                pb.GetUpdatesRequest(subscription_id=subscription.id),
                metadata=tenant.auth(Role.READ),
            ).updates
        # The newest campaigns' latest numbers, one update each.
        assert [u.campaign_id for u in updates] == tenant.campaign_ids[-3:]
        assert [u.data.metrics.impressions for u in updates] == [3, 3, 3]
    finally:
        server.stop()


async def _queued(hub, subscription_id: str, campaign_id: str) -> int:  # type: ignore[no-untyped-def]
    """Impressions in the queued update of a campaign (0 when none)."""
    subscription = hub._subscriptions[subscription_id]
    update = subscription.queue.get(campaign_id)
    return update.metrics.totals.impressions if update else 0


async def _queue_length(hub, subscription_id: str) -> int:  # type: ignore[no-untyped-def]
    return len(hub._subscriptions[subscription_id].queue)


def test_idle_subscriptions_are_removed_and_streams_beat(database_url: str) -> None:
    server = ServerThread(database_url, subscription_idle_seconds=0.4, heartbeat_seconds=0.1)
    try:
        tenant = make_tenant(server, campaigns=1)
        with grpc.insecure_channel(server.target) as channel:
            subs = pb.SubscriptionServiceStub(channel)
            stream = subs.StreamUpdates(
                pb.StreamUpdatesRequest(organization_id=tenant.organization_id),
                metadata=tenant.auth(Role.READ),
                timeout=10,
            )
            assert next(stream).HasField("heartbeat")
            stream.cancel()
            subscription = subs.CreateSubscription(
                pb.CreateSubscriptionRequest(organization_id=tenant.organization_id),
                metadata=tenant.auth(Role.READ),
            ).subscription
            deadline = time.monotonic() + 10
            while True:
                try:
                    subs.GetSubscriptionStats(
                        pb.GetSubscriptionStatsRequest(), metadata=tenant.auth(Role.READ)
                    )
                    if server.components.hub.stats(tenant.organization_id)[0] == 0:
                        break
                except grpc.RpcError:
                    raise
                assert time.monotonic() < deadline, "the idle subscription stayed"
                time.sleep(0.05)
            with pytest.raises(grpc.RpcError) as raised:
                subs.GetUpdates(
                    pb.GetUpdatesRequest(subscription_id=subscription.id),
                    metadata=tenant.auth(Role.READ),
                )
            assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_a_process_listens_for_commits_from_its_first_subscription_on(
    database_url: str,
) -> None:
    """A process nobody follows updates on is not woken by every commit: it
    LISTENs once a subscription is asked for, before the subscription is
    made, so the first commit after it reaches it."""
    server = ServerThread(database_url)
    try:
        tenant = make_tenant(server, campaigns=1)
        org, campaign = tenant.organization_id, tenant.campaign_ids[0]
        ingest(server.target, tenant, event("impression", campaign, org))
        listening = server.components.publisher.listening
        assert not listening.is_set(), "an ingest-only process listens for commits"
        with grpc.insecure_channel(server.target) as channel:
            subs = pb.SubscriptionServiceStub(channel)
            subscription = subs.CreateSubscription(
                pb.CreateSubscriptionRequest(organization_id=org, campaign_ids=[campaign]),
                metadata=tenant.auth(Role.READ),
            ).subscription
            assert listening.is_set()
            ingest(server.target, tenant, event("click", campaign, org, value=1.0))
            deadline = time.monotonic() + 10
            while True:
                polled = subs.GetUpdates(
                    pb.GetUpdatesRequest(subscription_id=subscription.id),
                    metadata=tenant.auth(Role.READ),
                )
                if polled.count:
                    break
                assert time.monotonic() < deadline, "the commit after subscribing went unheard"
                time.sleep(0.05)
            m = polled.updates[-1].data.metrics
            assert (m.impressions, m.clicks) == (1, 1)
    finally:
        server.stop()


def test_subscriptions_stay_within_the_organization(
    stubs: object, analytics_server: ServerThread, tenant: Tenant, other_tenant: Tenant
) -> None:
    with grpc.insecure_channel(analytics_server.target) as channel:
        subs = pb.SubscriptionServiceStub(channel)

        def code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
            with pytest.raises(grpc.RpcError) as raised:
                call()
            return raised.value.code()

        denied = grpc.StatusCode.PERMISSION_DENIED
        assert (
            code(
                lambda: subs.CreateSubscription(
                    pb.CreateSubscriptionRequest(organization_id=other_tenant.organization_id),
                    metadata=tenant.auth(Role.READ),
                )
            )
            is denied
        )
        assert (
            code(
                lambda: subs.CreateSubscription(
                    pb.CreateSubscriptionRequest(
                        organization_id=tenant.organization_id,
                        campaign_ids=[other_tenant.campaign_ids[0]],
                    ),
                    metadata=tenant.auth(Role.READ),
                )
            )
            is denied
        )
        theirs = subs.CreateSubscription(
            pb.CreateSubscriptionRequest(organization_id=other_tenant.organization_id),
            metadata=other_tenant.auth(Role.READ),
        ).subscription
        assert (
            code(
                lambda: subs.GetUpdates(
                    pb.GetUpdatesRequest(subscription_id=theirs.id), metadata=tenant.auth(Role.READ)
                )
            )
            is denied
        )
        assert (
            code(
                lambda: subs.CreateSubscription(
                    pb.CreateSubscriptionRequest(organization_id=tenant.organization_id),
                    metadata=tenant.auth(Role.INGEST),  # an ingest key cannot read
                )
            )
            is denied
        )
        assert (
            code(
                lambda: subs.CreateSubscription(
                    pb.CreateSubscriptionRequest(), metadata=tenant.auth(Role.READ)
                )
            )
            is grpc.StatusCode.INVALID_ARGUMENT
        )


def test_an_event_taken_by_one_process_reaches_a_subscriber_of_another(
    analytics_server: ServerThread, database_url: str, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    other = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "--log-level",
            "warning",
            "serve",
            "--no-gateway",
            "--grpc-port",
            "0",
            "--database-url",
            database_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CAMPAIGN_ANALYTICS_MIGRATE": "0"},
    )
    try:
        assert other.stdout is not None
        port = None
        for line in other.stdout:
            found = re.search(r"gRPC server listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the second server did not start"
        ingest(analytics_server.target, tenant, event("impression", campaign, org))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = pb.SubscriptionServiceStub(channel).StreamUpdates(
                pb.StreamUpdatesRequest(organization_id=org, campaign_ids=[campaign], resume=True),
                metadata=tenant.auth(Role.READ),
                timeout=30,
            )
            # Resuming starts with the current numbers, once the subscription
            # is in place; what follows can only come through NOTIFY.
            assert next_update(stream).data.metrics.impressions == 1
            ingest(analytics_server.target, tenant, event("impression", campaign, org))
            update = next_update(stream)
            stream.cancel()
        assert update.campaign_id == campaign and update.data.metrics.impressions == 2
    finally:
        other.terminate()
        assert other.wait(timeout=30) == 0
        if other.stdout is not None:
            other.stdout.close()
