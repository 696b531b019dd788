"""``/metrics`` over HTTP on a port of its own, for Prometheus to scrape.

prometheus_client's WSGI app, on the standard library's small threaded HTTP
server (``wsgiref``): a scrape never waits for the event loop, and the loop
never waits for a scrape. Any other path is 404.
"""

import asyncio
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

PATH = "/metrics"

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """Serves ``registry`` at ``http://host:port/metrics`` once started."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, host: str, port: int) -> int:
        """Listens on ``host:port`` (0: a free port); returns the port."""
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
            self._server = make_server(
                host, port, _only_metrics(make_wsgi_app(self._registry)), server,
                handler_class=_Quiet,
            )  # fmt: skip
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another "
                "port with --metrics-port (CAMPAIGN_ANALYTICS_METRICS_PORT), or 0 for none"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        self.port = self._server.server_port
        return self.port

    async def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        # shutdown() waits for the serving loop to notice (up to half a second).
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5)


_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _only_metrics(metrics: _App) -> _App:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if "://" in path:  # a request naming the whole URL ("GET http://host/metrics")
            path = urlsplit(path).path
        if path == PATH:
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {PATH}\n".encode()]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""
