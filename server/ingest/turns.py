"""Turns: the ingest path's heavy Python (decoding and validating events)
done by one call at a time, in slices, letting the event loop run between
two slices.

The server is one event loop, and gRPC hands it new calls one per turn of the
loop. Decoding and validating a batch of 1,000 events takes several
milliseconds; when many calls did that within the same turn, a turn took tens
of milliseconds, gRPC took calls in at a few dozen a second, and under
overload the excess waited inside gRPC, seconds long, before any code of
ours could refuse it (``server.ingest.admission`` counts only the calls taken
in). Taking turns keeps every turn of the loop short: calls are taken in, and
refused, as fast as they come, while the work itself goes on at the same
pace (the loop is one thread either way). A single event that keeps every
rule skips the turns (``IngestPipeline.ingest_message``): it is read in a few
microseconds.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Events per slice: about half a millisecond of reading and checking them (a
# slice is a turn of the loop, and gRPC takes in about one call per turn).
SLICE_EVENTS = 100


class Turns:
    def __init__(self, slice_events: int = SLICE_EVENTS) -> None:
        self.slice_events = slice_events
        self._turn = asyncio.Lock()  # FIFO: calls work in the order they asked

    def run_at_once(self, items: Sequence[T], work: Callable[[Sequence[T]], None]) -> bool:
        """``run``, when it need not wait (``items`` fit in one slice and no
        call is taking its turn): returns whether it ran. (No coroutine: most
        calls are small.)"""
        if len(items) <= self.slice_events and not self._turn.locked():
            work(items)  # small, and nobody waits: no need to queue
            return True
        return False

    async def run(self, items: Sequence[T], work: Callable[[Sequence[T]], None]) -> None:
        """Calls ``work`` on consecutive slices of ``items``, in this call's
        turn; between two slices everything else ready on the loop runs."""
        if self.run_at_once(items, work):
            return
        size = self.slice_events
        async with self._turn:
            for start in range(0, len(items), size):
                if start:
                    await asyncio.sleep(0)
                work(items[start : start + size])
