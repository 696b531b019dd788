"""The server is killed (SIGKILL) in the middle of client-streaming ingest
and started again on the same port; the client retries each stream that was
not acknowledged, within its deadline. The metrics then count exactly what
was sent: nothing lost, nothing counted twice."""

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_processes import (
    Postgres,
    ServerProcess,
    Trial,
    counted,
    events_for,
    ids_of,
    make_tenant,
    patient_client,
    wait_until,
)

from clients import pb

STREAMS = 8
MESSAGES = 5
EVENTS_PER_MESSAGE = 400

# A statement of a writer's flush transaction running (or the transaction
# open between its statements): the COPY into staging, or the insert.
IN_FLUSH = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'
  AND (query LIKE 'COPY staging_events%%' OR query LIKE '%%INSERT INTO events%%')
"""


def wait_for_a_flush(postgres: Postgres, timeout: float) -> None:
    with postgres.connect() as conn:
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute(IN_FLUSH).fetchone()
            if row is not None and row[0] > 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError("no flush was seen running")
            time.sleep(0.001)


@pytest.mark.parametrize(
    "kill_point", ["after-1-stream", "after-3-streams", "after-6-streams", "mid-flush"]
)
def test_a_killed_server_loses_and_doubles_nothing_of_retried_streams(
    fault_postgres: Postgres, tmp_path: Path, record: Callable[[Trial], None], kill_point: str
) -> None:
    tenant = make_tenant(fault_postgres.url)
    streams = [
        [events_for(tenant, EVENTS_PER_MESSAGE) for _ in range(MESSAGES)] for _ in range(STREAMS)
    ]
    sent = ids_of(e for stream in streams for batch in stream for e in batch)
    replies: list[pb.StreamEventsResponse] = []
    failures: list[BaseException] = []
    server = ServerProcess(fault_postgres.url, tmp_path / "server.log")
    server.start()

    def send() -> None:
        try:
            with patient_client(server.target, tenant, timeout=40) as client:
                for batches in streams:
                    replies.append(client.stream_events(batches))
        except BaseException as exc:
            failures.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        if kill_point == "mid-flush":
            wait_until(lambda: len(replies) >= 2 or failures, 30, "two streams acknowledged")
            wait_for_a_flush(fault_postgres, timeout=30)
        else:
            wanted = int(kill_point.split("-")[1])
            wait_until(lambda: len(replies) >= wanted or failures, 30, f"{wanted} streams")
        assert not failures, failures
        server.kill()
        acknowledged_before_kill = len(replies)
        assert acknowledged_before_kill < STREAMS, "the kill came after the last stream"
        server.start()
        sender.join(60)
        assert not sender.is_alive(), "the client did not finish within its deadlines"
        assert not failures, f"{failures!r}\n{server.log()}"
        with patient_client(server.target, tenant) as client:
            total = counted(client, tenant)
    finally:
        server.close()

    stored = fault_postgres.stored_ids(tenant.organization_id)
    reported = sum(r.duplicates for r in replies)
    note = (
        f"killed after {acknowledged_before_kill} streams acknowledged; "
        f"{reported} retried events reported as duplicates"
    )
    acknowledged = sum(r.accepted + r.duplicates for r in replies)
    record(
        Trial(
            "sigkill-mid-stream",
            kill_point,
            len(sent),
            acknowledged,
            total,
            len(stored & sent),
            note,
        )
    )
    assert len(replies) == STREAMS
    assert all(not r.rejected for r in replies)
    # Each stream's reply accounts for every one of its events: accepted now,
    # or a duplicate (committed by an attempt whose reply the kill swallowed).
    assert acknowledged == len(sent)
    assert stored == sent
    assert total == len(sent)
