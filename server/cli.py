"""The ``campaign-analytics`` command."""

import os

# gRPC's core logs at INFO by default (for example about fork() while its
# threads run); keep its log to errors unless asked otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

import loadgen.run
from server import admin, demo, runtime
from server.app import AnalyticsServer
from server.auth import create_key, key_id_of, list_keys, revoke_key
from server.domain import Role
from server.errors import ServiceError
from server.observability import logs
from server.settings import ServerSettings
from server.store import migrate
from server.store.database import resolve_url, sqlalchemy_url

log = logging.getLogger("campaign_analytics")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    args.log_format = _log_format(parser, args.log_format)
    logs.configure(getattr(logging, args.log_level.upper()), args.log_format)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args.run(args)
    except ServiceError as exc:
        sys.exit(f"error: {exc.message}")
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-analytics",
        description="Real-time campaign analytics: gRPC and REST ingest, live metrics.",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="the least important log records shown (default info)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        choices=logs.LOG_FORMATS,
        help="text for people, json (a JSON object per line) for machines "
        "(env CAMPAIGN_ANALYTICS_LOG_FORMAT; default text)",
    )
    commands = parser.add_subparsers(required=True, metavar="command")

    def log_format(p: argparse.ArgumentParser) -> None:
        # Also after the command; SUPPRESS keeps a value given before it.
        p.add_argument(
            "--log-format",
            default=argparse.SUPPRESS,
            choices=logs.LOG_FORMATS,
            help="text or json (env CAMPAIGN_ANALYTICS_LOG_FORMAT; default text)",
        )

    def database(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--database-url",
            default=None,
            help="PostgreSQL URL (env DATABASE_URL); unset runs an embedded PostgreSQL",
        )
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="folder of the embedded PostgreSQL (default ./data)",
        )

    serve = commands.add_parser("serve", help="run the gRPC server and the REST gateway")
    database(serve)
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 50051)")
    serve.add_argument("--http-port", type=int, default=None, help="REST port (default 8080)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the server's /metrics for Prometheus (default 9464; 0: none)",
    )
    log_format(serve)
    serve.add_argument("--no-gateway", action="store_true", help="run only the gRPC server")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="create a demo organization, campaigns and key, and feed simulated traffic",
    )
    _tls_arguments(serve)
    serve.add_argument(
        "--grpc-ca",
        type=Path,
        default=None,
        help="PEM trust root with which the gateway checks the gRPC server's certificate "
        "(env CAMPAIGN_ANALYTICS_GRPC_CA; default: --tls-cert itself)",
    )
    serve.set_defaults(run=_serve)

    gateway = commands.add_parser("gateway", help="run only the REST gateway")
    gateway.add_argument(
        "--grpc-target", default=None, help="gRPC server (default 127.0.0.1:50051)"
    )
    gateway.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    gateway.add_argument("--http-port", type=int, default=None, help="REST port (default 8080)")
    log_format(gateway)
    _tls_arguments(gateway)
    gateway.add_argument(
        "--grpc-ca",
        type=Path,
        default=None,
        help="PEM trust root of the gRPC server's certificate: call it over TLS "
        "(env CAMPAIGN_ANALYTICS_GRPC_CA)",
    )
    gateway.set_defaults(run=_gateway)

    migrate_cmd = commands.add_parser("migrate", help="apply the database migrations")
    database(migrate_cmd)
    migrate_cmd.set_defaults(run=_migrate)

    org = commands.add_parser("create-organization", help="create an organization")
    database(org)
    org.add_argument("organization_id")
    org.add_argument("--name", default="", help="a readable name (default: none)")
    org.set_defaults(run=_create_organization)

    key = commands.add_parser("create-key", help="create an API key for an organization")
    database(key)
    key.add_argument("organization_id")
    key.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ADMIN.value,
        help="ingest (send events), read (metrics, subscriptions) or admin (all; the default)",
    )
    key.add_argument("--name", default="", help="a note to tell keys apart in list-keys")
    key.set_defaults(run=_create_key)

    keys = commands.add_parser(
        "list-keys", help="list an organization's API keys (never their secrets)"
    )
    database(keys)
    keys.add_argument("organization_id")
    keys.set_defaults(run=_list_keys)

    revoke = commands.add_parser(
        "revoke-key", help="revoke an API key: every server refuses it at once"
    )
    database(revoke)
    revoke.add_argument("key_id", help="the key's id, as list-keys shows it")
    revoke.add_argument(
        "--organization", default=None, help="the key's organization (when the id is ambiguous)"
    )
    revoke.set_defaults(run=_revoke_key)

    campaign = commands.add_parser("create-campaign", help="create a campaign")
    database(campaign)
    campaign.add_argument("organization_id")
    campaign.add_argument("campaign_id")
    campaign.add_argument("--name", default="")
    campaign.set_defaults(run=_create_campaign)

    load = commands.add_parser(
        "load", help="drive the gRPC server with load and check that every event is counted"
    )
    loadgen.run.add_arguments(load)
    load.set_defaults(run=lambda args: sys.exit(loadgen.run.main(args)))
    return parser


