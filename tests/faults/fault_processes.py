"""Real processes for the fault tests: a PostgreSQL of the test's own (so
stopping it disturbs no other test), the gRPC server and the gateway as
subprocesses that can be killed and started again on the same port, and a
loopback relay that can cut the way from the gateway to the server.

Every wait here is bounded in time; every process listens on 127.0.0.1."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from clients import AnalyticsClient, RetryPolicy, make_event, pb
from server import admin
from server.auth import create_key
from server.domain import Role
from server.store import migrate
from server.store.database import create_database, libpq_url, sqlalchemy_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0

# A client that rides out a server restart or a database outage: many quick
# retries within one deadline, and a channel that reconnects at once instead
# of after gRPC's default backoff (1 s, growing to 2 minutes).
PATIENT_RETRY = RetryPolicy(max_attempts=1_000, initial_backoff=0.05, max_backoff=0.5)
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
)
MIX = ("impression", "impression", "impression", "view", "click", "completion", "skip")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# -- PostgreSQL ---------------------------------------------------------------


@contextlib.contextmanager
def own_folder(prefix: str) -> Iterator[Path]:
    """A folder for a PostgreSQL of the test's own, outside pytest's numbered
    temporary folders (which concurrent pytest sessions prune)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Postgres:
    """An embedded PostgreSQL in its own folder, which a test may stop
    (``pg_ctl stop -m fast``) and start again on the same socket."""

    def __init__(self, folder: Path, database: str = "faults") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
        self.pgdata = self._server.pgdata
        info = self._server.get_postmaster_info()
        assert info.socket_dir is not None, "pgserver listens on a Unix socket here"
        self._socket_dir = info.socket_dir
        server_url = self._server.get_uri()
        create_database(server_url, database)
        self.url = make_url(server_url).set(database=database).render_as_string(hide_password=False)
        migrate.upgrade(self.url)

    def stop(self) -> None:
        """A fast shutdown: open connections are ended, new ones refused."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.log), "start")

    @property
    def log(self) -> Path:
        return self.pgdata / "log"

    def _pg_ctl(self, *args: str) -> None:
        # As pgserver's own user when root, through runuser rather than
        # subprocess's user=: that forks the test process, whose gRPC
        # threads do not survive a fork (the child can crash before exec).
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", *args]
        user = self._server.system_user
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=STARTUP_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"pg_ctl {args[-1]} failed ({done.returncode}):\n{tail}")

    def close(self) -> None:
        # A server this test restarted is not the one pgserver started: stop
        # whichever runs, so its files are not written while they are removed.
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._pg_ctl("-m", "fast", "stop")
        self._server.cleanup()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=5)

    def stored_ids(self, organization_id: str) -> set[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT event_id::text FROM events WHERE organization_id = %s", (organization_id,)
            ).fetchall()
        return {row[0] for row in rows}


# -- organizations ------------------------------------------------------------


@dataclass
class Tenant:
    organization_id: str
    campaign_ids: list[str]
    keys: dict[Role, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.keys[Role.ADMIN]

    def headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}


def make_tenant(database_url: str, campaigns: int = 2) -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    tenant = Tenant(f"org_f{suffix}", [f"camp_f{suffix}_{i}" for i in range(campaigns)])

    async def create() -> None:
        engine = create_async_engine(sqlalchemy_url(database_url))
        try:
            await admin.create_organization(engine, tenant.organization_id)
            for campaign_id in tenant.campaign_ids:
                await admin.create_campaign(engine, tenant.organization_id, campaign_id)
            for role in Role:
                tenant.keys[role] = await create_key(engine, tenant.organization_id, role)
        finally:
            await engine.dispose()

    asyncio.run(create())
    return tenant


def events_for(tenant: Tenant, count: int) -> list[pb.Event]:
    """``count`` events of the usual mix, spread over the tenant's campaigns,
    each with its own id (set here, so that retries carry the same ids)."""
    campaigns = tenant.campaign_ids
    return [
        make_event(
            MIX[i % len(MIX)],
            campaigns[i % len(campaigns)],
            tenant.organization_id,
            value=0.5 if MIX[i % len(MIX)] == "click" else None,
        )
        for i in range(count)
    ]


def counted(client: AnalyticsClient, tenant: Tenant) -> int:
    """Every event the tenant's metrics count, over the last hour."""
    total = 0
    for campaign_id in tenant.campaign_ids:
        m = client.get_campaign_metrics(campaign_id, time_window=3600, timeout=30).metrics
        total += (
            m.impressions
            + m.clicks
            + m.conversions
            + m.ad_playbacks
            + m.engagements
            + m.completions
            + m.skips
        )
    return total


