"""Errors as HTTP responses, in the grpc-gateway style.

Every error body is ``{"error", "code", "message", "details", "timestamp"}``:
``error`` and ``message`` say what was wrong, ``code`` is the gRPC status
number, ``details`` the status details (``google.rpc.BadRequest`` field
violations and the like). Where errors come from:

- the analytics server: its gRPC status becomes the HTTP status grpc-gateway
  gives it (``HTTP_STATUS``); 429 and 503 carry ``Retry-After``, from the
  server's ``retry-after`` trailing metadata or 1 second;
- the gateway itself (``GatewayError``): a body that is not JSON, is too
  large, lacks ``event``/``events``, or a missing required parameter;
- request validation (a query value of the wrong type): 400;
- routing: 404 for an unknown path, 405 for a wrong method;
- anything else: 500.
"""

import logging
import math
from collections.abc import Iterable
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from grpc import StatusCode
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from gateway.codec import BodyError, CodecError, status_details
from gateway.responses import respond

__all__ = [
    "HTTP_STATUS",
    "GatewayError",
    "bad_request",
    "error_response",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

# As grpc-gateway maps them (runtime.HTTPStatusFromCode).
HTTP_STATUS: dict[StatusCode, int] = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
}

# The gRPC code an HTTP status of the gateway's own routing stands for.
_CODE_OF_HTTP: dict[int, StatusCode] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    405: StatusCode.UNIMPLEMENTED,
    409: StatusCode.ABORTED,
    413: StatusCode.RESOURCE_EXHAUSTED,
    429: StatusCode.RESOURCE_EXHAUSTED,
    499: StatusCode.CANCELLED,
    500: StatusCode.INTERNAL,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}

# Statuses after which the caller should come back later.
_RETRYABLE = frozenset({429, 503})

_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class GatewayError(Exception):
    """A request the gateway answers itself with an error."""

    def __init__(
        self,
        code: StatusCode,
        message: str,
        *,
        details: Iterable[dict[str, Any]] = (),
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.http_status = http_status or HTTP_STATUS.get(code, 500)
        self.headers = headers


def bad_request(message: str, field: str = "") -> GatewayError:
    """400: the request itself is wrong (``field`` names the culprit, when one does)."""
    details = [_field_violations([(field, message)])] if field else []
    return GatewayError(StatusCode.INVALID_ARGUMENT, message, details=details)


def error_response(
    http_status: int,
    code: StatusCode,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "error": message,
        "code": code.value[0],
        "message": message,
        "details": details or [],
    }
    return respond(body, status_code=http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
    app.add_exception_handler(BodyError, _decode_error)
    app.add_exception_handler(CodecError, _decode_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def _field_violations(violations: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {
        "@type": _BAD_REQUEST_TYPE,
        "fieldViolations": [
            {"field": field, "description": description} for field, description in violations
        ],
    }


async def _gateway_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatewayError)
    return error_response(
        error.http_status, error.code, error.message, error.details, error.headers
    )


async def _rpc_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, grpc.aio.AioRpcError)
    code = error.code()
    http_status = HTTP_STATUS.get(code, 500)
    message = error.details() or code.name.replace("_", " ").lower()
    details: list[dict[str, Any]] = []
    retry_after: str | None = None
    for key, value in error.trailing_metadata() or ():
        if key == "retry-after":
            retry_after = value if isinstance(value, str) else value.decode("ascii", "replace")
        elif key == "grpc-status-details-bin" and isinstance(value, bytes):
            details = status_details(value)
    headers: dict[str, str] = {}
    if http_status in _RETRYABLE:
        headers["Retry-After"] = _retry_after_seconds(retry_after)
    elif http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if http_status >= 500:
        logger.warning("%s %s: %s %s", request.method, request.url.path, code.name, message)
    return error_response(http_status, code, message, details, headers)


def _retry_after_seconds(value: str | None) -> str:
    """Whole seconds for ``Retry-After`` (HTTP has no fractions), 1 when unknown."""
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 1.0
    return str(math.ceil(seconds))


async def _decode_error(request: Request, error: Exception) -> Response:
    field = error.field if isinstance(error, CodecError) else ""
    return await _gateway_error(request, bad_request(str(error), field))


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    violations: list[tuple[str, str]] = []
    sentences: list[str] = []
    for problem in error.errors():
        location = [str(part) for part in problem.get("loc", ())]
        if location and location[0] in ("query", "path", "header", "cookie", "body"):
            location = location[1:]
        field = ".".join(location)
        if problem.get("type") == "missing":
            violations.append((field, "is required"))
            sentences.append(f"{field} is required")
        else:
            description = str(problem.get("msg", "is not valid"))
            violations.append((field, description))
            sentences.append(f"{field}: {description}")
    return error_response(
        400,
        StatusCode.INVALID_ARGUMENT,
        "; ".join(sentences) or "Invalid request",
        [_field_violations(violations)],
    )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = _CODE_OF_HTTP.get(error.status_code, StatusCode.UNKNOWN)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return error_response(error.status_code, code, str(error.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the path takes. Each route takes one method, and routing
    names only the first route of the path in its ``Allow``."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


async def _unexpected_error(request: Request, error: Exception) -> Response:
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, StatusCode.INTERNAL, "Internal error")