def _tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        help="PEM certificate (chain): serve over TLS (gRPC, HTTPS), with --tls-key "
        "(env CAMPAIGN_ANALYTICS_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        type=Path,
        default=None,
        help="PEM private key of --tls-cert (env CAMPAIGN_ANALYTICS_TLS_KEY)",
    )


def _settings(args: argparse.Namespace, **overrides: Any) -> ServerSettings:
    values = {k: v for k, v in overrides.items() if v is not None}
    for name in ("tls_cert", "tls_key"):
        if getattr(args, name, None):
            values[name] = getattr(args, name)
    if getattr(args, "database_url", None):
        values["database_url"] = args.database_url
    if getattr(args, "data_dir", None):
        values["data_dir"] = args.data_dir
    return ServerSettings(**values)


def _log_format(parser: argparse.ArgumentParser, given: str | None) -> logs.LogFormat:
    chosen = given or os.environ.get("CAMPAIGN_ANALYTICS_LOG_FORMAT") or "text"
    if chosen not in logs.LOG_FORMATS:
        parser.error(
            f"CAMPAIGN_ANALYTICS_LOG_FORMAT is {chosen!r}; use {' or '.join(logs.LOG_FORMATS)}"
        )
    return chosen  # type: ignore[return-value]


def _database_url(settings: ServerSettings) -> str:
    if not settings.database_url:
        print(f"Using the embedded PostgreSQL in {settings.data_dir.resolve()} ...", flush=True)
    return resolve_url(settings.database_url, settings.data_dir)


# -- serve -------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    settings = _settings(
        args, host=args.host, grpc_port=args.grpc_port, metrics_port=args.metrics_port
    )
    # The gateway's port: the flag, else its environment variable, else its default.
    http_port = args.http_port
    if http_port is None:
        http_port = int(os.environ.get("CAMPAIGN_ANALYTICS_PORT", "8080"))
    _check_port_free(settings.host, settings.grpc_port, "gRPC", "--grpc-port")
    _check_port_free(settings.host, settings.metrics_port, "metrics", "--metrics-port")
    if not args.no_gateway:
        _check_port_free(settings.host, http_port, "REST", "--http-port")
    _use_uvloop()
    asyncio.run(_serve_async(args, settings, http_port))


