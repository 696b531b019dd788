"""Errors the service reports to callers, independent of the transport.

ServiceError
 ├── InvalidArgument     the request is malformed or breaks a limit (400)
 ├── Unauthenticated     no key, or an unknown or revoked key (401)
 ├── PermissionDenied    the key may not act on that organization or lacks the role (403)
 ├── NotFound            the campaign (or subscription) does not exist (404)
 ├── AlreadyExists       the id is taken (409)
 ├── ResourceExhausted   the buffer is full, or a key's rate limit is reached: retry
 │                       after ``retry_after`` seconds (429)
 └── Unavailable         PostgreSQL cannot be reached in time: retry (503)
"""


class ServiceError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """``field`` names the request field at fault, when one is: callers get
    it as a ``google.rpc.BadRequest`` field violation (REST: ``details``)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class NotFound(ServiceError):
    pass


class AlreadyExists(ServiceError):
    pass


class ResourceExhausted(ServiceError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
