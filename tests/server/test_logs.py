"""Logs as an operator reads them: ``campaign-analytics serve --log-format
json`` (server and gateway) writes a JSON object per line; a request's id
(sent in ``x-request-id``) is in the gateway's and the server's lines about
it; and no API key ever appears in the logs, whatever the calls."""

import contextvars
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from support import ServerThread, Tenant, event, make_tenant

from clients import pb
from server.domain import Role
from server.observability.logs import (
    JsonFormatter,
    TextFormatter,
    current_request_id,
    detached_context,
    request_id,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    process: "subprocess.Popen[bytes]"
    stdout: Path
    stderr: Path
    grpc_target: str
    gateway_url: str
    metrics_url: str

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def _wait_for_line(service: "subprocess.Popen[bytes]", path: Path, text: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if text in line:
                return line
        if service.poll() is not None:
            raise AssertionError(f"the service exited ({service.returncode}): {path.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"no line with {text!r} within 60 s")


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    http_port, metrics_port = free_port(), free_port()
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "--log-level",
                "debug",
                "serve",
                "--log-format",
                "json",
                "--database-url",
                database_url,
                "--grpc-port",
                "0",
                "--http-port",
                str(http_port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=out,
            stderr=err,
            env={
                **os.environ,
                "CAMPAIGN_ANALYTICS_MIGRATE": "0",
                "CAMPAIGN_ANALYTICS_ACCESS_LOG": "1",
            },
        )
    try:
        line = _wait_for_line(process, stdout, "gRPC server listening on ")
        grpc_target = line.rsplit(" ", 1)[1]
        _wait_for_line(process, stdout, "REST gateway listening on ")
        yield Service(
            process,
            stdout,
            stderr,
            grpc_target,
            f"http://127.0.0.1:{http_port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_carry_request_ids_and_never_a_key(
    service: Service, analytics_server: ServerThread
) -> None:
    tenant: Tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    bogus_key = "ca_" + uuid.uuid4().hex + uuid.uuid4().hex
    rest_id, grpc_id = f"rest-{uuid.uuid4().hex}", f"grpc-{uuid.uuid4().hex}"
    bad_event = {"eventType": "click", "campaignId": campaign, "organizationId": org, "value": -5}
    good_event = {"eventType": "impression", "campaignId": campaign, "organizationId": org}

    with httpx.Client(base_url=service.gateway_url, timeout=30) as http:
        reply = http.post(
            "/api/analytics/real-time",
            json={"events": [good_event, bad_event]},
            headers={**tenant.headers(Role.INGEST), "x-request-id": rest_id},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["accepted"] == 1 and len(reply.json()["rejected"]) == 1
        assert reply.headers["x-request-id"] == rest_id
        # Keys of every role, right and wrong, and keys that do not exist.
        for role in Role:
            http.post(
                "/api/analytics/real-time", json={"event": good_event}, headers=tenant.headers(role)
            )
            http.get("/api/analytics/real-time", headers=tenant.headers(role))
            http.get(f"/api/campaigns/{campaign}/analytics/real-time", headers=tenant.headers(role))
        for authorization in (f"Bearer {bogus_key}", bogus_key, f"Basic {bogus_key}"):
            denied = http.get("/api/analytics/real-time", headers={"authorization": authorization})
            assert denied.status_code == 401
        http.get(
            "/api/analytics/real-time/updates",
            params={"subscriptionId": "nothing", "format": "sse"},
            headers=tenant.headers(Role.READ),
        )
        assert "campaign_analytics_gateway_requests_total" in http.get("/metrics").text
    with grpc.insecure_channel(service.grpc_target) as channel:
        ingest = pb.IngestServiceStub(channel)
        bad = event("click", campaign, org)
        bad.event_type = pb.EventType.EVENT_TYPE_UNSPECIFIED
        replied = ingest.IngestEvents(
            pb.IngestEventsRequest(events=[event("view", campaign, org), bad]),
            metadata=(*tenant.auth(Role.INGEST), ("x-request-id", grpc_id)),
            timeout=30,
        )
        assert len(replied.rejected) == 1
        with pytest.raises(grpc.RpcError):
            ingest.IngestEvents(
                pb.IngestEventsRequest(events=[event("view", campaign, org)]),
                metadata=(("authorization", f"Bearer {bogus_key}"),),
                timeout=30,
            )
    metrics = httpx.get(service.metrics_url, timeout=10).text
    assert 'campaign_analytics_events_total{outcome="rejected",reason="invalid_value"}' in metrics

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(30) == 0

    # Logs go to stderr, the gateway's request lines to stdout; both JSON.
    records = _json_lines(service.stderr.read_text()) + _json_lines(service.stdout.read_text())
    for line in service.stderr.read_text().splitlines():
        assert line.startswith("{"), f"not a JSON log line: {line!r}"
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("+00:00")

    def about(request_id: str) -> dict[str, dict[str, Any]]:
        return {r["logger"]: r for r in records if r.get("request_id") == request_id}

    rest = about(rest_id)
    assert "uvicorn.access" in rest, records  # the gateway's line about the request
    assert "POST /api/analytics/real-time" in rest["uvicorn.access"]["message"]
    rejected = rest.get("server.ingest.pipeline")  # the server's line about the same call
    assert rejected is not None, records
    assert rejected["level"] == "INFO" and rejected["rejected"] == {"invalid_value": 1}
    assert rejected["organization_id"] == org
    direct = about(grpc_id).get("server.ingest.pipeline")
    assert direct is not None and direct["rejected"] == {"invalid_event_type": 1}

    logged = service.output()
    assert rest_id in logged
    for key in (*tenant.keys.values(), bogus_key):
        assert key not in logged
        assert key.removeprefix("ca_") not in logged


def test_both_formats_name_the_request_and_keep_context_and_tracebacks() -> None:
    def record(**extra: Any) -> logging.LogRecord:
        try:
            raise ValueError("boom")
        except ValueError:
            return logging.makeLogRecord(
                {
                    "name": "server.test",
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "%d events rejected",
                    "args": (3,),
                    "exc_info": sys.exc_info(),
                    **extra,
                }
            )

    def in_call(format_: logging.Formatter) -> str:
        def run() -> str:
            request_id.set("req-7")
            return format_.format(record(organization_id="org_1"))

        return contextvars.copy_context().run(run)

    entry = json.loads(in_call(JsonFormatter()))
    assert entry["message"] == "3 events rejected" and entry["level"] == "WARNING"
    assert entry["logger"] == "server.test" and entry["request_id"] == "req-7"
    assert entry["organization_id"] == "org_1"
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in json.loads(JsonFormatter().format(record()))

    text = in_call(TextFormatter())
    first, _, rest = text.partition("\n")
    assert first.endswith("WARNING server.test: 3 events rejected request_id=req-7")
    assert "ValueError: boom" in rest
    assert "request_id" not in TextFormatter().format(record())


def test_a_task_that_outlives_its_call_keeps_the_request_id_not_the_call() -> None:
    """The server notes a call's request id as a function reading the call's
    metadata when a record needs it; a task started with
    ``detached_context`` reads it at once and holds only the text."""
    reads: list[str] = []

    def read_from_call() -> str:
        reads.append("read")
        return "req-9"

    def start() -> contextvars.Context:
        request_id.set(read_from_call)
        return detached_context()

    detached = contextvars.copy_context().run(start)
    assert reads == ["read"]
    assert detached.run(request_id.get) == "req-9"
    assert detached.run(current_request_id) == "req-9" and reads == ["read"]
