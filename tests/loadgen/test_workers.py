"""The worker processes report their counters while the load runs, and stop
early when asked."""

import time
from collections.abc import Iterator

import pytest
from support import ServerThread, Tenant

from loadgen.engine import LoadSpec
from loadgen.workers import Counters, Load, Workers
from server.domain import Role


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    running = Workers(1)
    yield running
    running.close()


def spec(server: ServerThread, tenant: Tenant, seconds: float, max_events: int) -> LoadSpec:
    return LoadSpec(
        "unary", server.target, tenant.keys[Role.INGEST], tenant.organization_id,
        tenant.campaign_ids, batch=10, concurrency=1, seconds=seconds, max_events=max_events,
        start_at=time.monotonic(),
    )  # fmt: skip


def test_counters_show_progress_before_the_load_ends(
    workers: Workers, analytics_server: ServerThread, tenant: Tenant
) -> None:
    seen: list[Counters] = []
    # Bounded by count, not time, so that a slow machine only makes it
    # longer: 500 calls one after the other take several progress reports.
    load_spec = spec(analytics_server, tenant, seconds=60, max_events=5_000)
    load = Load.merge(workers.run([load_spec], timeout=60, on_progress=seen.append, interval=0.1))
    assert load.acked == 5_000
    # Every call but the last came while the worker was still sending.
    during = seen[:-1]
    assert any(0 < c.acked < load.acked for c in during)
    assert any(c.sent > 0 and c.calls > 0 for c in during)
    assert seen[-1] == Counters(sent=load.sent, acked=load.acked, calls=load.calls)


def test_stop_ends_the_load_early(
    workers: Workers, analytics_server: ServerThread, tenant: Tenant
) -> None:
    def stop_once_started(counters: Counters) -> None:
        if counters.acked:
            workers.stop()

    load_spec = spec(analytics_server, tenant, seconds=120, max_events=10_000_000)
    # Without the stop the load would run for two minutes, past the timeout.
    load = Load.merge(
        workers.run([load_spec], timeout=60, on_progress=stop_once_started, interval=0.05)
    )
    assert 0 < load.acked == load.sent
