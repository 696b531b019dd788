"""Runs the REST gateway: ``serve(settings)``, or ``python -m gateway``."""

import argparse
import copy
import importlib.util
import math
from collections.abc import Sequence
from typing import Any

import uvicorn

from gateway.app import create_asgi_app
from gateway.settings import GatewaySettings
from server.observability.logs import LOG_FORMATS, LogFormat

__all__ = ["main", "serve"]


def serve(settings: GatewaySettings | None = None) -> None:
    """Serves the gateway until SIGINT or SIGTERM, then finishes the requests in flight."""
    settings = settings or GatewaySettings()
    config = uvicorn.Config(
        create_asgi_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools",
        lifespan="on",
        access_log=settings.access_log,
        log_config=_log_config(settings.log_format),
        # A request in flight ends within its deadline; wait no longer than that.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout),
        # HTTPS when a certificate is given.
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    uvicorn.Server(config).run()


def _log_config(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's logging, with the gateway's own messages written the same
    way, all as the server writes them (text or JSON lines, with request ids)."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    formatter = {"()": f"server.observability.logs.{log_format.capitalize()}Formatter"}
    config["formatters"] = {"default": formatter, "access": formatter}
    config["loggers"]["gateway"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: flags override ``CAMPAIGN_ANALYTICS_*`` environment variables."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway", description="Campaign analytics REST gateway."
    )
    parser.add_argument("--grpc-target", help="analytics gRPC server, host:port")
    parser.add_argument("--host", help="address to listen on")
    parser.add_argument("--port", type=int, help="port to listen on")
    parser.add_argument("--request-timeout", type=float, help="deadline of each call, seconds")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body")
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--grpc-ca", help="PEM trust root: call the gRPC server over TLS")
    parser.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=None, help="log requests"
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text for people, json for machines"
    )
    arguments = vars(parser.parse_args(argv))
    given = {name: value for name, value in arguments.items() if value is not None}
    serve(GatewaySettings(**given))
