"""PostgreSQL stops for some seconds during steady ingest and comes back.
Health turns NOT_SERVING and back to SERVING; an ingest call made meanwhile
fails with UNAVAILABLE within its deadline; the clients' retries complete;
the counts are exact; the server is never restarted, and its live updates
resume."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from fault_processes import (
    Postgres,
    ServerProcess,
    Tenant,
    Trial,
    counted,
    events_for,
    ids_of,
    make_tenant,
    own_folder,
    patient_client,
    wait_until,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients import AnalyticsClient, make_event, pb

OUTAGE_SECONDS = 4.0
BATCH = 200
PROBE_DEADLINE = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STATUS_NAMES = {SERVING: "SERVING", NOT_SERVING: "NOT_SERVING"}


class HealthWatch:
    """Asks the server's health every 50 ms; keeps each change of status."""

    def __init__(self, target: str) -> None:
        self.changes: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(target,), daemon=True)
        self._thread.start()

    @property
    def status(self) -> int | None:
        return self.changes[-1][1] if self.changes else None

    def _watch(self, target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._done.wait(0.05):
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    continue
                if status != self.status:
                    self.changes.append((time.monotonic(), status))

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


def test_a_database_outage_is_ridden_out_with_exact_counts(
    tmp_path: Path, record: Callable[[Trial], None]
) -> None:
    with own_folder("faults-outage-pg-") as folder:
        postgres = Postgres(folder)
        try:
            run_outage(postgres, tmp_path, record)
        finally:
            postgres.close()


def run_outage(postgres: Postgres, tmp_path: Path, record: Callable[[Trial], None]) -> None:
    tenant = make_tenant(postgres.url)
    # Keys and campaigns are looked up again after a second, so that the
    # outage reaches those lookups too, not only the writer.
    server = ServerProcess(postgres.url, tmp_path / "server.log", key_cache_seconds=1)
    server.start()
    sent: list[pb.Event] = []
    acknowledged = 0
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def send() -> None:
        nonlocal acknowledged
        with patient_client(server.target, tenant, timeout=30) as client:
            for _ in range(2_000):  # bounded; stopped much earlier
                if stop.is_set():
                    return
                events = events_for(tenant, BATCH)
                with lock:
                    sent.extend(events)
                try:
                    reply = client.ingest(events)
                except BaseException as exc:
                    failures.append(exc)
                    return
                with lock:
                    acknowledged += reply.accepted + reply.duplicates
                time.sleep(0.02)

    health = HealthWatch(server.target)
    senders = [threading.Thread(target=send, daemon=True) for _ in range(2)]
    for thread in senders:
        thread.start()
    probe: tuple[grpc.StatusCode, float] | None = None
    retried = pb.IngestEventsResponse()
    probe_events = events_for(tenant, 10)
    try:
        wait_until(lambda: health.status == SERVING, 10, "health SERVING")
        wait_until(lambda: acknowledged >= 2_000 or failures, 20, "2,000 events acknowledged")
        postgres.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: health.status == NOT_SERVING, 10, "health NOT_SERVING")
        # A call that does not retry: answered within its deadline, with a
        # status to retry on.
        with grpc.insecure_channel(server.target) as channel:
            started = time.monotonic()
            try:
                pb.IngestServiceStub(channel).IngestEvents(
                    pb.IngestEventsRequest(events=probe_events),
                    metadata=(("authorization", f"Bearer {tenant.key}"),),
                    timeout=PROBE_DEADLINE,
                )
                probe = (grpc.StatusCode.OK, time.monotonic() - started)
            except grpc.RpcError as exc:
                probe = (exc.code(), time.monotonic() - started)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
        during = acknowledged
        postgres.start()
        wait_until(lambda: health.status == SERVING, 20, "health SERVING again")
        wait_until(lambda: acknowledged >= during + 2_000 or failures, 30, "ingest to go on")
        stop.set()
        for thread in senders:
            thread.join(40)
        assert not any(thread.is_alive() for thread in senders)
        assert not failures, failures
        assert server.alive() and server.starts == 1, "the server had to be restarted"
        with patient_client(server.target, tenant) as client:
            # UNAVAILABLE does not say whether the writer kept the events (it
            # did, and committed them once PostgreSQL was back): the caller
            # sends them again, safely.
            retried = client.ingest(probe_events)
            sent.extend(probe_events)
            acknowledged += retried.accepted + retried.duplicates
            before, after, impression = live_update_after(client, server.target, tenant)
            sent.append(impression)
            acknowledged += 1
            total = counted(client, tenant)
    finally:
        stop.set()
        health.close()
        server.close()

    ids = ids_of(sent)
    stored = postgres.stored_ids(tenant.organization_id)
    statuses = [status for _, status in health.changes]
    record(
        Trial(
            "postgres-outage",
            f"{OUTAGE_SECONDS:g}s",
            len(ids),
            acknowledged,
            total,
            len(stored & ids),
            f"health {' -> '.join(STATUS_NAMES[s] for s in statuses)}; a call "
            f"during the outage with a {PROBE_DEADLINE:g} s deadline: "
            + (f"{probe[0].name} after {probe[1]:.2f} s" if probe else "none made")
            + f", retried later: {retried.duplicates} of its 10 events already stored",
        )
    )
    assert statuses == [SERVING, NOT_SERVING, SERVING]
    assert probe is not None
    assert probe[0] is grpc.StatusCode.UNAVAILABLE and probe[1] <= PROBE_DEADLINE, probe
    assert acknowledged == len(ids)
    assert stored == ids
    assert total == len(ids)
    assert after == before + 1, "live updates did not resume after the outage"


def live_update_after(
    client: AnalyticsClient, target: str, tenant: Tenant
) -> tuple[int, int, pb.Event]:
    """Follows a campaign's live updates and ingests an impression: its
    impressions before, and in the update that follows (which comes through
    PostgreSQL's NOTIFY, so the server listens again)."""
    campaign = tenant.campaign_ids[0]
    with grpc.insecure_channel(target) as channel:
        stream = pb.SubscriptionServiceStub(channel).StreamUpdates(
            pb.StreamUpdatesRequest(
                organization_id=tenant.organization_id, campaign_ids=[campaign], resume=True
            ),
            metadata=(("authorization", f"Bearer {tenant.key}"),),
            timeout=20,
        )
        try:
            before = next_update(stream).data.metrics.impressions
            impression = make_event("impression", campaign, tenant.organization_id)
            assert client.ingest([impression]).accepted == 1
            after = next_update(stream).data.metrics.impressions
        finally:
            stream.cancel()
    return before, after, impression


def next_update(stream: Iterator[pb.StreamUpdatesResponse]) -> pb.AnalyticsUpdate:
    for message in stream:
        if message.HasField("update"):
            return message.update
    raise AssertionError("the update stream ended")