def patient_client(target: str, tenant: Tenant, timeout: float = 30.0) -> AnalyticsClient:
    return AnalyticsClient(
        target, api_key=tenant.key, timeout=timeout, retry=PATIENT_RETRY, options=FAST_RECONNECT
    )


# -- the server and the gateway -----------------------------------------------


class _Process:
    """A subprocess whose output goes to a log file, read on failure."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start {self.starts}: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "GRPC_VERBOSITY": "ERROR", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM; the exit code (raises if it takes longer than ``timeout``)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"the {self.name} did not exit within {timeout:g} s of SIGTERM:\n{self.log()}"
            ) from None

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def close(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)


class ServerProcess(_Process):
    """``campaign-analytics serve --no-gateway`` on a fixed port of
    127.0.0.1, so that it can be started again where clients expect it."""

    name = "server"

    def __init__(self, database_url: str, log_path: Path, **settings: Any) -> None:
        super().__init__(log_path)
        self.database_url = database_url
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.env = {"CAMPAIGN_ANALYTICS_MIGRATE": "0"}
        self.env.update({f"CAMPAIGN_ANALYTICS_{k.upper()}": str(v) for k, v in settings.items()})

    def start(self) -> None:
        assert not self.alive()
        before = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn(
            [
                sys.executable,
                "-m",
                "server.cli",
                "--log-level",
                "warning",
                "serve",
                "--no-gateway",
                "--grpc-port",
                str(self.port),
                "--database-url",
                self.database_url,
            ],
            self.env,
        )
        ready = f"gRPC server listening on 127.0.0.1:{self.port}"

        def started() -> bool:
            if not self.alive():
                raise AssertionError(f"the server exited at start:\n{self.log()}")
            with open(self.log_path, "rb") as log:
                log.seek(before)
                return ready in log.read().decode(errors="replace")

        wait_until(started, STARTUP_SECONDS, "the server to listen")


class GatewayProcess(_Process):
    """``python -m gateway`` in front of ``grpc_target``."""

    name = "gateway"

    def __init__(self, grpc_target: str, log_path: Path, request_timeout: float = 3.0) -> None:
        super().__init__(log_path)
        self.grpc_target = grpc_target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.request_timeout = request_timeout

    def start(self) -> None:
        self._spawn(
            [
                sys.executable,
                "-m",
                "gateway",
                "--grpc-target",
                self.grpc_target,
                "--port",
                str(self.port),
                "--request-timeout",
                str(self.request_timeout),
            ],
            {},
        )

        def started() -> bool:
            if not self.alive():
                raise AssertionError(f"the gateway exited at start:\n{self.log()}")
            try:
                httpx.get(self.url + "/openapi.json", timeout=1)
                return True
            except httpx.TransportError:
                return False

        wait_until(started, STARTUP_SECONDS, "the gateway to listen", interval=0.05)


# -- a relay that can cut a connection ------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``target``: ``cut()`` closes
    every connection and refuses new ones (the far side is gone, as far as
    the near side can tell), ``mend()`` lets connections through again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def mend(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        assert self._listener is not None
        listener, self._listener = self._listener, None
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        if self._acceptor is not None:
            self._acceptor.join(5)
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def close(self) -> None:
        if self._listener is not None:
            self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                _close(near)
                continue
            far.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(near)
                    _close(far)
                    return
                self._sockets.update((near, far))
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass  # either side closed: close the other
    finally:
        _close(sink)
        _close(source)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- the figures of each trial --------------------------------------------------


@dataclass
class Trial:
    """One trial of a fault: events ``sent``; ``acknowledged``, those the
    service said it stored (after the client's retries: all that were sent,
    unless it was told to stop); ``counted``, what the metrics count;
    ``stored``, the raw rows. Lost: acknowledged but not counted; duplicated:
    counted beyond what was acknowledged."""

    fault: str
    trial: str
    sent: int
    acknowledged: int
    counted: int
    stored: int
    note: str = ""

    @property
    def lost(self) -> int:
        return max(0, self.acknowledged - self.counted)

    @property
    def duplicated(self) -> int:
        return max(0, self.counted - self.acknowledged)

    def line(self) -> str:
        return (
            f"FAULT {self.fault} trial={self.trial} sent={self.sent} "
            f"acknowledged={self.acknowledged} counted={self.counted} lost={self.lost} "
            f"duplicated={self.duplicated} stored={self.stored}"
            + (f" ({self.note})" if self.note else "")
        )


def ids_of(events: Iterable[pb.Event]) -> set[str]:
    return {e.event_id for e in events}
