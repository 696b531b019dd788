"""The gateway loses its gRPC server and gets it back: the way between them is
cut (a relay on loopback closes every connection and refuses new ones) for
some seconds. Meanwhile REST answers 503 with Retry-After; a REST client
that retries gets every event in once the server is back; an SSE client
goes on (reconnecting with Last-Event-ID if its stream ends) and shows the
exact numbers again."""

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fault_processes import (
    GatewayProcess,
    Postgres,
    Relay,
    ServerProcess,
    Tenant,
    Trial,
    make_tenant,
    wait_until,
)

from server.domain import Role

CUT_SECONDS = 3.0
REQUEST_TIMEOUT = 3.0  # the gateway's deadline per call
BATCH = 20


class SseFollower:
    """Reads a subscription's Server-Sent Events as a browser's EventSource
    would: on an ended or failed stream it connects again, sending the last
    event id it saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections = 0
        self.refused: list[int] = []  # statuses of reconnections that were refused
        self.last_event_id = ""
        self.impressions = -1  # in the latest update
        self.updates = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(10)

    def _follow(self) -> None:
        timeout = httpx.Timeout(5.0, read=5.0)  # heartbeats come every second
        for _ in range(100):  # reconnections, bounded
            if self._done.is_set():
                return
            headers = {"last-event-id": self.last_event_id} if self.last_event_id else {}
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        self.refused.append(response.status_code)
                    else:
                        self.connections += 1
                        self._read(response)
            except httpx.HTTPError:
                pass
            self._done.wait(0.3)  # the stream's retry: is 3 s; a test waits less

    def _read(self, response: httpx.Response) -> None:
        event_id, data = "", ""
        for line in response.iter_lines():
            if self._done.is_set():
                return
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                frame = json.loads(data)
                if event_id:
                    self.last_event_id = event_id
                if frame.get("type") == "update":
                    self.updates += 1
                    self.impressions = frame["data"]["data"]["metrics"]["impressions"]
                event_id, data = "", ""


class RestSender:
    """Posts impressions in batches, retrying 503 and 429 after Retry-After,
    as a careful REST client does; counts what it was told was stored."""

    def __init__(self, gateway_url: str, tenant: Tenant) -> None:
        self.http = httpx.Client(
            base_url=gateway_url, headers=tenant.headers(Role.INGEST), timeout=10
        )
        self.tenant = tenant
        self.sent = 0
        self.acknowledged = 0
        self.statuses: dict[int, int] = {}
        self.retry_after: set[str] = set()

    def post(self, count: int, deadline: float = 30.0) -> None:
        campaign = self.tenant.campaign_ids[0]
        events = [
            {
                "eventId": str(uuid_of(self.sent + i)),
                "eventType": "impression",
                "campaignId": campaign,
                "organizationId": self.tenant.organization_id,
            }
            for i in range(count)
        ]
        self.sent += count
        give_up = time.monotonic() + deadline
        while True:
            try:
                reply = self.http.post("/api/analytics/real-time", json={"events": events})
                status = reply.status_code
            except httpx.TransportError:
                status = 0
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                body = reply.json()
                self.acknowledged += body["accepted"] + body["duplicates"]
                return
            assert status in (503, 429), (status, reply.text)
            self.retry_after.add(reply.headers.get("retry-after", ""))
            assert time.monotonic() < give_up, "the REST client gave up"
            time.sleep(min(float(reply.headers.get("retry-after", "1")), 0.5))

    def close(self) -> None:
        self.http.close()


NAMESPACE = "0190a0a0-0000-7000-8000-"


def uuid_of(n: int) -> str:
    """Event ids of this test's own, one per event it sends."""
    return f"{NAMESPACE}{n:012x}"


def metrics(http: httpx.Client, tenant: Tenant) -> httpx.Response:
    return http.get(
        f"/api/campaigns/{tenant.campaign_ids[0]}/analytics/real-time",
        params={"timeWindow": 3600},
        headers=tenant.headers(Role.READ),
    )


def test_the_gateway_answers_503_while_the_server_is_lost_and_resumes(
    fault_postgres: Postgres, tmp_path: Path, record: Callable[[Trial], None]
) -> None:
    tenant = make_tenant(fault_postgres.url)
    server = ServerProcess(fault_postgres.url, tmp_path / "server.log", heartbeat_seconds=1)
    server.start()
    relay = Relay(server.port)
    relay.mend()
    gateway = GatewayProcess(relay.address, tmp_path / "gateway.log", REQUEST_TIMEOUT)
    gateway.start()
    sender = RestSender(gateway.url, tenant)
    http = httpx.Client(base_url=gateway.url, timeout=10)
    follower: SseFollower | None = None
    during: list[httpx.Response] = []
    try:
        subscription = http.post(
            "/api/analytics/real-time/subscribe",
            json={
                "organizationId": tenant.organization_id,
                "campaignIds": [tenant.campaign_ids[0]],
            },
            headers=tenant.headers(Role.READ),
        ).json()["subscription"]["id"]
        follower = SseFollower(
            f"{gateway.url}/api/analytics/real-time/updates"
            f"?subscriptionId={subscription}&format=sse"
        )
        sender.post(BATCH)
        wait_until(lambda: follower.impressions == BATCH, 15, "the first update over SSE")

        relay.cut()
        cut_at = time.monotonic()
        # Reads and writes meanwhile: 503, each within the gateway's deadline.
        while time.monotonic() - cut_at < CUT_SECONDS:
            started = time.monotonic()
            response = metrics(http, tenant)
            during.append(response)
            assert time.monotonic() - started <= REQUEST_TIMEOUT + 1
            time.sleep(0.2)
        writer = threading.Thread(target=sender.post, args=(BATCH,), daemon=True)
        writer.start()  # retries until the server is back
        time.sleep(0.5)
        relay.mend()
        mended_at = time.monotonic()
        writer.join(40)
        assert not writer.is_alive()
        back_after = time.monotonic() - mended_at
        wait_until(lambda: metrics(http, tenant).status_code == 200, 15, "REST 200 again")
        sender.post(BATCH)
        wait_until(
            lambda: follower.impressions == sender.sent, 20, "the SSE client to show every event"
        )
        body: dict[str, Any] = metrics(http, tenant).json()
        total = body["metrics"]["impressions"]
    finally:
        if follower is not None:
            follower.close()
        sender.close()
        http.close()
        gateway.close()
        relay.close()
        server.close()

    stored = len(fault_postgres.stored_ids(tenant.organization_id))
    codes = sorted({r.status_code for r in during})
    record(
        Trial(
            "grpc-server-lost-by-gateway",
            f"cut-{CUT_SECONDS:g}s",
            sender.sent,
            sender.acknowledged,
            total,
            stored,
            f"REST during the cut: {len(during)} reads answered {codes}, Retry-After "
            f"{sorted(sender.retry_after)}; writes back {back_after:.1f} s after the mend; "
            f"SSE: {follower.connections if follower else 0} connection(s), "
            f"{follower.updates if follower else 0} updates, last shows {total} impressions",
        )
    )
    assert codes == [503], [(r.status_code, r.text[:200]) for r in during]
    assert all(r.headers.get("retry-after") == "1" for r in during)
    assert sender.statuses.get(503, 0) >= 1, sender.statuses
    assert sender.acknowledged == sender.sent
    assert total == stored == sender.sent
