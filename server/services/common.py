"""What every servicer shares: the caller's identity, its key's rate limits,
streams that end when their key is revoked, and error reporting."""

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import error_details_pb2, status_pb2

from server import errors
from server.auth import KeyStore
from server.domain import Principal, Role
from server.observability.request_ids import note_request_id
from server.open_streams import KEY_REVOKED
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


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any] | AsyncIterator[Any]])


def reports_errors(handler: Handler) -> Handler:
    """Ends a call that raised with the status its error calls for (see
    ``abort``), and a stream whose key was revoked with UNAUTHENTICATED; the
    call's request id is noted for the logs first (``note_request_id``).
    Works on coroutine handlers and on async generators (server streams)."""
    if inspect.isasyncgenfunction(handler):
        return _reports_stream_errors(handler)  # type: ignore[return-value]

    call = cast(Callable[..., Awaitable[Any]], handler)

    @functools.wraps(handler)
    async def wrapper(self: Authenticated, request: Any, context: grpc.aio.ServicerContext) -> Any:
        note_request_id(context)
        try:
            return await call(self, request, context)
        except grpc.aio.AbortError:
            raise
        except (asyncio.CancelledError, Exception) as exc:
            error = exc
        # The call ends out here, holding neither the request nor (for the
        # errors a caller is meant to meet) the frames that raised: gRPC keeps
        # an aborted call's exception in a reference cycle until the next
        # collection, and under overload thousands of refused calls, each
        # holding a request of up to thousands of events, would wait in it.
        del request
        if isinstance(error, errors.ServiceError):
            error.__traceback__ = None
        await _report(self, context, error, handler.__name__)

    return wrapper  # type: ignore[return-value]


def _reports_stream_errors(
    handler: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(handler)
    async def wrapper(
        self: Authenticated, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        note_request_id(context)
        try:
            async for response in handler(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except (asyncio.CancelledError, Exception) as exc:
            await _report(self, context, exc, handler.__name__)

    return wrapper


async def _report(
    servicer: "Authenticated",
    context: grpc.aio.ServicerContext,
    exc: BaseException,
    call: str,
) -> None:
    """Ends the call with the status ``exc`` calls for. A cancellation is
    raised again, unless it came from revoking the caller's key: then the
    call ends UNAUTHENTICATED."""
    if isinstance(exc, asyncio.CancelledError):
        if not servicer._keys.streams.ended_by_revocation():
            raise exc
        exc = errors.Unauthenticated(KEY_REVOKED)
    assert isinstance(exc, Exception)
    await abort(context, exc, call)


async def abort(context: grpc.aio.ServicerContext, exc: Exception, call: str) -> None:
    """Turns ``ServiceError`` into the matching gRPC status (with a
    ``retry-after`` trailer where a retry is expected), an unreachable
    database into UNAVAILABLE, and hides anything else behind INTERNAL."""
    if isinstance(exc, errors.ServiceError):
        code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
        trailers: tuple[tuple[str, str | bytes], ...] = ()
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            trailers = (("retry-after", str(max(1, round(retry_after)))),)
        field = getattr(exc, "field", "")
        if field:
            trailers += (("grpc-status-details-bin", _bad_request(code, exc.message, field)),)
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


def _bad_request(code: grpc.StatusCode, message: str, field: str) -> bytes:
    """A rich status (``google.rpc.Status``) naming ``field`` as the one at
    fault, as grpc-gateway and the REST gateway read it."""
    details = AnyMessage()
    details.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            ]
        )
    )
    status = status_pb2.Status(code=code.value[0], message=message, details=[details])
    return status.SerializeToString()


class Authenticated:
    """Base of the servicers: who is calling, and may they."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def caller(
        self,
        context: grpc.aio.ServicerContext,
        role: Role,
        *other_roles: Role,
        events: int = 0,
        stream: bool = False,
    ) -> Principal:
        """The caller, whose key must have ``role`` (or one of ``other_roles``)
        and be within its rate limits: one call, and ``events`` events. A
        ``stream`` is tracked under its key until it ends, so that revoking
        the key ends it."""
        sent = authorization(context)
        # (Most calls come with a key checked moments ago: no coroutine for them.)
        principal = self._keys.cached(sent) or await self._keys.authenticate(sent)
        if not principal.may(role) and not any(map(principal.may, other_roles)):
            needed = " or ".join(str(r) for r in (role, *other_roles))
            raise errors.PermissionDenied(
                f"the key's role ({principal.role}) does not allow this; it needs {needed}"
            )
        limits = self._keys.limits
        limits.calls.check(principal.key_id)
        if events:
            limits.events.check(principal.key_id, events)
        if stream:
            self._keys.streams.track(principal.key_id)
        return principal

    async def stream_events(self, principal: Principal, events: int) -> None:
        """Waits until a stream's next ``events`` are within the key's rate
        limit: a stream is slowed down, not refused."""
        await self._keys.limits.events.wait(principal.key_id, events)


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


def campaign_not_found(campaign_id: str) -> errors.NotFound:
    """The seed's answer for a route naming a campaign that does not exist."""
    return errors.NotFound("Campaign not found")
