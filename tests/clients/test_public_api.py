"""The package's public surface: a change to it is a deliberate one."""

from __future__ import annotations

import clients
from clients import _exceptions

PUBLIC_NAMES = [
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


def test_all_is_pinned() -> None:
    assert clients.__all__ == PUBLIC_NAMES


def test_every_public_name_is_defined() -> None:
    for name in clients.__all__:
        assert getattr(clients, name) is not None


def test_public_names_are_documented() -> None:
    for name in clients.__all__:
        value = getattr(clients, name)
        if callable(value):
            assert value.__doc__, name


def test_errors_form_one_tree() -> None:
    errors = [getattr(clients, name) for name in clients.__all__ if name.endswith("Error")]
    for error in errors:
        assert issubclass(error, clients.AnalyticsError)
    service_errors = [
        e for e in errors if e not in (clients.AnalyticsError, clients.ClientClosedError)
    ]
    for error in service_errors:
        assert issubclass(error, clients.ServiceError)
    # The tree in the docstring names every error.
    for error in errors:
        assert error.__name__ in (_exceptions.__doc__ or "")
