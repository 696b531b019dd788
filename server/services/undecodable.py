"""Requests whose bytes are not the message their RPC takes.

gRPC decodes a request before any servicer sees it, and left to itself ends
a call whose bytes it cannot decode as UNKNOWN. The analytics services are
added to the server through ``DecodingServer``, whose handlers decode their
requests themselves:

- a request that cannot be read is refused with INVALID_ARGUMENT, saying
  which message it should have been and what to check;
- in an ``IngestEventsRequest`` or a ``StreamEventsRequest`` (a message of a
  stream) that is readable but for some of its events (corrupt bytes, or
  text that is not UTF-8), those events are set apart as undecodable events
  at their index, as a front end sets apart the JSON events it cannot
  decode: each is rejected and dead-lettered on its own (with its bytes,
  base64) and the rest of the batch goes through. A lone event that cannot
  be read is refused with INVALID_ARGUMENT, once kept; so is the event of an
  ``IngestCampaignEventRequest`` that cannot be read.
"""

import base64
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from clients import pb
from server.errors import InvalidArgument

__all__ = ["PAYLOAD_PREFIX", "DecodingServer"]

# The dead-letter payload of an event that could not be decoded from protobuf.
PAYLOAD_PREFIX = "protobuf-base64:"

_LENGTH_DELIMITED = 2


@dataclass(frozen=True, slots=True)
class _Batch:
    """Where a request type keeps its events: field numbers of the lone
    event (0: none), of the events, and of the undecodable events."""

    event: int
    events: int
    undecodable: int

    @classmethod
    def of(cls, message_type: type[Message]) -> "_Batch":
        fields = message_type.DESCRIPTOR.fields_by_name
        lone = fields.get("event")
        return cls(
            lone.number if lone is not None else 0,
            fields["events"].number,
            fields["undecodable_events"].number,
        )


# The requests whose events are set apart one by one when they cannot be read.
_BATCHES: dict[type[Message], _Batch] = {
    pb.IngestEventsRequest: _Batch.of(pb.IngestEventsRequest),
    pb.StreamEventsRequest: _Batch.of(pb.StreamEventsRequest),
}


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A request that could not be decoded, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Salvaged:
    """An ingest request whose unreadable events were set apart."""

    request: Any  # pb.IngestEventsRequest or pb.StreamEventsRequest
    # Why its one event could not be read, when it carried one event alone.
    lone_event_reason: str = ""


class DecodingServer:
    """The gRPC server as a generated ``add_*Servicer_to_server`` function
    sees it: each method handler it adds reaches the server replaced by one
    that decodes its requests itself (``_wrap``). The handlers are swapped
    once, as they are added: an interceptor could swap them too, but grpc.aio
    runs interceptors on every call (about 4% of the server's CPU for a
    single-event call, ``python -m bench.ingest``)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(map(_DecodingHandlers, handlers)))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        # (Looked up first: these serve the calls, the generic ones are the
        # fallback for code generated without them.)
        wrapped = {name: _decoding(service, name, handler) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)


class _DecodingHandlers(grpc.GenericRpcHandler):
    """A generic handler whose method handlers decode their requests."""

    def __init__(self, handlers: grpc.GenericRpcHandler) -> None:
        self._handlers = handlers
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # by method path

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        path = handler_call_details.method
        wrapped = self._wrapped.get(path)
        if wrapped is None:
            handler = self._handlers.service(handler_call_details)
            if handler is None:
                return None
            service, _, method = path.lstrip("/").partition("/")
            wrapped = self._wrapped[path] = _decoding(service, method, handler)
        return wrapped


def _decoding(service: str, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` of ``service``'s ``method``, decoding its requests (``_wrap``)."""
    found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    return _wrap(handler, message_factory.GetMessageClass(found.input_type))


def _wrap(handler: grpc.RpcMethodHandler, message_type: type[Message]) -> grpc.RpcMethodHandler:
    decode = _decoder(message_type)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), decode, serialize)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(
            _unary_stream(handler.unary_stream), decode, serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _stream_unary(handler.stream_unary), decode, serialize
        )
    return handler


def _decoder(message_type: type[Message]) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            pass
        batch = _BATCHES.get(message_type)
        if batch is not None:
            salvaged = _salvage_batch(data, message_type, batch)
            if salvaged is not None:
                return salvaged
        if message_type is pb.IngestCampaignEventRequest:
            lone = _salvage_campaign_event(data)
            if lone is not None:
                return lone
        return _Unreadable(
            f"the request is not a valid {name} message: its bytes are corrupt or hold text "
            "that is not UTF-8; send it as encoded by the generated code for the proto"
        )

    return decode


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Unreadable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        if isinstance(request, _Salvaged):
            response = await behavior(request.request, context)
            if request.lone_event_reason:  # rejected and kept by now, as every rejected event
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"event rejected: {request.lone_event_reason}",
                )
            return response
        call = behavior(request, context)
        del request  # held by the call alone (see ``reports_errors``)
        return await call

    return checked


