"""What can go wrong when calling the analytics service.

The whole tree::

    AnalyticsError                   anything raised by this client
    ├── ClientClosedError            the client was closed before or during the call
    └── ServiceError                 the service answered with a gRPC status
        ├── InvalidArgumentError     INVALID_ARGUMENT: an empty or too large batch, a bad window
        ├── UnauthenticatedError     UNAUTHENTICATED: no API key, an unknown one, or a
        │                            revoked one (which also ends its open streams)
        ├── PermissionDeniedError    PERMISSION_DENIED: another organization's data, or a
        │                            key without the needed role
        ├── NotFoundError            NOT_FOUND: the campaign does not exist
        ├── AlreadyExistsError       ALREADY_EXISTS: the campaign id is taken
        ├── FailedPreconditionError  FAILED_PRECONDITION
        ├── ResourceExhaustedError   RESOURCE_EXHAUSTED: the ingest buffer is full, a rate
        │                            limit of the key is reached, or a message is too
        │                            large (retried)
        ├── UnavailableError         UNAVAILABLE: the server or its storage cannot be
        │                            reached (retried)
        ├── DeadlineExceededError    DEADLINE_EXCEEDED: the call's deadline passed
        ├── UnimplementedError       UNIMPLEMENTED: the server does not offer the call
        └── InternalError            INTERNAL: a fault inside the server

Every ``ServiceError`` carries the status ``code``, its ``details``, the
server's ``trailing_metadata``, the ``retry_after`` hint (seconds) when the
server sent one, and the number of ``attempts`` made. A status without a class
of its own (for example CANCELLED or UNKNOWN) is raised as ``ServiceError``.
A retried call that still fails raises the error of its last attempt.

Events that the service refuses one by one are not errors: they are counted
and explained in the reply (``rejected``), while the rest of the batch is
stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import grpc

__all__ = [
    "AlreadyExistsError",
    "AnalyticsError",
    "ClientClosedError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServiceError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
]

# Trailing metadata key of the server's hint, in seconds, of when to retry.
RETRY_AFTER_KEY = "retry-after"


class AnalyticsError(Exception):
    """Base of every error raised by the analytics client."""


class ClientClosedError(AnalyticsError):
    """The client was closed: before the call, while it ran, or while it
    waited to retry. A closed client cannot be reopened; create a new one."""


class ServiceError(AnalyticsError):
    """The service answered a call with a gRPC status other than OK."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]
    retry_after: float | None
    attempts: int

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str = "",
        *,
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
        attempts: int = 1,
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = tuple((key, value) for key, value in trailing_metadata)
        self.retry_after = parse_retry_after(self.trailing_metadata)
        self.attempts = attempts
        super().__init__(code, details)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.details}" if self.details else self.code.name
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, details={self.details!r}, "
            f"attempts={self.attempts})"
        )


class InvalidArgumentError(ServiceError):
    """INVALID_ARGUMENT: the request itself is wrong (for example an empty or
    too large batch, or a window out of range)."""


class UnauthenticatedError(ServiceError):
    """UNAUTHENTICATED: no API key was sent, or the service does not know it."""


class PermissionDeniedError(ServiceError):
    """PERMISSION_DENIED: the key may not act on that organization's data, or
    lacks the role (ingest, read, admin) the call needs."""


class NotFoundError(ServiceError):
    """NOT_FOUND: the campaign does not exist."""


class AlreadyExistsError(ServiceError):
    """ALREADY_EXISTS: the campaign id is taken. After a retried create, the
    campaign may have been created by an earlier attempt."""


class FailedPreconditionError(ServiceError):
    """FAILED_PRECONDITION: the service is not in a state to perform the call."""


class ResourceExhaustedError(ServiceError):
    """RESOURCE_EXHAUSTED: the ingest buffer is full or the key's rate limit
    is reached; ``retry_after`` says when to try again. (Also: a message
    larger than the server receives, which a retry cannot cure.) Retried by
    the default policy."""


class UnavailableError(ServiceError):
    """UNAVAILABLE: the server cannot be reached, is shutting down, or cannot
    reach its storage in time. Retried by the default policy."""


class DeadlineExceededError(ServiceError):
    """DEADLINE_EXCEEDED: the call's deadline passed before an answer came."""


class UnimplementedError(ServiceError):
    """UNIMPLEMENTED: the server does not offer this call."""


class InternalError(ServiceError):
    """INTERNAL: a fault inside the server."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_class(code: grpc.StatusCode) -> type[ServiceError]:
    """The exception class raised for a gRPC status code."""
    return _ERROR_BY_CODE.get(code, ServiceError)


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> ServiceError:
    """Turns a failed gRPC call (sync or asyncio) into its typed error."""
    code = _call_value(error, "code") or grpc.StatusCode.UNKNOWN
    details = _call_value(error, "details") or ""
    trailing = _call_value(error, "trailing_metadata") or ()
    return error_class(code)(code, details, trailing_metadata=trailing, attempts=attempts)


def parse_retry_after(metadata: Iterable[tuple[str, Any]]) -> float | None:
    """The ``retry-after`` hint (seconds) in trailing metadata, if valid."""
    for key, value in metadata:
        if key.lower() != RETRY_AFTER_KEY:
            continue
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _call_value(error: grpc.RpcError, name: str) -> Any:
    # A bare grpc.RpcError (rare, but allowed by grpc) has none of the
    # grpc.Call accessors.
    accessor = getattr(error, name, None)
    return accessor() if callable(accessor) else None
