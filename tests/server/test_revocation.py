"""Revoking a key takes effect at once on every server of the database, even
one that has the key cached: calls are refused, open streams (StreamUpdates,
StreamEvents) end with UNAUTHENTICATED, and subscriptions the key created are
removed. list-keys and revoke-key never show a secret."""

import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from support import ServerThread, Tenant, event, make_tenant

from clients import pb
from server.auth import REVOCATIONS_CHANNEL, hash_key, key_id_of
from server.domain import Role
from server.revocation import LISTENER_NAME
from server.store.database import libpq_url

REVOKED = "the API key was revoked"
DEADLINE = 20.0  # seconds; a stream that revocation failed to end fails the test by then


@pytest.fixture(scope="module")
def servers(database_url: str) -> Iterator[tuple[ServerThread, ServerThread]]:
    """Two servers on one database that trust a checked key for an hour, so
    that only the revocation notice can make them refuse it."""
    first = ServerThread(database_url, key_cache_seconds=3600, heartbeat_seconds=0.2)
    second = ServerThread(database_url, key_cache_seconds=3600, heartbeat_seconds=0.2)
    yield first, second
    first.stop()
    second.stop()


def campaign_analytics(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "--log-level",
            "debug",
            *args,
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_metrics(server: ServerThread, tenant: Tenant, role: Role = Role.READ) -> Any:
    with grpc.insecure_channel(server.target) as channel:
        return pb.MetricsServiceStub(channel).GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=tenant.campaign_ids[0]),
            metadata=tenant.auth(role),
            timeout=10,
        )


def refused_within(call: Callable[[], Any], seconds: float = 5.0) -> grpc.RpcError:
    """The error of ``call`` once it fails (the revocation notice is delivered
    asynchronously, within milliseconds of the commit)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
        except grpc.RpcError as error:
            return error
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.02)


def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def key_id(tenant: Tenant, role: Role) -> str:
    return key_id_of(tenant.keys[role])


def test_a_revoked_key_is_refused_at_once_by_every_server_that_cached_it(
    servers: tuple[ServerThread, ServerThread], database_url: str
) -> None:
    first, second = servers
    tenant = make_tenant(first)
    for server in servers:
        read_metrics(server, tenant)  # now cached for an hour

    revoked = campaign_analytics(database_url, "revoke-key", key_id(tenant, Role.READ))
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked the read key {key_id(tenant, Role.READ)} of {tenant.organization_id}" in (
        revoked.stdout
    )

    for server in (first, second):
        error = refused_within(lambda server=server: read_metrics(server, tenant))  # type: ignore[misc]
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == REVOKED
        # The organization's other keys go on working.
        read_metrics(server, tenant, Role.ADMIN)

    again = campaign_analytics(database_url, "revoke-key", key_id(tenant, Role.READ))
    assert again.returncode == 0, again.stderr
    assert "already revoked" in again.stdout
    unknown = campaign_analytics(database_url, "revoke-key", "000000000000")
    assert unknown.returncode != 0
    assert "no API key has id '000000000000'" in unknown.stderr


class BlockingRequests:
    """A client stream's requests: the given messages, then nothing until closed."""

    def __init__(self, *messages: pb.StreamEventsRequest) -> None:
        self._queue: queue.Queue[pb.StreamEventsRequest | None] = queue.Queue()
        for message in messages:
            self._queue.put(message)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[pb.StreamEventsRequest]:
        while (message := self._queue.get(timeout=DEADLINE + 10)) is not None:
            yield message


def test_open_streams_of_a_revoked_key_end_with_unauthenticated(
    servers: tuple[ServerThread, ServerThread],
) -> None:
    first, second = servers
    tenant = make_tenant(first)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    admin_key = key_id(tenant, Role.ADMIN)

    with (
        grpc.insecure_channel(first.target) as to_first,
        grpc.insecure_channel(second.target) as to_second,
    ):
        # A client stream on the first server, an update stream on the second.
        requests = BlockingRequests(
            pb.StreamEventsRequest(events=[event("impression", campaign, org)])
        )
        ingest = pb.IngestServiceStub(to_first).StreamEvents.future(
            iter(requests), metadata=tenant.auth(Role.ADMIN), timeout=DEADLINE
        )
        updates = pb.SubscriptionServiceStub(to_second).StreamUpdates(
            pb.StreamUpdatesRequest(organization_id=org),
            metadata=tenant.auth(Role.ADMIN),
            timeout=DEADLINE,
        )
        try:
            next(updates)  # the stream is open: an update or a heartbeat
            until(lambda: first.components.keys.streams.count(admin_key) == 1)
            assert second.components.keys.streams.count(admin_key) == 1

            first.call(_revoke(first, admin_key))

            with pytest.raises(grpc.RpcError) as ended:
                for _ in range(int(DEADLINE / 0.2) + 10):
                    next(updates)
            assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert ended.value.details() == REVOKED

            with pytest.raises(grpc.RpcError) as ended_ingest:
                ingest.result(timeout=DEADLINE)
            assert ended_ingest.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert ended_ingest.value.details() == REVOKED
        finally:
            requests.close()
            updates.cancel()
    until(lambda: first.components.keys.streams.count(admin_key) == 0)
    assert second.components.keys.streams.count(admin_key) == 0


