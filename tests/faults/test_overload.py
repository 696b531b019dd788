"""Overload: calls offered at twice the rate the server takes them in, not
waiting for replies. The server refuses the excess at once with
RESOURCE_EXHAUSTED and a retry-after hint (429 with Retry-After over REST),
its memory stays under a bound set by its buffer capacity, and every event
it acknowledged is counted, once."""

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import orjson
from fault_processes import (
    GatewayProcess,
    Postgres,
    ServerProcess,
    Tenant,
    Trial,
    counted,
    events_for,
    make_tenant,
    patient_client,
)
from google.protobuf import json_format

from clients import pb
from loadgen.engine import LoadSpec
from loadgen.workers import Load, Workers

CAPACITY = 50_000  # events the server holds at once (buffer_capacity)
BATCH = 1_000
STEADY_IN_FLIGHT = 32  # calls: 32,000 events, within CAPACITY
# Far more than a server takes in on this kind of machine (here, with ten
# campaigns, ~100,000 events/s in calls of 1,000), from two load processes
# (one cannot start calls that fast); checked afterwards to be at least twice
# what it took in.
OFFERED_EVENTS_PER_SECOND = 300_000
LOAD_PROCESSES = 2
OVERLOAD_SECONDS = 6.0
PROBES = 40
PROBES_AT_ONCE = 4
# What the server may grow by under overload: the events it holds (a few KiB
# each, decoded) and gRPC's buffers, well below what queueing every offered
# call would take (the overload offers ~100,000 events a second).
MEMORY_BOUND = 160 * 2**20


def run_load(workers: Workers, spec: LoadSpec, processes: int = 1) -> Load:
    """``spec`` run by ``processes`` load processes at once, each taking its
    share of the rate; their results merged."""
    spec.start_at = time.monotonic() + 0.2
    specs = [
        dataclasses.replace(spec, rate=spec.rate / processes if spec.rate else spec.rate)
        for _ in range(processes)
    ]
    return Load.merge(workers.run(specs, timeout=spec.seconds + 60))


def rate(result: Load, events: int) -> float:
    return events / max(0.1, result.seconds)


def percentile(result: Load, fraction: float) -> str:
    if not result.latencies:
        return "-"
    ordered = sorted(result.latencies)
    return f"{ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]:.2f}"


