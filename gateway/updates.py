"""Server-Sent Events for subscriptions.

Every SSE connection of one subscription shares one upstream gRPC stream
(``SubscriptionService.StreamUpdates``): each update is encoded into an SSE
frame once, and written to every connection without waiting for any of
them, so one slow reader never holds up the others. The writes go out
``BROADCAST_SLICE`` connections at a time, the loop turning between
slices: at 10,000 connections a round of writes takes about 80 ms, and new
connections no longer wait for whole rounds to get their first frame.

Under uvicorn's HTTP/1.1 protocol (how the gateway runs) the frame is also
put in its chunked-encoding wrapping once, and written straight to each
connection's socket transport: at 10,000 connections the work per frame is
then little more than the kernel's, where a call of the ASGI ``send`` per
connection costs a quarter again (measured). A transport buffers what its
socket does not take at once; a connection holding more than
``MAX_BACKLOG_BYTES`` unsent is dropped. Under any other ASGI server frames
go through ``send``: one that completes at once costs no task, and a
write-paused connection gets a task and a backlog of at most
``MAX_BACKLOG`` frames, past which it is closed. Either way the browser
reconnects with ``Last-Event-ID`` and receives the current numbers.

Frames: first ``{"type": "connected", "subscriptionId", "timestamp"}`` (with
``retry:``), then ``{"type": "update", "data": AnalyticsUpdate, "timestamp"}``
with ``id:`` (the update's sequence), and ``{"type": "heartbeat",
"timestamp"}`` while idle. A connection that comes with a ``Last-Event-ID``
starts with the current snapshot of every subscribed campaign.

If the server goes away the upstream reconnects (with backoff) and, since
updates may have been missed, asks for the current snapshots again.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import grpc
import orjson
from starlette.types import Receive, Send

from clients.pb import GetSubscriptionRequest, StreamUpdatesRequest, SubscriptionServiceStub
from gateway import codec
from gateway.telemetry import REQUEST_ID_HEADER, request_id_from
from server.observability.logs import request_id

log = logging.getLogger(__name__)

RETRY_MS = 3000  # how soon a browser reconnects
_EVENT_STREAM_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # no buffering by a proxy in front
)
MAX_BACKLOG = 256  # frames waiting for a write-paused connection
BROADCAST_SLICE = 500  # connections written to in one turn of the loop
MAX_BACKLOG_BYTES = 256 * 1024  # bytes a connection's transport may hold unsent
# Upstream errors after which the subscription cannot be followed any more.
_FINAL = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
}


def frame(payload: dict[str, Any], event_id: int | None = None) -> bytes:
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def raw_transport(send: Send) -> Any:
    """The socket transport under ``send`` when ``send`` is uvicorn's own
    HTTP/1.1 (httptools) response whose head has gone with a chunked body:
    writing ``chunk(data)`` to it is what ``send`` would write for ``data``.
    None for any other server or response."""
    cycle = getattr(send, "__self__", None)
    if type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    transport = getattr(cycle, "transport", None)
    if (
        getattr(cycle, "chunked_encoding", None) is not True
        or not getattr(cycle, "response_started", False)
        or not hasattr(transport, "get_write_buffer_size")
    ):
        return None
    return transport


@dataclass(eq=False)
class Connection:
    """One SSE response: frames go to its socket transport (``raw_transport``)
    or else to its ``send``; ``ended`` is set when it is over (and ``closed``
    true: read for every frame, a plain attribute costs less than an Event's
    method at 10,000 connections)."""

    send: Send
    transport: Any = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    backlog: list[bytes] = field(default_factory=list)
    writing: asyncio.Task[None] | None = None

    def offer(self, data: bytes, chunked: bytes | None = None) -> None:
        """Writes ``data`` (a frame or several), or queues it; ``chunked`` is
        ``chunk(data)`` when the caller made it already."""
        if self.closed:
            return
        transport = self.transport
        if transport is not None:
            if transport.is_closing():
                self.close()
            elif transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
                # The reader is far behind: drop the connection (and what it
                # holds unsent) rather than hold more for it.
                transport.abort()
                self.close()
            else:
                transport.write(chunked if chunked is not None else chunk(data))
            return
        if self.writing is not None:
            if len(self.backlog) >= MAX_BACKLOG:
                self.close()
            else:
                self.backlog.append(data)
            return
        coroutine = self.send({"type": "http.response.body", "body": data, "more_body": True})
        try:
            # Runs the send up to its first suspension: when the socket takes
            # the bytes at once, that is all it takes, and no task is made.
            waiting = coroutine.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return
        except Exception:
            self.close()
            return
        self.writing = asyncio.ensure_future(self._finish(coroutine, waiting))

    async def _finish(self, pending: Any, waiting: Any) -> None:
        try:
            await _resume(pending, waiting)
            while self.backlog and not self.closed:
                data = b"".join(self.backlog)
                self.backlog.clear()
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
        except Exception:
            self.close()
        finally:
            self.writing = None

    def close(self) -> None:
        self.closed = True
        self.ended.set()


async def _resume(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Finishes, inside a task, a coroutine that ``Connection.offer`` started
    by hand and that suspended on ``waiting`` (what it yielded: a future to
    wait for, or None to let the loop run once). A started coroutine cannot be
    awaited, so it is driven the way a task drives one."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await waiting
        except BaseException as exc:  # the error goes back to the coroutine
            try:
                waiting = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return


@dataclass(eq=False)
class Channel:
    """The SSE connections of one subscription, and their upstream stream."""

    subscription_id: str
    metadata: tuple[tuple[str, str], ...]
    connections: set[Connection] = field(default_factory=set)
    latest: dict[str, bytes] = field(default_factory=dict)  # campaign id -> its last frame
    upstream: asyncio.Task[None] | None = None
    pending: list[bytes] = field(default_factory=list)  # frames not yet sent
    sender: asyncio.Task[None] | None = None

    def publish(self, data: bytes) -> None:
        """Sends ``data`` to every connection soon, with the frames that come
        meanwhile: under load (thousands of connections), a write to each
        connection carries every frame that arrived while the last round of
        writes went on, so the gateway keeps up instead of falling behind."""
        self.pending.append(data)
        if self.sender is None or self.sender.done():
            self.sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        # Let the upstream stream take in what has arrived before writing.
        await asyncio.sleep(0)
        while self.pending:
            data = self._take()
            chunked = chunk(data)
            connections = list(self.connections)
            # A slice of connections between two turns of the loop: a round
            # of writes to 10,000 connections takes about 80 ms, and new
            # connections, the upstream stream and the rest of the gateway
            # get a turn between slices instead of waiting for the round.
            for start in range(0, len(connections), BROADCAST_SLICE):
                if start:
                    await asyncio.sleep(0)
                for connection in connections[start : start + BROADCAST_SLICE]:
                    connection.offer(data, chunked)
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Sends the pending frames, after the round of writes under way."""
        if self.sender is not None and not self.sender.done():
            await asyncio.shield(self.sender)  # the caller's cancellation is not the round's
        self.flush()

    def flush(self) -> None:
        """Sends the pending frames now, in one write per connection."""
        if self.pending:
            self.broadcast(self._take())

    def _take(self) -> bytes:
        """The pending frames, as one write; none is pending any more."""
        data = b"".join(self.pending)
        self.pending.clear()
        return data

    def broadcast(self, data: bytes) -> None:
        chunked = chunk(data)
        for connection in list(self.connections):
            connection.offer(data, chunked)