def test_subscriptions_a_revoked_key_created_are_removed(
    servers: tuple[ServerThread, ServerThread],
) -> None:
    first, _ = servers
    tenant = make_tenant(first)
    with grpc.insecure_channel(first.target) as channel:
        stub = pb.SubscriptionServiceStub(channel)
        created = stub.CreateSubscription(
            pb.CreateSubscriptionRequest(organization_id=tenant.organization_id),
            metadata=tenant.auth(Role.READ),
        )
        subscription_id = created.subscription.id
        # Its id alone reads it, as a browser's EventSource does.
        stub.GetUpdates(pb.GetUpdatesRequest(subscription_id=subscription_id))
        stream = stub.StreamUpdates(
            pb.StreamUpdatesRequest(subscription_id=subscription_id), timeout=DEADLINE
        )
        assert next(stream).HasField("heartbeat")

        first.call(_revoke(first, key_id(tenant, Role.READ)))

        with pytest.raises(grpc.RpcError) as ended:
            for _ in range(int(DEADLINE / 0.2) + 10):
                next(stream)
        assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (ended.value.details() or "")
        with pytest.raises(grpc.RpcError) as gone:
            stub.GetUpdates(pb.GetUpdatesRequest(subscription_id=subscription_id))
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_revocation_missed_while_disconnected_applies_on_reconnection(
    servers: tuple[ServerThread, ServerThread], database_url: str
) -> None:
    first, _ = servers
    tenant = make_tenant(first)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    ingest_key = key_id(tenant, Role.INGEST)
    read_metrics(first, tenant)  # cached for an hour
    requests = BlockingRequests(pb.StreamEventsRequest(events=[event("click", campaign, org)]))
    with grpc.insecure_channel(first.target) as channel:
        ingest = pb.IngestServiceStub(channel).StreamEvents.future(
            iter(requests), metadata=tenant.auth(Role.INGEST), timeout=DEADLINE
        )
        try:
            until(lambda: first.components.keys.streams.count(ingest_key) == 1)
            # In one transaction: cut every LISTEN connection of the
            # revocations, then revoke both keys. The listeners reconnect
            # only after 0.1 s, so these notices reach nobody.
            with psycopg.connect(libpq_url(database_url)) as conn:
                cut = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (LISTENER_NAME,),
                ).fetchall()
                # One per server on this database: this test's two, and any
                # other the session runs on it.
                assert len(cut) >= 2
                for role in (Role.INGEST, Role.READ):
                    conn.execute(
                        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s",
                        (hash_key(tenant.keys[role]),),
                    )
                    conn.execute(
                        "SELECT pg_notify(%s, %s)", (REVOCATIONS_CHANNEL, key_id(tenant, role))
                    )
            with pytest.raises(grpc.RpcError) as ended:
                ingest.result(timeout=DEADLINE)
            assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert ended.value.details() == REVOKED
        finally:
            requests.close()
    error = refused_within(lambda: read_metrics(first, tenant))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


def test_list_keys_shows_each_key_but_never_a_secret(
    analytics_server: ServerThread, database_url: str
) -> None:
    tenant = make_tenant(analytics_server)
    revoked = campaign_analytics(database_url, "revoke-key", tenant.keys[Role.INGEST])
    assert revoked.returncode == 0, revoked.stderr  # the whole key names its id too
    listed = campaign_analytics(database_url, "list-keys", tenant.organization_id)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ID", "ROLE", "NAME", "CREATED", "REVOKED"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {key_id(tenant, role) for role in Role}
    for role in Role:
        row = rows[key_id(tenant, role)]
        assert f" {role.value} " in row
        revoked_column = row.split()[-1]
        assert (revoked_column == "UTC") is (role is Role.INGEST), row
    for run in (revoked, listed):
        output = run.stdout + run.stderr
        for key in tenant.keys.values():
            secret = key.split("_", 2)[2]
            assert secret not in output
            assert hash_key(key).hex() not in output

    nobody = campaign_analytics(database_url, "list-keys", "org_nobody")
    assert nobody.returncode != 0 and "does not exist" in nobody.stderr


async def _revoke(server: ServerThread, key_id: str) -> None:
    from server.auth import revoke_key

    _, revoked = await revoke_key(server.components.engine, key_id)
    assert revoked
