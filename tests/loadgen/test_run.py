"""``campaign-analytics load`` run as a person runs it, against the real server
(and gateway), and against a server that loses events."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lossy_server import LossyServer
from support import GatewayThread, ServerThread, Tenant, event

from clients import pb
from loadgen.check import COUNTED_BY
from server.domain import Role

REPORT_KEYS = {
    "mode", "target", "organization_id", "campaign_ids", "fresh_campaigns", "concurrency",
    "batch", "processes", "seed", "bounds", "run_id", "started_at", "stopped_by", "seconds",
    "events", "calls", "first_error", "acknowledged_per_second", "latency_ms", "rejections",
    "check",
}  # fmt: skip


def load(tenant: Tenant, *args: str, role: Role = Role.ADMIN) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CAMPAIGN_ANALYTICS_API_KEY=tenant.keys[role])
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "--log-level", "warning", "load", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def report(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def assert_exact(document: dict[str, Any], events: int) -> None:
    assert document["events"] == {
        "sent": events, "acknowledged": events, "duplicates": 0, "rejected": 0, "refused": 0,
        "unknown": 0,
    }  # fmt: skip
    check = document["check"]
    assert check["passed"] is True
    assert check["per_type"] is True
    assert check["acknowledged_total"] == check["counted_total"] == events
    assert check["acknowledged"] == check["counted"]
    assert sum(check["counted"].values()) == events
    assert check["message"] == f"PASS: acknowledged {events:,}, counted {events:,}"


def test_a_stream_run_passes_the_exact_count_check(
    analytics_server: ServerThread, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "report.json"
    run = load(
        tenant, "--target", analytics_server.target, "--events", "3000", "--batch", "100",
        "--concurrency", "4", "--stream-events", "1000", "--fresh-campaigns", "3",
        "--json", str(path),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS: acknowledged 3,000, counted 3,000" in run.stdout
    document = report(path)
    assert set(document) == REPORT_KEYS | {"stream_events"}
    assert_exact(document, 3000)
    assert document["mode"] == "stream"
    assert document["stopped_by"] == "events"
    assert document["organization_id"] == tenant.organization_id
    assert document["fresh_campaigns"] is True
    assert len(document["campaign_ids"]) == 3
    assert all(c.startswith(f"load-{document['run_id']}-") for c in document["campaign_ids"])
    calls = document["calls"]
    assert calls["answered"] >= 3 and not calls["refused"] and not calls["failed"]  # <= 1,000 each
    assert set(document["check"]["counted"]) == set(COUNTED_BY)
    latency = document["latency_ms"]
    assert latency["samples"] == 30  # one a stream message
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert document["acknowledged_per_second"] > 0


def test_existing_campaigns_are_checked_by_their_difference(
    analytics_server: ServerThread, stubs: Any, tenant: Tenant, tmp_path: Path
) -> None:
    campaign_id = tenant.campaign_ids[0]
    earlier = [event("click", campaign_id, tenant.organization_id) for _ in range(7)]
    stubs.ingest.IngestEvents(pb.IngestEventsRequest(events=earlier), metadata=tenant.auth())
    path = tmp_path / "report.json"
    run = load(
        tenant, "--target", analytics_server.target, "--campaigns", ",".join(tenant.campaign_ids),
        "--mode", "unary", "--events", "1000", "--batch", "250", "--json", str(path),
        role=Role.ADMIN,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    document = report(path)
    assert_exact(document, 1000)
    assert document["fresh_campaigns"] is False
    assert document["campaign_ids"] == tenant.campaign_ids
    assert "other traffic" in document["check"]["notes"][0]


@pytest.mark.parametrize(
    ("mode", "events", "batch"), [("unary", 2000, 100), ("unary-single", 300, 1)]
)
def test_unary_runs_pass(
    analytics_server: ServerThread,
    tenant: Tenant,
    tmp_path: Path,
    mode: str,
    events: int,
    batch: int,
) -> None:
    path = tmp_path / "report.json"
    run = load(
        tenant, "--target", analytics_server.target, "--mode", mode, "--events", str(events),
        "--batch", str(batch), "--concurrency", "4", "--processes", "2",
        "--fresh-campaigns", "2", "--json", str(path),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    document = report(path)
    assert_exact(document, events)
    assert document["processes"] == 2
    assert document["batch"] == batch
    assert document["calls"]["answered"] == events // batch
    assert document["latency_ms"]["samples"] == events // batch


def test_a_rest_run_passes(
    analytics_server: ServerThread, gateway: GatewayThread, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "report.json"
    run = load(
        tenant, "--target", analytics_server.target, "--mode", "rest",
        "--gateway", f"127.0.0.1:{gateway.port}", "--events", "2050", "--batch", "500",
        "--concurrency", "2", "--fresh-campaigns", "2", "--json", str(path),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    document = report(path)
    assert_exact(document, 2050)  # the last request carries the 50 left
    assert document["target"] == f"127.0.0.1:{gateway.port}"
    assert document["calls"]["answered"] == 5


@pytest.fixture
def lossy_server(analytics_server: ServerThread) -> Iterator[LossyServer]:
    server = LossyServer(analytics_server.target, every=10)
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["stream", "unary"])
def test_the_check_fails_when_the_server_loses_events(
    lossy_server: LossyServer, tenant: Tenant, tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "report.json"
    run = load(
        tenant, "--target", lossy_server.target, "--mode", mode, "--events", "2000",
        "--batch", "100", "--concurrency", "2", "--fresh-campaigns", "2", "--json", str(path),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert lossy_server.ingest is not None
    assert lossy_server.ingest.dropped == 200
    assert "MISMATCH: sent/acknowledged 2,000/2,000, counted 1,800" in run.stdout
    document = report(path)
    assert document["events"]["acknowledged"] == 2000
    check = document["check"]
    assert check["passed"] is False
    assert check["counted_total"] == 1800
    assert check["acknowledged"] != check["counted"]


def test_an_unreachable_server_is_a_usage_error(tenant: Tenant) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = load(tenant, "--target", f"127.0.0.1:{port}", "--duration", "1")
    assert run.returncode == 2
    assert f"cannot reach the server at 127.0.0.1:{port}" in run.stderr
    assert "campaign-analytics serve" in run.stderr


def test_creating_campaigns_needs_an_admin_key(
    analytics_server: ServerThread, tenant: Tenant
) -> None:
    run = load(tenant, "--target", analytics_server.target, "--duration", "1", role=Role.INGEST)
    assert run.returncode == 2
    assert "admin" in run.stderr and "create-key" in run.stderr
