"""Test helpers: a server on its own event loop, organizations with keys
and campaigns, and a flush written one chosen way."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx

from clients import pb
from server import admin
from server.app import AnalyticsServer
from server.auth import create_key
from server.domain import Role
from server.settings import ServerSettings
from server.store import events as event_store
from server.store.events import EventRow
from server.store.sessions import CompleteSessions
from server.store.staging_copy import encode_rows

T = TypeVar("T")


class ServerThread:
    """An AnalyticsServer on its own event loop in a thread, so tests can use
    blocking clients against it."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        settings.setdefault("grpc_port", 0)
        settings.setdefault("migrate", False)
        self.settings = ServerSettings(**settings)
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = AnalyticsServer(self.settings, database_url)
        self.port = self.call(self.server.start())
        self.target = f"127.0.0.1:{self.port}"
        self._stopped = False

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def components(self) -> Any:
        return self.server.components

    def stop(self, grace: float = 5) -> bool:
        if self._stopped:
            return True
        self._stopped = True
        drained = self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        return drained


@dataclass
class Stubs:
    ingest: pb.IngestServiceStub
    metrics: pb.MetricsServiceStub
    campaigns: pb.CampaignServiceStub
    simulation: pb.SimulationServiceStub


@dataclass
class Tenant:
    """An organization with campaigns and one key per role."""

    organization_id: str
    campaign_ids: list[str]
    keys: dict[Role, str] = field(default_factory=dict)

    def auth(self, role: Role = Role.ADMIN) -> tuple[tuple[str, str]]:
        """gRPC metadata carrying the key of ``role``."""
        return (("authorization", f"Bearer {self.keys[role]}"),)

    def headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}


def make_tenant(server: ServerThread, campaigns: int = 3) -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    tenant = Tenant(f"org_{suffix}", [f"camp_{suffix}_{i}" for i in range(campaigns)])
    engine = server.components.engine

    async def create() -> None:
        await admin.create_organization(engine, tenant.organization_id)
        for campaign_id in tenant.campaign_ids:
            await admin.create_campaign(engine, tenant.organization_id, campaign_id)
        for role in Role:
            tenant.keys[role] = await create_key(engine, tenant.organization_id, role)

    server.call(create())
    return tenant


EVENT_TYPES = {
    "impression": pb.EventType.EVENT_TYPE_IMPRESSION,
    "click": pb.EventType.EVENT_TYPE_CLICK,
    "conversion": pb.EventType.EVENT_TYPE_CONVERSION,
    "view": pb.EventType.EVENT_TYPE_VIEW,
    "engagement": pb.EventType.EVENT_TYPE_ENGAGEMENT,
    "completion": pb.EventType.EVENT_TYPE_COMPLETION,
    "skip": pb.EventType.EVENT_TYPE_SKIP,
}


def event(
    event_type: str,
    campaign_id: str,
    organization_id: str,
    *,
    value: float | None = None,
    when: datetime | None = None,
    session_id: str = "",
    duration: float | None = None,
    event_id: str | None = None,
) -> pb.Event:
    """An event with a fresh id unless one is given."""
    message = pb.Event(
        event_id=str(uuid.uuid4()) if event_id is None else event_id,
        event_type=EVENT_TYPES[event_type],
        campaign_id=campaign_id,
        organization_id=organization_id,
    )
    if value is not None:
        message.value = value
    if when is not None:
        message.timestamp.FromDatetime(when)
    if session_id or duration is not None:
        message.metadata.session_id = session_id
        if duration is not None:
            message.metadata.duration = duration
    return message


class GatewayThread:
    """The REST gateway served by uvicorn on 127.0.0.1, a free port, in a thread."""

    def __init__(self, grpc_target: str, **settings: Any) -> None:
        import socket

        import uvicorn

        from gateway.app import create_asgi_app
        from gateway.settings import GatewaySettings

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_asgi_app(GatewaySettings(grpc_target=grpc_target, port=self.port, **settings))
        # Tests share one keep-alive client, idle between tests: a server
        # closing an idle connection (uvicorn's default is after 5 s) just
        # as the client sends on it resets that request.
        config = uvicorn.Config(
            app, http="httptools", loop="asyncio", log_level="warning", timeout_keep_alive=600
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway did not start")
            self._thread.join(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    """The gateway as its own process on a fixed port, so that it can be
    stopped and started again (a browser then reconnects to the same place)."""

    def __init__(self, grpc_target: str, port: int | None = None) -> None:
        self.grpc_target, self.port = grpc_target, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gateway", "--grpc-target", self.grpc_target),
                *("--host", "127.0.0.1", "--port", str(self.port)),
            ],
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                httpx.get(self.url + "/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                assert self.process.poll() is None, "the gateway exited"
                threading.Event().wait(0.05)
        raise AssertionError("the gateway did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


async def write_flush(
    conn: Any, rows: list[EventRow], known: CompleteSessions, *, direct: bool
) -> list[tuple[str, bytes]]:
    """Writes ``rows`` one of the two ways ``server.store.events.write_batch``
    chooses between by size: in one statement (``direct``), or through the
    staging table. Returns the duplicates."""
    if direct:
        return await event_store.write_direct(conn, rows, known)
    data = encode_rows(rows, known)
    return await event_store.write_staged(conn, data, rows, known)