def _unary_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, _Unreadable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        async for response in behavior(request, context):
            yield response

    return checked


def _stream_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await behavior(_readable(requests), context)

    return checked


async def _readable(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The stream's messages, with their unreadable events set apart; an
    unreadable message ends the call with INVALID_ARGUMENT (raised inside
    the servicer, which reports it)."""
    number = 0
    async for request in requests:
        number += 1
        if isinstance(request, _Unreadable):
            raise InvalidArgument(f"stream message {number}: {request.reason}")
        yield request.request if isinstance(request, _Salvaged) else request


# -- events apart from their batch ---------------------------------------------


def _salvage_batch(data: bytes, message_type: type[Message], batch: _Batch) -> _Salvaged | None:
    """The batch with each event that cannot be decoded set apart as an
    undecodable event; None when the request itself cannot be read."""
    try:
        fields = list(_wire_fields(data))
    except ValueError:
        return None
    numbers = [number for number, wire_type, *_ in fields]
    if batch.undecodable in numbers:
        return None  # already numbered by a front end: not ours to renumber
    request: Any = message_type()
    lone = batch.event and batch.event in numbers
    position = 1 if lone else 0  # the lone event comes first
    lone_reason = ""
    for number, wire_type, start, value_start, end in fields:
        if number in (batch.event, batch.events) and wire_type == _LENGTH_DELIMITED:
            index = 0 if number == batch.event else position
            position += number == batch.events
            chunk = data[value_start:end]
            try:
                event = pb.Event.FromString(chunk)
            except DecodeError:
                field = _broken_field(chunk)
                reason = _event_reason(field)
                request.undecodable_events.append(
                    pb.UndecodableEvent(
                        index=index,
                        field=field,
                        reason=reason,
                        payload=PAYLOAD_PREFIX + base64.b64encode(chunk).decode("ascii"),
                    )
                )
                if number == batch.event:
                    lone_reason = reason
                continue
            if number == batch.event:
                request.event.MergeFrom(event)
            else:
                request.events.append(event)
            continue
        try:
            request.MergeFromString(data[start:end])
        except DecodeError:
            return None
    if not request.undecodable_events:
        return None  # the events were fine: something else is broken
    if request.events:
        lone_reason = ""
    return _Salvaged(request, lone_reason)


def _salvage_campaign_event(data: bytes) -> pb.IngestCampaignEventRequest | None:
    """The request with its event set apart as undecodable, when the event is
    what cannot be decoded; None when something else is broken."""
    try:
        fields = list(_wire_fields(data))
    except ValueError:
        return None
    event_field = pb.IngestCampaignEventRequest.DESCRIPTOR.fields_by_name["event"].number
    request = pb.IngestCampaignEventRequest()
    undecodable = None
    for number, wire_type, start, value_start, end in fields:
        chunk = data[value_start:end]
        if number == event_field and wire_type == _LENGTH_DELIMITED:
            try:
                pb.Event.FromString(chunk)
            except DecodeError:
                field = _broken_field(chunk)
                undecodable = pb.UndecodableEvent(
                    index=0,
                    field=field,
                    reason=_event_reason(field),
                    payload=PAYLOAD_PREFIX + base64.b64encode(chunk).decode("ascii"),
                )
                continue
        try:
            request.MergeFromString(data[start:end])
        except DecodeError:
            return None
    if undecodable is None:
        return None
    request.undecodable_event.CopyFrom(undecodable)
    return request


def _event_reason(field: str) -> str:
    if field:
        return (
            f"the event cannot be decoded: its {field} is corrupt or holds text that is not UTF-8"
        )
    return "the event cannot be decoded: its bytes are not an analytics.v1.Event message"


def _broken_field(chunk: bytes) -> str:
    """The JSON name of the event's first field that cannot be decoded, if one can be told."""
    try:
        fields = list(_wire_fields(chunk))
    except ValueError:
        return ""
    for number, _, start, _, end in fields:
        try:
            pb.Event.FromString(chunk[start:end])
        except DecodeError:
            known = pb.Event.DESCRIPTOR.fields_by_number.get(number)
            return known.json_name if known is not None else ""
    return ""


def _wire_fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start, value start, end) of each field of a
    message's wire format; ValueError where it is not well formed."""
    position, size = 0, len(data)
    while position < size:
        start = position
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        value_start = position
        if wire_type == 0:
            _, end = _varint(data, position)
        elif wire_type == 1:
            end = position + 8
        elif wire_type == _LENGTH_DELIMITED:
            length, value_start = _varint(data, position)
            end = value_start + length
        elif wire_type == 5:
            end = position + 4
        else:
            raise ValueError(f"wire type {wire_type}")
        if end > size:
            raise ValueError("truncated")
        yield number, wire_type, start, value_start, end
        position = end


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ValueError("varint longer than 10 bytes")
