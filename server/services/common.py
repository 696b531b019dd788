"""What every servicer shares: the caller's identity and error reporting."""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from server import errors
from server.auth import KeyStore
from server.domain import Principal, Role
from server.store.database import DATABASE_UNREACHABLE

log = logging.getLogger(__name__)

_CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def reports_errors(handler: Handler) -> Handler:
    """Ends a call that raised with the status its error calls for (see ``abort``)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, handler.__name__)

    return wrapper  # type: ignore[return-value]


async def abort(context: grpc.aio.ServicerContext, exc: Exception, call: str) -> None:
    """Turns ``ServiceError`` into the matching gRPC status (with a
    ``retry-after`` trailer where a retry is expected), an unreachable
    database into UNAVAILABLE, and hides anything else behind INTERNAL."""
    if isinstance(exc, errors.ServiceError):
        code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
        trailers: tuple[tuple[str, str], ...] = ()
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            trailers = (("retry-after", str(max(1, round(retry_after)))),)
        await context.abort(code, exc.message, trailing_metadata=trailers)
    if isinstance(exc, DATABASE_UNREACHABLE):
        log.warning("%s: PostgreSQL unreachable: %s", call, exc)
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "the database is unreachable; retry shortly",
            trailing_metadata=(("retry-after", "1"),),
        )
    log.error("%s failed", call, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the cause")


class Authenticated:
    """Base of the servicers: who is calling, and may they."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def caller(
        self, context: grpc.aio.ServicerContext, role: Role, *other_roles: Role
    ) -> Principal:
        """The caller, whose key must have ``role`` (or one of ``other_roles``)."""
        principal = await self._keys.authenticate(authorization(context))
        roles = (role, *other_roles)
        if not any(principal.may(r) for r in roles):
            needed = " or ".join(str(r) for r in roles)
            raise errors.PermissionDenied(
                f"the key's role ({principal.role}) does not allow this; it needs {needed}"
            )
        return principal


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``authorization`` metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def same_organization(principal: Principal, organization_id: str) -> str:
    """The organization a request names (the caller's when empty); refuses others."""
    if organization_id and organization_id != principal.organization_id:
        raise errors.PermissionDenied(f"the key may not act on organization {organization_id!r}")
    return principal.organization_id


def commit_budget(context: grpc.aio.ServicerContext) -> float | None:
    """The time a call may wait for its commit: its deadline, less a margin so
    that it can still answer (UNAVAILABLE, retry) before the caller gives up."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(0.0, remaining - min(0.25, remaining / 10))
