"""The request id of each gRPC call: the ``x-request-id`` metadata the
gateway (or any client) sends, set as ``logs.request_id`` while the call is
served, so that what the server logs about a call names it."""

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.observability.logs import request_id

__all__ = ["MAX_REQUEST_ID_LENGTH", "REQUEST_ID_METADATA", "RequestIds"]

REQUEST_ID_METADATA = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128


class RequestIds(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # grpc.aio serves each call in its own task and looks its handler up
        # (running this) in that task, so the value lasts for the call alone.
        metadata: Any = handler_call_details.invocation_metadata or ()
        for key, value in metadata:
            if key == REQUEST_ID_METADATA:
                text = value if isinstance(value, str) else value.decode("ascii", "replace")
                request_id.set(text[:MAX_REQUEST_ID_LENGTH])
                break
        return await continuation(handler_call_details)
