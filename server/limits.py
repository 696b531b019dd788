"""Per-key rate limits: calls per second and events per second.

Each limit is a token bucket per API key, refilled at the limit's rate and
holding up to ``burst_seconds`` of it, so a key may burst after a quiet spell
but not exceed the rate over time. A request larger than the whole bucket is
still admitted once the bucket is full, and the debt it leaves delays what
comes next: a limit slows a key down, it never makes a request impossible.

Unary calls over a limit are refused (``ResourceExhausted``, with the time to
wait); a client stream is slowed down instead, as it is when the buffer is
full. Limits count per server process: behind N servers a key may reach N
times the rate.
"""

import asyncio
import math
import time
from dataclasses import dataclass

from server.errors import ResourceExhausted

# Buckets kept before the full ones (which a fresh bucket equals) are dropped.
MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimit:
    """One limit, ``per_second`` ``unit`` per key (0: no limit)."""

    def __init__(self, unit: str, per_second: float, burst_seconds: float) -> None:
        if per_second < 0 or burst_seconds <= 0:
            raise ValueError("a rate limit needs per_second >= 0 and burst_seconds > 0")
        self.unit = unit
        self.per_second = per_second
        self.capacity = per_second * burst_seconds
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def check(self, key_id: str, amount: int = 1) -> None:
        """Takes ``amount`` from the key's bucket, or raises ``ResourceExhausted``
        (taking nothing) saying which limit and when to retry."""
        wait = self._take(key_id, amount)
        if wait > 0:
            seconds = max(1, math.ceil(wait))  # as Retry-After says it: whole seconds
            raise ResourceExhausted(
                f"rate limit exceeded: at most {_number(self.per_second)} {self.unit} "
                f"per second per API key (bursts of up to {_number(self.capacity)}); "
                f"retry in {seconds} second{'' if seconds == 1 else 's'}",
                retry_after=seconds,
            )

    async def wait(self, key_id: str, amount: int) -> None:
        """Takes ``amount`` from the key's bucket, waiting for it if need be."""
        if not self.enabled:
            return
        bucket = self._refilled(key_id, time.monotonic())
        # Reserve now and wait out the debt: concurrent waiters queue up in
        # order instead of racing for the same tokens.
        bucket.tokens -= amount
        if bucket.tokens < 0:
            await asyncio.sleep(-bucket.tokens / self.per_second)

    def _take(self, key_id: str, amount: int) -> float:
        """0 when taken, else the seconds until it could be."""
        if not self.enabled:
            return 0.0
        bucket = self._refilled(key_id, time.monotonic())
        needed = min(amount, self.capacity)
        if bucket.tokens < needed:
            return (needed - bucket.tokens) / self.per_second
        bucket.tokens -= amount
        return 0.0

    def _refilled(self, key_id: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[key_id] = _Bucket(self.capacity, now)
            return bucket
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        return bucket

    def _drop_full(self, now: float) -> None:
        """Forgets the buckets that have refilled: a new one starts full anyway."""
        for key_id, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.per_second >= self.capacity:
                del self._buckets[key_id]


class KeyLimits:
    """The limits every key has: calls and events per second."""

    def __init__(
        self,
        calls_per_second: float = 0.0,
        events_per_second: float = 0.0,
        burst_seconds: float = 3.0,
    ) -> None:
        self.calls = RateLimit("calls", calls_per_second, burst_seconds)
        self.events = RateLimit("events", events_per_second, burst_seconds)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:g}"
