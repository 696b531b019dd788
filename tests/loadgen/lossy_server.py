"""A lossy server: a real gRPC server in front of the analytics server that
loses events.

Its IngestService forwards every call to the real server, but without every
``every``-th event it receives, and answers that all of them were accepted.
MetricsService and CampaignService calls are forwarded unchanged (as bytes),
so a client sees the real server but for the lost events.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from clients import pb

T = TypeVar("T")
FORWARDED_SERVICES = ("/analytics.v1.MetricsService/", "/analytics.v1.CampaignService/")


def _forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key == "authorization" and isinstance(value, str)
    )


class LossyIngest(pb.IngestServiceServicer):
    def __init__(self, upstream: grpc.aio.Channel, every: int) -> None:
        self._ingest = pb.IngestServiceStub(upstream)
        self._every = every
        self.received = 0
        self.dropped = 0

    def _thin(self, events: Sequence[pb.Event]) -> list[pb.Event]:
        kept = []
        for event in events:
            self.received += 1
            if self.received % self._every == 0:
                self.dropped += 1
            else:
                kept.append(event)
        return kept

    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        events = [request.event] if request.HasField("event") else list(request.events)
        kept = self._thin(events)
        if kept:
            await self._ingest.IngestEvents(
                pb.IngestEventsRequest(events=kept), metadata=_forwarded_metadata(context)
            )
        return pb.IngestEventsResponse(success=True, count=len(events), accepted=len(events))

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[pb.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.StreamEventsResponse:
        count = batches = 0

        async def thinned() -> AsyncIterator[pb.StreamEventsRequest]:
            nonlocal count, batches
            async for message in request_iterator:
                count += len(message.events)
                batches += 1
                kept = self._thin(message.events)
                if kept:
                    yield pb.StreamEventsRequest(events=kept)

        await self._ingest.StreamEvents(thinned(), metadata=_forwarded_metadata(context))
        return pb.StreamEventsResponse(success=True, count=count, accepted=count, batches=batches)


class Forward(grpc.GenericRpcHandler):
    """Forwards the unary calls of ``FORWARDED_SERVICES`` as they are."""

    def __init__(self, upstream: grpc.aio.Channel) -> None:
        self._upstream = upstream

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method  # type: ignore[attr-defined]
        if not method.startswith(FORWARDED_SERVICES):
            return None
        call = self._upstream.unary_unary(method)  # bytes in, bytes out

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                reply: bytes = await call(
                    request,
                    metadata=_forwarded_metadata(context),
                    timeout=context.time_remaining(),
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)


class LossyServer:
    """The lossy server on 127.0.0.1, a free port, on its own event loop in a thread."""

    def __init__(self, upstream_target: str, every: int = 10) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.ingest: LossyIngest | None = None
        port = self._call(self._start(upstream_target, every))
        self.target = f"127.0.0.1:{port}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self, upstream_target: str, every: int) -> int:
        self._upstream = grpc.aio.insecure_channel(upstream_target)
        # IngestCampaignEvent is left unimplemented: the load never calls it.
        self.ingest = LossyIngest(self._upstream, every)  # type: ignore[abstract]
        self._server = grpc.aio.server()
        pb.add_IngestServiceServicer_to_server(self.ingest, self._server)
        self._server.add_generic_rpc_handlers([Forward(self._upstream)])
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    async def _stop(self) -> None:
        await self._server.stop(1)
        await self._upstream.close()

    def stop(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
