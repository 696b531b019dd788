"""TLS by flag: with a certificate and key, the gRPC server speaks only TLS,
the gateway serves HTTPS and calls the server over TLS; plaintext clients
fail. Certificates are made for the test by a throwaway CA (trustme)."""

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from support import ServerThread, Tenant, make_tenant

from clients import AnalyticsClient, make_event
from server.auth import key_id_of, revoke_key
from server.domain import Role
from server.errors import ServiceError
from server.settings import ServerSettings
from server.tls import read_pem


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate chain, private key) for 127.0.0.1 and localhost, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / "server.pem", folder / "server.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def credentials(ca: trustme.CA) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())


def test_grpc_over_tls_ingests_and_reads_and_refuses_plaintext(
    database_url: str, ca: trustme.CA, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = ServerThread(database_url, tls_cert=cert, tls_key=key)
    try:
        tenant = make_tenant(server)
        campaign = tenant.campaign_ids[0]
        with AnalyticsClient(
            server.target, api_key=tenant.keys[Role.ADMIN], credentials=credentials(ca)
        ) as client:
            reply = client.ingest(
                [make_event("click", campaign, tenant.organization_id) for _ in range(3)]
            )
            assert reply.accepted == 3
            assert client.get_campaign_metrics(campaign).metrics.clicks == 3

        with (
            grpc.insecure_channel(server.target) as channel,
            pytest.raises(grpc.FutureTimeoutError),
        ):
            grpc.channel_ready_future(channel).result(timeout=2)
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    """``campaign-analytics serve`` with TLS, its output collected."""

    def __init__(self, database_url: str, cert: Path, key: Path) -> None:
        self.http_port = free_port()
        env = dict(os.environ, CAMPAIGN_ANALYTICS_METRICS_PORT="0")
        command = [sys.executable, "-m", "server.cli", "--log-level", "debug", "serve"]
        command += ["--database-url", database_url, "--grpc-port", "0"]
        command += ["--http-port", str(self.http_port)]
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.grpc_target = self._wait_for("gRPC server listening on ").split()[-1]
        self.rest = self._wait_for("REST gateway listening on ").split()[-1]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _wait_for(self, prefix: str, limit: float = 60) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line.strip()
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {limit} s:\n{''.join(self.lines)}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return "".join(self.lines)


@pytest.fixture
def served(database_url: str, certificate: tuple[Path, Path]) -> Iterator[Serve]:
    serve = Serve(database_url, *certificate)
    try:
        yield serve
    finally:
        serve.stop()


def test_serve_with_tls_serves_https_and_never_logs_a_key(
    served: Serve, analytics_server: ServerThread, ca: trustme.CA
) -> None:
    tenant: Tenant = make_tenant(analytics_server)
    campaign = tenant.campaign_ids[0]
    assert served.rest == f"https://127.0.0.1:{served.http_port}"

    with AnalyticsClient(
        served.grpc_target, api_key=tenant.keys[Role.INGEST], credentials=credentials(ca)
    ) as client:
        assert client.ingest([make_event("impression", campaign, tenant.organization_id)]).accepted

    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    path = f"/api/campaigns/{campaign}/analytics/real-time"
    with httpx.Client(base_url=served.rest, verify=trust, timeout=30) as https:
        # The gateway reaches the gRPC server over TLS, trusting its certificate.
        read = https.get(path, headers=tenant.headers(Role.READ))
        assert read.status_code == 200, read.text
        assert read.json()["metrics"]["impressions"] == 1
        assert https.get(path, headers={"authorization": "Bearer ca_0_nope"}).status_code == 401
        analytics_server.call(
            revoke_key(analytics_server.components.engine, key_id_of(tenant.keys[Role.READ]))
        )
        deadline = time.monotonic() + 10
        while https.get(path, headers=tenant.headers(Role.READ)).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key was still accepted"
            time.sleep(0.05)

    with (
        httpx.Client(timeout=10) as plain,
        pytest.raises(httpx.TransportError),
    ):
        plain.get(f"http://127.0.0.1:{served.http_port}{path}")

    output = served.stop()
    assert "API key" in output and "revoked" in output, output  # debug logs were on
    for key in tenant.keys.values():
        assert key not in output
        assert key.split("_", 2)[2] not in output  # nor its secret part


def test_missing_or_partial_tls_files_are_refused_clearly(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, _key = certificate
    with pytest.raises(ValueError, match="both a certificate"):
        ServerSettings(tls_cert=cert)
    with pytest.raises(ServiceError, match="cannot read the TLS certificate"):
        read_pem(tmp_path / "missing.pem", "certificate")
    not_pem = tmp_path / "key.der"
    not_pem.write_bytes(b"\x30\x82")
    with pytest.raises(ServiceError, match="not in PEM format"):
        read_pem(not_pem, "private key")