async def _serve_async(args: argparse.Namespace, settings: ServerSettings, http_port: int) -> None:
    url = _database_url(settings)
    server = AnalyticsServer(settings, url)
    gateway: subprocess.Popen[bytes] | None = None
    traffic: asyncio.Task[None] | None = None
    drained = False
    try:
        port = await server.start()
        runtime.settle()
        print(f"gRPC server listening on {settings.host}:{port}", flush=True)
        if server.metrics_port:
            print(
                f"Metrics for Prometheus on http://{settings.host}:{server.metrics_port}/metrics",
                flush=True,
            )
        if not args.no_gateway:
            gateway = _start_gateway(
                f"{settings.host}:{port}",
                settings.host,
                http_port,
                args.log_format,
                _gateway_tls(args, settings),
            )
            await asyncio.to_thread(_wait_for_port, settings.host, http_port, gateway)
            scheme = "https" if settings.tls_cert else "http"
            print(f"REST gateway listening on {scheme}://{settings.host}:{http_port}", flush=True)
        if args.demo:
            assert server.components is not None
            key = await demo.prepare(server.components.engine)
            traffic = asyncio.create_task(demo.run_traffic(server.components.pipeline))
            scheme = "https" if settings.tls_cert else "http"
            print(_demo_help(settings.host, port, http_port, key, scheme), flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("Shutting down: finishing calls and committing buffered events ...", flush=True)
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
        drained = await server.stop()
        if gateway is not None:
            try:
                gateway.wait(timeout=10)
            except subprocess.TimeoutExpired:
                gateway.kill()
    if not drained:
        sys.exit("error: some buffered events could not be committed before the grace period ended")
    print("Stopped.", flush=True)


def _start_gateway(
    grpc_target: str, host: str, http_port: int, log_format: str, tls: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        CAMPAIGN_ANALYTICS_GRPC_TARGET=grpc_target,
        CAMPAIGN_ANALYTICS_HOST=host,
        CAMPAIGN_ANALYTICS_PORT=str(http_port),
        CAMPAIGN_ANALYTICS_LOG_FORMAT=log_format,
        **tls,
    )
    # close_fds=False lets Python spawn without fork(), which gRPC's running
    # threads would otherwise warn about; our descriptors are not inheritable.
    return subprocess.Popen([sys.executable, "-m", "gateway"], env=env, close_fds=False)


def _gateway_tls(args: argparse.Namespace, settings: ServerSettings) -> dict[str, str]:
    """The gateway's TLS settings when the server uses TLS: HTTPS with the same
    certificate, and TLS to the gRPC server, trusting ``--grpc-ca`` (or the
    certificate itself, which suits a self-signed one on loopback)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    ca = args.grpc_ca or os.environ.get("CAMPAIGN_ANALYTICS_GRPC_CA") or settings.tls_cert
    return {
        "CAMPAIGN_ANALYTICS_TLS_CERT": str(Path(settings.tls_cert).resolve()),
        "CAMPAIGN_ANALYTICS_TLS_KEY": str(Path(settings.tls_key).resolve()),
        "CAMPAIGN_ANALYTICS_GRPC_CA": str(Path(ca).resolve()),
    }


def _check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Refuses to start when something already listens on ``port`` (0: any port)."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServiceError(
                f"the {what} port {host}:{port} is not free ({exc.strerror}): another "
                f"campaign-analytics serve may be running; stop it, or choose another port "
                f"with {flag}"
            ) from None


def _wait_for_port(
    host: str, port: int, process: subprocess.Popen[bytes], limit: float = 30
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"the REST gateway exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServiceError(f"the REST gateway did not listen on {host}:{port} within {limit:g} s")


def _demo_help(host: str, grpc_port: int, http_port: int, key: str, scheme: str = "http") -> str:
    base = f"{scheme}://{host}:{http_port}"
    org = demo.DEMO_ORGANIZATION
    return f"""
Demo organization {org} with campaigns {", ".join(demo.DEMO_CAMPAIGNS)} is receiving
simulated traffic. Its admin key (shown once): {key}

Live dashboard, signed in for {org} (the key stays in the address's fragment,
which the browser never sends):

  {base}/#organization={org}&key={key}

  export KEY={key}
  curl -s -H "authorization: Bearer $KEY" \\
       '{base}/api/campaigns/camp_123/analytics/real-time?timeWindow=3600'
  curl -s -H "authorization: Bearer $KEY" \\
       '{base}/api/analytics/real-time/dashboard?organizationId={org}&timeWindow=3600'
  curl -s -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
       -d '{{"event": {{"eventType": "click", "campaignId": "camp_123",
                       "organizationId": "{org}", "value": 1.5}}}}' \\
       {base}/api/analytics/real-time
  curl -s -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
       -d '{{"action": "burst", "campaignIds": ["camp_124"], "organizationId": "{org}",
            "options": {{"count": 500}}}}' \\
       {base}/api/analytics/real-time/simulate

  .venv/bin/python -c "
