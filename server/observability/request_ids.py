"""The request id of each gRPC call: the ``x-request-id`` metadata the
gateway (or any client) sends, set as ``logs.request_id`` while the call is
served (``server.services.common.reports_errors`` notes it as each call
starts), so that what the server logs about a call names it."""

import functools

import grpc

from server.observability.logs import request_id

__all__ = ["MAX_REQUEST_ID_LENGTH", "REQUEST_ID_METADATA", "note_request_id"]

REQUEST_ID_METADATA = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128


def note_request_id(context: grpc.aio.ServicerContext) -> None:
    """Sets ``logs.request_id`` to the call's ``x-request-id``, if it sent
    one. grpc.aio serves each call in its own task, so the value lasts for
    the call alone. The metadata is read when a record is logged, not here:
    most calls log nothing, and reading it costs about 2 µs."""
    request_id.set(functools.partial(_request_id_of, context))


def _request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            return text[:MAX_REQUEST_ID_LENGTH]
    return ""
