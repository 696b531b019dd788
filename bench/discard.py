"""A gRPC IngestService that discards what it receives: the transport's ceiling.

It is served like the real server (grpc.aio on uvloop, the same message size
options), parses every request into the generated messages as the real one
does, and answers success counting the events it received as accepted, so the
load clients drive it exactly as they drive the service. Nothing is validated
or stored.

    python -m bench.discard [--port N]     prints "listening on 127.0.0.1:N"
"""

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import grpc

from clients import pb
from server.app import MAX_MESSAGE_BYTES


class DiscardIngest(pb.IngestServiceServicer):
    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestEventsResponse:
        count = len(request.events) + (1 if request.HasField("event") else 0)
        return pb.IngestEventsResponse(success=True, count=count, accepted=count)

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[pb.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.StreamEventsResponse:
        count = batches = 0
        async for message in request_iterator:
            count += len(message.events)
            batches += 1
        return pb.StreamEventsResponse(success=True, count=count, accepted=count, batches=batches)


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    # IngestCampaignEvent is left unimplemented: the load never calls it.
    pb.add_IngestServiceServicer_to_server(DiscardIngest(), server)  # type: ignore[abstract]
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.discard", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
