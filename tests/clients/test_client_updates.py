"""The client's live updates against the real server: polling, iterating,
and reconnecting by itself (with resume) when the server restarts."""

import socket
import threading

from support import ServerThread, make_tenant
from tests_live import ingest

from clients import AnalyticsClient, RetryPolicy, make_event
from server.domain import Role


def test_subscribe_poll_iterate_unsubscribe(analytics_server: ServerThread) -> None:
    tenant = make_tenant(analytics_server, campaigns=2)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    with AnalyticsClient(analytics_server.target, api_key=tenant.keys[Role.READ]) as client:
        subscription = client.subscribe(org, [campaign]).subscription
        ingest(analytics_server.target, tenant, make_event("impression", campaign, org))
        update = next(client.updates(subscription.id))
        assert update.campaign_id == campaign and update.data.metrics.impressions == 1
        assert client.poll_updates(subscription.id).count == 0  # the stream drained it
        removed = client.unsubscribe(subscription.id)
        assert removed.message == "Subscription removed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_updates_reconnect_and_resume_after_a_server_restart(database_url: str) -> None:
    port = free_port()
    server = ServerThread(database_url, grpc_port=port)
    tenant = make_tenant(server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    received: list[int] = []
    got_two = threading.Event()
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, jitter=False)
    client = AnalyticsClient(server.target, api_key=tenant.keys[Role.READ], retry=policy)

    def follow() -> None:
        try:
            for update in client.updates(organization_id=org, campaign_ids=[campaign]):
                received.append(update.data.metrics.impressions)
                if len(received) >= 2:
                    got_two.set()
                    return
        except Exception:  # the client closing ends the loop
            return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        # The first update proves the stream is open.
        for _ in range(100):
            ingest(server.target, tenant, make_event("impression", campaign, org))
            if received:
                break
            got_two.wait(0.1)
        assert received, "no update before the restart"
        server.stop()
        server = ServerThread(database_url, grpc_port=port)
        # After reconnecting, the client gets the current numbers (resume),
        # which count every event so far.
        ingest(server.target, tenant, make_event("impression", campaign, org))
        assert got_two.wait(20), "no update after the restart"
        assert received[-1] > received[0]
    finally:
        client.close()
        reader.join(10)
        server.stop()