from clients import AnalyticsClient, make_event
with AnalyticsClient('{host}:{grpc_port}', api_key='$KEY') as client:
    client.ingest([make_event('click', 'camp_123', '{org}', value=1.5)])
    print(client.get_campaign_metrics('camp_123').metrics)"

Press Ctrl+C to stop.
"""


def _gateway(args: argparse.Namespace) -> None:
    from gateway.main import serve
    from gateway.settings import GatewaySettings

    overrides = {
        "grpc_target": args.grpc_target,
        "host": args.host,
        "port": args.http_port,
        "log_format": args.log_format,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "grpc_ca": args.grpc_ca,
    }
    serve(GatewaySettings(**{k: v for k, v in overrides.items() if v is not None}))


# -- administration ---------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> None:
    url = _database_url(_settings(args))
    migrate.upgrade(url)
    print("The database schema is up to date.")


def _admin(args: argparse.Namespace, action: Callable[[Any], Awaitable[str]]) -> None:
    url = _database_url(_settings(args))
    migrate.upgrade(url)

    async def run() -> str:
        engine = create_async_engine(sqlalchemy_url(url))
        try:
            return await action(engine)
        finally:
            await engine.dispose()

    print(asyncio.run(run()))


def _create_organization(args: argparse.Namespace) -> None:
    async def action(engine: Any) -> str:
        await admin.create_organization(engine, args.organization_id, args.name)
        return f"Created organization {args.organization_id}."

    _admin(args, action)


def _create_key(args: argparse.Namespace) -> None:
    async def action(engine: Any) -> str:
        if not await admin.organization_exists(engine, args.organization_id):
            raise ServiceError(
                f"organization {args.organization_id!r} does not exist; "
                "create it with create-organization"
            )
        key = await create_key(engine, args.organization_id, Role(args.role), args.name)
        return f"{key}\n(the {args.role} key of {args.organization_id}; it is shown only once)"

    _admin(args, action)


def _list_keys(args: argparse.Namespace) -> None:
    async def action(engine: Any) -> str:
        if not await admin.organization_exists(engine, args.organization_id):
            raise ServiceError(f"organization {args.organization_id!r} does not exist")
        records = await list_keys(engine, args.organization_id)
        if not records:
            return f"Organization {args.organization_id} has no API keys."
        rows = [("KEY ID", "ROLE", "NAME", "CREATED", "REVOKED")]
        for record in records:
            rows.append(
                (
                    record.key_id,
                    record.role.value,
                    record.name or "-",
                    _when(record.created_at),
                    _when(record.revoked_at) if record.revoked_at else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    _admin(args, action)


def _revoke_key(args: argparse.Namespace) -> None:
    async def action(engine: Any) -> str:
        record, revoked = await revoke_key(engine, key_id_of(args.key_id), args.organization)
        assert record.revoked_at is not None
        what = f"the {record.role.value} key {record.key_id} of {record.organization_id}"
        if not revoked:
            return f"Nothing to do: {what} was already revoked at {_when(record.revoked_at)}."
        return f"Revoked {what}: every server refuses it from now on and ends its open streams."

    _admin(args, action)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _create_campaign(args: argparse.Namespace) -> None:
    async def action(engine: Any) -> str:
        await admin.create_campaign(engine, args.organization_id, args.campaign_id, args.name)
        return f"Created campaign {args.campaign_id} in {args.organization_id}."

    _admin(args, action)


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    main()
