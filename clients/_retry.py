"""Retries under one deadline.

A call's deadline is computed once, when the call starts, and covers every
attempt and every wait between them: each attempt is given the time that is
left. Only the status codes a policy lists are retried (by default
UNAVAILABLE and RESOURCE_EXHAUSTED). Between attempts the client waits an
exponentially growing backoff with full jitter, and at least as long as the
server's ``retry-after`` hint asks. A wait that would end past the deadline is
not started: the error of the last attempt is raised at once. Closing the
client interrupts a wait, and the call raises ``ClientClosedError``.

Retrying ingest is safe because every event carries an ``event_id`` assigned
before the first attempt: the service stores an event once and reports a
repeat as a duplicate. Events committed by an attempt whose answer was lost
are therefore counted as duplicates, not accepted, in the reply of the retry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from clients._exceptions import ClientClosedError, ServiceError, from_rpc_error

__all__ = ["DEFAULT_RETRYABLE_CODES", "RetryPolicy"]

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

DEFAULT_RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

CLOSED_BEFORE_CALL = "The client is closed; create a new client to make calls."
CLOSED_DURING_CALL = "The client was closed while the call was running."
CLOSED_DURING_WAIT = "The client was closed while the call waited to retry."


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed call is retried.

    ``max_attempts`` counts the first attempt (1 turns retries off). Before
    retry *n* (1 for the first) the client waits a random time between 0 and
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` seconds
    (full jitter), or exactly that bound when ``jitter`` is false; never less
    than the server's ``retry-after`` hint. Only errors whose code is in
    ``retryable_codes`` are retried, and never past the call's deadline.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True
    retryable_codes: AbstractSet[grpc.StatusCode] = field(default=DEFAULT_RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        for name in ("initial_backoff", "max_backoff"):
            seconds = getattr(self, name)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"{name} must be finite seconds >= 0, not {seconds}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, not {self.multiplier}")
        codes = frozenset(self.retryable_codes)
        if not all(isinstance(code, grpc.StatusCode) for code in codes):
            raise TypeError("retryable_codes must hold grpc.StatusCode values")
        object.__setattr__(self, "retryable_codes", codes)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        try:
            growth = self.multiplier ** (retry - 1)
        except OverflowError:
            growth = math.inf
        bound = min(self.max_backoff, self.initial_backoff * growth)
        if not self.jitter:
            return bound
        return (rng or _rng).uniform(0.0, bound)


DEFAULT_RETRY = RetryPolicy()

# gRPC's own refusal of a message over the size limit (RESOURCE_EXHAUSTED,
# "Received message larger than max (N vs. M)", or "Sent ..." on this side).
_TOO_LARGE = "message larger than max"


def never_fits(error: ServiceError) -> bool:
    """Whether ``error`` refused a message for its size: sending it again cannot help."""
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in error.details


_rng = random.Random()


class _Attempts:
    """One call's attempts: the deadline, the count, the wait before the next."""

    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.count = 0

    def start(self) -> float | None:
        """Counts an attempt and returns the time it is given (None: no deadline)."""
        self.count += 1
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def wait_before_retry(self, error: ServiceError) -> float | None:
        """Seconds to wait before retrying after ``error``, or None to give up."""
        if error.code not in self.policy.retryable_codes or never_fits(error):
            return None
        if self.count >= self.policy.max_attempts:
            return None
        wait = self.policy.backoff(self.count)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        # Waiting until the deadline would leave the next attempt no time at all.
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None
        return wait


def call_with_retry(
    attempt: Callable[[float | None], _T],
    *,
    policy: RetryPolicy,
    timeout: float | None,
    closed: threading.Event,
    name: str,
) -> _T:
    """Runs ``attempt(time_left)`` until it succeeds or may no longer be retried.

    ``closed`` is set when the client closes; it interrupts a wait.
    """
    attempts = _Attempts(policy, timeout)
    while True:
        if closed.is_set():
            raise ClientClosedError(CLOSED_BEFORE_CALL)
        try:
            return attempt(attempts.start())
        except Exception as exc:
            # Closing the channel ends the calls running on it, with an error
            # that says nothing of why: report the close instead.
            if closed.is_set():
                raise ClientClosedError(CLOSED_DURING_CALL) from exc
            if not isinstance(exc, grpc.RpcError):
                raise
            error = from_rpc_error(exc, attempts=attempts.count)
            wait = attempts.wait_before_retry(error)
            if wait is None:
                raise error from exc
        _log_retry(name, error, wait)
        if closed.wait(wait):
            raise ClientClosedError(CLOSED_DURING_WAIT) from error


async def call_with_retry_async(
    attempt: Callable[[float | None], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    timeout: float | None,
    closed: asyncio.Event,
    name: str,
) -> _T:
    """Awaits ``attempt(time_left)`` until it succeeds or may no longer be retried.

    ``closed`` is set when the client closes; it interrupts a wait.
    """
    attempts = _Attempts(policy, timeout)
    while True:
        if closed.is_set():
            raise ClientClosedError(CLOSED_BEFORE_CALL)
        try:
            return await attempt(attempts.start())
        except asyncio.CancelledError:
            # grpc.aio cancels the calls of a channel being closed; that is a
            # close, unless the caller's own task is being cancelled.
            if closed.is_set() and not _cancelling():
                raise ClientClosedError(CLOSED_DURING_CALL) from None
            raise
        except Exception as exc:
            if closed.is_set():
                raise ClientClosedError(CLOSED_DURING_CALL) from exc
            if not isinstance(exc, grpc.RpcError):
                raise
            error = from_rpc_error(exc, attempts=attempts.count)
            wait = attempts.wait_before_retry(error)
            if wait is None:
                raise error from exc
        _log_retry(name, error, wait)
        try:
            await asyncio.wait_for(closed.wait(), timeout=wait)
        except TimeoutError:
            continue
        raise ClientClosedError(CLOSED_DURING_WAIT) from error


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _log_retry(name: str, error: ServiceError, wait: float) -> None:
    logger.debug(
        "%s attempt %d failed with %s; retrying in %.3f s",
        name,
        error.attempts,
        error.code.name,
        wait,
    )