class Watch:
    """While the overload runs: samples the server's memory, and probes gRPC
    and REST (with requests built beforehand) until each has been refused."""

    def __init__(self, server: ServerProcess, gateway_url: str, tenant: Tenant) -> None:
        self.server, self.gateway_url, self.tenant = server, gateway_url, tenant
        self.rss: list[int] = []
        self.grpc_refusal: tuple[str, dict[str, str]] | None = None
        self.rest_refusal: httpx.Response | None = None
        self.acknowledged = 0  # events of probes that were taken in
        self.requests = [
            pb.IngestEventsRequest(events=events_for(tenant, BATCH)) for _ in range(PROBES)
        ]
        self.bodies = [
            orjson.dumps({"events": [json_format.MessageToDict(e) for e in r.events]})
            for r in self.requests[: PROBES // 2]
        ]
        self.requests = self.requests[PROBES // 2 :]
        self.done = threading.Event()
        self._lock = threading.Lock()
        # REST probes from a few threads at once, as the gRPC ones are sent.
        targets = (self._sample, self._probe_grpc, *[self._probe_rest] * PROBES_AT_ONCE)
        self._threads = [threading.Thread(target=target, daemon=True) for target in targets]

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(30)

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            self.rss.append(self.server.rss_bytes())

    def _probe_grpc(self) -> None:
        metadata = (("authorization", f"Bearer {self.tenant.key}"),)
        with grpc.insecure_channel(self.server.target) as channel:
            ingest = pb.IngestServiceStub(channel)
            self.done.wait(1.0)  # let the overload build up
            while not self.done.is_set() and self.grpc_refusal is None and self.requests:
                # A few at once, as the load's calls come: each is taken in
                # or refused as theirs are.
                calls = [
                    ingest.IngestEvents.future(self.requests.pop(), metadata=metadata, timeout=10)
                    for _ in range(min(PROBES_AT_ONCE, len(self.requests)))
                ]
                for call in calls:
                    try:
                        reply = call.result()
                        with self._lock:
                            self.acknowledged += reply.accepted
                    except grpc.RpcError as exc:
                        assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                        trailers = {k: str(v) for k, v in exc.trailing_metadata() or ()}
                        self.grpc_refusal = self.grpc_refusal or (exc.details() or "", trailers)

    def _probe_rest(self) -> None:
        headers = {"authorization": f"Bearer {self.tenant.key}"}
        with httpx.Client(base_url=self.gateway_url, headers=headers, timeout=10) as http:
            self.done.wait(1.0)
            while not self.done.is_set() and self.rest_refusal is None:
                try:
                    body = self.bodies.pop()
                except IndexError:
                    return
                response = http.post(
                    "/api/analytics/real-time",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                if response.status_code == 429:
                    self.rest_refusal = response
                else:
                    assert response.status_code == 200, response.text
                    with self._lock:
                        self.acknowledged += response.json()["accepted"]


def test_overload_is_refused_with_retry_after_and_memory_stays_bounded(
    fault_postgres: Postgres, tmp_path: Path, record: Callable[[Trial], None]
) -> None:
    tenant = make_tenant(fault_postgres.url, campaigns=10)
    server = ServerProcess(
        fault_postgres.url,
        tmp_path / "server.log",
        buffer_capacity=CAPACITY,
        max_batch_events=BATCH,
        # Refusals here are the server's, for load, not a key's rate limit.
        rate_limit_events_per_second=100_000_000,
        rate_limit_calls_per_second=1_000_000,
    )
    server.start()
    gateway = GatewayProcess(server.target, tmp_path / "gateway.log", request_timeout=10)
    gateway.start()
    workers = Workers(LOAD_PROCESSES)
    try:
        spec = LoadSpec(
            mode="unary",
            target=server.target,
            api_key=tenant.key,
            organization_id=tenant.organization_id,
            campaign_ids=tenant.campaign_ids,
            batch=BATCH,
            concurrency=STEADY_IN_FLIGHT,
            seconds=2.0,
            max_events=10_000_000,
            start_at=0.0,
            call_timeout=10.0,
        )
        # What the server takes in with calls enough in flight to keep it busy.
        steady = run_load(workers, spec)
        assert steady.acked > 0 and not steady.errors, steady.errors
        steady_rate = rate(steady, steady.acked)
        baseline = server.rss_bytes()
        with Watch(server, gateway.url, tenant) as watch:
            spec.mode = "overload"
            spec.rate = OFFERED_EVENTS_PER_SECOND / BATCH  # calls per second
            spec.max_in_flight = 400 // LOAD_PROCESSES
            spec.seconds = OVERLOAD_SECONDS
            overload = run_load(workers, spec, LOAD_PROCESSES)
        with patient_client(server.target, tenant) as client:
            total = counted(client, tenant)
    finally:
        workers.close()
        gateway.close()
        server.close()

    refused_calls = overload.errors.get("RESOURCE_EXHAUSTED", 0)
    offered = overload.sent / OVERLOAD_SECONDS  # the calls started in that time
    taken = rate(overload, overload.acked)
    acknowledged = steady.acked + overload.acked + watch.acknowledged
    stored = len(fault_postgres.stored_ids(tenant.organization_id))
    record(
        Trial(
            "overload-2x",
            "1",
            steady.sent + overload.sent,
            acknowledged,
            total,
            stored,
            f"steady {steady_rate:,.0f} events/s; overload offered {offered:,.0f} events/s, "
            f"taken in {taken:,.0f}/s; {refused_calls} calls ({overload.refused} events) "
            f"refused with RESOURCE_EXHAUSTED; answered in p50 {percentile(overload, 0.5)} / "
            f"p99 {percentile(overload, 0.99)} s; server RSS "
            f"{baseline / 2**20:,.0f} MiB before, {max(watch.rss) / 2**20:,.0f} MiB at most",
        )
    )
    assert set(overload.errors) == {"RESOURCE_EXHAUSTED"}, overload.first_error
    assert overload.unknown == 0
    assert offered >= 2 * taken, "the load offered less than twice what the server took in"
    assert refused_calls > 0, overload.errors
    assert watch.grpc_refusal is not None, "no gRPC probe was refused"
    details, trailers = watch.grpc_refusal
    assert trailers.get("retry-after") == "1" and "retry" in details, watch.grpc_refusal
    assert watch.rest_refusal is not None, "no REST probe was refused"
    assert watch.rest_refusal.headers.get("retry-after") == "1"
    assert max(watch.rss) - baseline <= MEMORY_BOUND
    # What the callers were told was stored is counted, once; what they were
    # told was refused was not stored.
    assert overload.duplicates == 0 and steady.duplicates == 0
    assert total == stored == acknowledged
