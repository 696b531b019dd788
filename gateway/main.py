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
        log_config=_log_config(),
        # A request in flight ends within its deadline; wait no longer than that.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout),
    )
    uvicorn.Server(config).run()


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the gateway's own messages written the same way."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
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
    parser.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=None, help="log requests"
    )
    arguments = vars(parser.parse_args(argv))
    given = {name: value for name, value in arguments.items() if value is not None}
    serve(GatewaySettings(**given))
