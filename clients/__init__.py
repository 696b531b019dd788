"""Python client of the campaign analytics service.

``AnalyticsClient`` (blocking) and ``AsyncAnalyticsClient`` (asyncio) call
the service over gRPC with deadlines, retries and automatic event ids;
``make_event`` builds events; the protocol's messages are in ``clients.pb``.
"""

from clients._client import DEFAULT_TARGET, DEFAULT_TIMEOUT, AnalyticsClient, AsyncAnalyticsClient
from clients._events import make_event, new_event_id
from clients._exceptions import (
    AlreadyExistsError,
    AnalyticsError,
    ClientClosedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServiceError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from clients._retry import DEFAULT_RETRYABLE_CODES, RetryPolicy

__all__ = [
    "DEFAULT_RETRYABLE_CODES",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "AlreadyExistsError",
    "AnalyticsClient",
    "AnalyticsError",
    "AsyncAnalyticsClient",
    "ClientClosedError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServiceError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "make_event",
    "new_event_id",
]