class UpdateStreams:
    def __init__(self, stub: Callable[[], SubscriptionServiceStub | None]) -> None:
        self._stub = stub
        self._channels: dict[str, Channel] = {}

    async def respond(
        self,
        subscription_id: str,
        metadata: tuple[tuple[str, str], ...],
        resume: bool,
        send: Send,
        receive: Receive,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """The whole SSE response of one connection: its head (with any extra
        ``headers``), the frames until it ends, and its close."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_EVENT_STREAM_HEADERS, *(headers or ())],
            }
        )
        await self.serve(subscription_id, metadata, resume, send, receive)
        with contextlib.suppress(OSError):  # the client may be gone already
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def serve(
        self,
        subscription_id: str,
        metadata: tuple[tuple[str, str], ...],
        resume: bool,
        send: Send,
        receive: Receive,
    ) -> None:
        """Streams the subscription's updates to one connection until it
        disconnects or the subscription ends. The response has started."""
        metadata = _credentials(metadata)
        connection = Connection(send, raw_transport(send))
        connection.offer(
            b"retry: %d\n" % RETRY_MS
            + frame(
                {
                    "type": "connected",
                    "subscriptionId": subscription_id,
                    "timestamp": codec.now_text(),
                }
            )
        )
        channel = self._channels.get(subscription_id)
        if channel is None:
            channel = Channel(subscription_id, metadata)
            self._channels[subscription_id] = channel
            channel.upstream = asyncio.create_task(self._follow(channel, resume))
        elif resume:
            for data in channel.latest.values():
                connection.offer(data)
        channel.connections.add(connection)
        disconnected = asyncio.create_task(_disconnect(receive))
        try:
            await asyncio.wait(
                [disconnected, asyncio.create_task(connection.ended.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            connection.close()
            disconnected.cancel()
            channel.connections.discard(connection)
            if not channel.connections and self._channels.get(subscription_id) is channel:
                del self._channels[subscription_id]
                if channel.upstream is not None:
                    channel.upstream.cancel()

    def following(self, subscription_id: str, metadata: tuple[tuple[str, str], ...]) -> bool:
        """Whether an upstream stream already follows this subscription for
        a caller with the same credentials (or none): the subscription was
        checked then, and its stream would have ended were it removed since."""
        channel = self._channels.get(subscription_id)
        metadata = _credentials(metadata)
        return channel is not None and (not metadata or metadata == channel.metadata)

    def connection_count(self) -> int:
        """SSE connections open."""
        return sum(len(channel.connections) for channel in self._channels.values())

    def stream_count(self) -> int:
        """Upstream update streams (one per subscription followed)."""
        return len(self._channels)

    async def close(self) -> None:
        """Ends every stream (at shutdown)."""
        for channel in list(self._channels.values()):
            for connection in list(channel.connections):
                connection.close()
            if channel.upstream is not None:
                channel.upstream.cancel()
        self._channels.clear()

    async def _follow(self, channel: Channel, resume: bool) -> None:
        delay = 0.1
        while True:  # until the subscription ends, or the last connection cancels this
            stub = self._stub()
            if stub is None:
                return
            call = stub.StreamUpdates(
                StreamUpdatesRequest(subscription_id=channel.subscription_id, resume=resume),
                metadata=channel.metadata,
            )
            try:
                async for message in call:
                    delay = 0.1
                    if message.HasField("update"):
                        update = message.update
                        data = frame(
                            {
                                "type": "update",
                                "data": codec.message_to_dict(update),
                                "timestamp": codec.now_text(),
                            },
                            update.sequence,
                        )
                        channel.latest[update.campaign_id] = data
                    else:
                        data = frame({"type": "heartbeat", "timestamp": codec.now_text()})
                    channel.publish(data)
                return  # the server ended the stream: the subscription is gone
            except grpc.aio.AioRpcError as error:
                if error.code() in _FINAL:
                    await channel.drain()  # what came before the end goes first
                    channel.broadcast(
                        frame(
                            {
                                "type": "error",
                                "error": error.details() or error.code().name,
                                "timestamp": codec.now_text(),
                            }
                        )
                    )
                    for connection in list(channel.connections):
                        connection.close()
                    return
                log.info("update stream of a subscription lost (%s); reconnecting", error.code())
            finally:
                call.cancel()
            # Updates may have been missed meanwhile: start again from the
            # current numbers.
            resume = True
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


def _credentials(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The metadata that says who the caller is: one upstream stream serves
    every connection of the same caller, whatever their request ids."""
    return tuple(item for item in metadata if item[0] != REQUEST_ID_HEADER)


async def _disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


UPDATES_PATH = "/api/analytics/real-time/updates"


class EventStreamFastPath:
    """Serves ``GET /api/analytics/real-time/updates?format=sse`` in front of
    the app, outside its middleware: every frame then goes straight to the
    server's ``send`` instead of through a chain of wrappers (about a quarter
    of the time of a frame at 10,000 connections). Anything else, and any
    stream the server refuses, goes to the app, which answers as usual (the
    error, or the route's own stream)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == UPDATES_PATH
            and await self._stream(scope, receive, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _stream(self, scope: Any, receive: Receive, send: Send) -> bool:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        subscription_id = (query.get("subscriptionId") or [""])[0]
        stubs = self.app.state.stubs
        if (query.get("format") or [""])[0] != "sse" or not subscription_id or stubs is None:
            return False
        headers = {name.lower(): value for name, value in scope["headers"]}
        rid = request_id_from(scope["headers"])
        request_id.set(rid)
        scope["request_id"] = rid  # the same id, should the app answer instead
        metadata: tuple[tuple[str, str], ...] = ()
        authorization = headers.get(b"authorization")
        if authorization is not None:
            text = authorization.decode("latin-1")
            if not (text.isascii() and text.isprintable()):
                return False
            metadata = (("authorization", text),)
        streams: UpdateStreams = self.app.state.update_streams
        if not streams.following(subscription_id, metadata):
            try:
                await stubs.subscriptions.GetSubscription(
                    GetSubscriptionRequest(subscription_id=subscription_id),
                    metadata=(*metadata, (REQUEST_ID_HEADER, rid)),
                    timeout=self.app.state.settings.request_timeout,
                )
            except grpc.aio.AioRpcError:
                return False  # the app answers with the error
        response_headers = [(REQUEST_ID_HEADER.encode(), rid.encode())]
        origin = headers.get(b"origin")
        allowed = self.app.state.settings.cors_origins
        if origin is not None and ("*" in allowed or origin.decode("latin-1") in allowed):
            response_headers.append((b"access-control-allow-origin", origin))
            response_headers.append((b"vary", b"origin"))
        resume = bool(headers.get(b"last-event-id") or query.get("lastEventId"))
        self.app.state.metrics.requests.labels(UPDATES_PATH, "GET", "200").inc()
        await streams.respond(subscription_id, metadata, resume, send, receive, response_headers)
        return True
