"""SSE fan-out on real sockets: a reader that stops reading is dropped once it
is far behind, and never holds up the others; with uvicorn's HTTP/1.1
protocol frames go straight to the socket transports, under any other server
through the ASGI ``send``, with the same bytes on the wire."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway import updates
from gateway.updates import Channel, Connection, chunk, raw_transport

FRAME = b"data: " + b"x" * 65_000 + b"\n\n"
FRAMES = 400  # 26 MB: more than a stalled reader's socket buffers take in


class FanOutApp:
    """An ASGI app whose every GET becomes an SSE connection of one channel;
    with ``wrap_send`` it hides uvicorn's ``send`` behind a function, as any
    middleware does."""

    def __init__(self, wrap_send: bool) -> None:
        self.wrap_send = wrap_send
        self.channel = Channel("s", ())
        self.connections: list[Connection] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.loop = asyncio.get_running_loop()
        if self.wrap_send:
            inner = send

            async def send(message: Any) -> None:
                await inner(message)

        await send({"type": "http.response.start", "status": 200, "headers": []})
        connection = Connection(send, raw_transport(send))
        self.connections.append(connection)
        self.channel.connections.add(connection)
        try:
            await connection.ended.wait()
        finally:
            self.channel.connections.discard(connection)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(params=["transport", "asgi-send"])
def fanout(request: pytest.FixtureRequest) -> Iterator[tuple[FanOutApp, int]]:
    app = FanOutApp(wrap_send=request.param == "asgi-send")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http="httptools", loop="asyncio", log_level="warning",
                            lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield app, listener.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    listener.close()


def _open(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /updates HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def _on_loop(app: FanOutApp, call: Any) -> None:
    assert app.loop is not None
    done = threading.Event()

    def run() -> None:
        try:
            call()
        finally:
            done.set()

    app.loop.call_soon_threadsafe(run)
    assert done.wait(10)


def test_a_stalled_reader_is_dropped_and_the_others_get_every_frame(
    fanout: tuple[FanOutApp, int],
) -> None:
    app, port = fanout
    with _open(port, receive_buffer=4096), _open(port) as reader:
        _fan_out(app, reader)


def _fan_out(app: FanOutApp, reader: socket.socket) -> None:
    deadline = time.monotonic() + 10
    while len(app.connections) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(app.connections) == 2
    uses_transport = [c.transport is not None for c in app.connections]
    assert uses_transport == [not app.wrap_send] * 2

    received = bytearray()

    def read() -> None:
        reader.settimeout(20)
        while True:
            data = reader.recv(1 << 20)
            if not data:
                return
            received.extend(data)
            if received.endswith(b"0\r\n\r\n"):
                return

    reading_thread = threading.Thread(target=read, daemon=True)
    reading_thread.start()
    # Frames go out a few at a time, as updates do, until the stalled one is dropped.
    for _ in range(FRAMES // 10):
        _on_loop(app, lambda: [app.channel.publish(FRAME) for _ in range(10)])
        time.sleep(0.02)
    deadline = time.monotonic() + 20
    while not app.connections[0].ended.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.connections[0].ended.is_set(), "the stalled reader was never dropped"
    assert not app.connections[1].ended.is_set()

    _on_loop(app, app.connections[1].close)
    reading_thread.join(20)
    assert not reading_thread.is_alive()
    body = _dechunk(bytes(received))
    assert body == FRAME * FRAMES


def _dechunk(response: bytes) -> bytes:
    head, _, raw = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    out = bytearray()
    while True:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += raw[:size]
        assert raw[size : size + 2] == b"\r\n"
        raw = raw[size + 2 :]


def test_chunk_is_what_uvicorn_writes() -> None:
    assert chunk(b"data: {}\n\n") == b"a\r\ndata: {}\n\n\r\n"
    assert updates.MAX_BACKLOG_BYTES >= 64 * 1024


class _CountingTransport:
    """A socket transport that takes every write at once and counts them;
    the round's first write (to any connection) makes ``on_first`` ready."""

    def __init__(self, writes: list[bytes], on_first: Any) -> None:
        self.writes = writes
        self.on_first = on_first

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        if not self.writes:
            asyncio.get_running_loop().call_soon(self.on_first)
        self.writes.append(data)


def test_a_round_of_writes_leaves_the_loop_turns_between_slices() -> None:
    """With thousands of connections, new connections (and everything else
    the gateway does) get a turn while a frame is being written to all: a
    callback made ready as the round starts runs before the round ends; and
    every connection still gets every frame, in order."""
    count = 3 * updates.BROADCAST_SLICE

    async def scenario() -> tuple[int, list[bytes]]:
        writes: list[bytes] = []
        ran_after: list[int] = []
        channel = Channel("s", ())

        async def unused_send(message: Any) -> None:
            raise AssertionError("frames go to the transport")

        def first_turn() -> None:
            ran_after.append(len(writes))

        for _ in range(count):
            transport = _CountingTransport(writes, first_turn)
            channel.connections.add(Connection(unused_send, transport))
        channel.publish(b"data: 1\n\n")
        channel.publish(b"data: 2\n\n")
        await channel.drain()
        channel.publish(b"data: 3\n\n")
        await channel.drain()
        return ran_after[0], writes

    ran_after, writes = asyncio.run(scenario())
    assert len(writes) == 2 * count
    assert ran_after < count
    assert set(writes[:count]) == {chunk(b"data: 1\n\ndata: 2\n\n")}
    assert set(writes[count:]) == {chunk(b"data: 3\n\n")}
