"""Admission: how many events the ingest path holds at once.

Decoding and validating a request costs the server's Python more than
writing it costs PostgreSQL, so under overload the excess would not reach the
writer's buffer and be refused there: it would queue in front of the
decoding, inside gRPC, each call waiting longer until its deadline and memory
growing with the calls. Admission counts the events of every ingest call from
the moment it is taken, before anything is decoded, until it is answered
(decoded, validated, buffered or being written), and keeps that count within
``capacity``: a unary call that does not fit is refused at once
(``ResourceExhausted``, with a retry-after hint), which costs next to nothing;
a stream's next message waits for room instead (the stream reads no further,
which slows its sender through gRPC flow control).

Room is granted in the order it was asked for, and a call larger than
``capacity`` is still taken when nothing else is held, so none waits forever.
"""

import asyncio
from collections import deque

from server.errors import ResourceExhausted


class Admission:
    def __init__(self, capacity: int, retry_after: float = 1.0) -> None:
        self.capacity = capacity
        self.retry_after = retry_after
        self.events = 0  # held now
        self.refused_calls = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def take_now(self, count: int) -> None:
        """Takes room for ``count`` events, or raises ``ResourceExhausted`` at
        once when there is none; give it back with ``release``."""
        if self._waiting or not self._fits(count):
            self.refused_calls += 1
            raise ResourceExhausted(
                f"the ingest buffer is full ({self.capacity} events being decoded, "
                f"validated or written); retry in {self.retry_after:g} s",
                retry_after=self.retry_after,
            )
        self.events += count

    async def take(self, count: int) -> None:
        """Takes room for ``count`` events, waiting until there is some; give
        it back with ``release``."""
        if not self._waiting and self._fits(count):
            self.events += count
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((count, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(count)  # granted as the wait was cancelled: give it back
            else:
                self._grant()  # others behind this one may fit now
            raise

    def release(self, count: int) -> None:
        self.events -= count
        self._grant()

    def _fits(self, count: int) -> bool:
        return self.events == 0 or self.events + count <= self.capacity

    def _grant(self) -> None:
        while self._waiting:
            count, granted = self._waiting[0]
            if granted.done():  # its waiter was cancelled
                self._waiting.popleft()
                continue
            if not self._fits(count):
                return
            self._waiting.popleft()
            self.events += count
            granted.set_result(None)
