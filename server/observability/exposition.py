"""``/metrics`` over HTTP on a port of its own, for Prometheus to scrape.

prometheus_client's small threaded HTTP server (the standard library's
``wsgiref``) serves it: a scrape never waits for the event loop, and the
loop never waits for a scrape.
"""

import asyncio
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

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
            self._server, self._thread = start_http_server(port, host, self._registry)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another "
                "port with --metrics-port (CAMPAIGN_ANALYTICS_METRICS_PORT), or 0 for none"
            ) from exc
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
