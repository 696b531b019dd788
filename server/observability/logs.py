"""Log records as text for people or as JSON lines for machines, each
carrying the request id of the call it is about.

``request_id`` holds the id of the call being served: the gateway takes it
from the ``x-request-id`` header (or makes one) and forwards it as gRPC
metadata; the server sets it for each call (``server.observability.request_ids``).
Both formats add it to every record logged while it is set.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message``, ``request_id`` when there is one, the record's ``extra`` fields,
and ``exception`` with the traceback when one was logged.
"""

import logging
import sys
from collections.abc import Callable
from contextvars import Context, ContextVar, copy_context
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure",
    "current_request_id",
    "detached_context",
    "formatter",
    "request_id",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# The id itself, or a function that reads it when a record needs it (the
# server's calls: most log nothing, so most never read it).
request_id: ContextVar[str | Callable[[], str]] = ContextVar("request_id", default="")

# What every record has; any other attribute came in ``extra`` and is context.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's coloured copy of the message
}


def _request_id(record: logging.LogRecord) -> str:
    given = getattr(record, "request_id", None)
    return given if isinstance(given, str) and given else current_request_id()


def current_request_id() -> str:
    """The id of the call being served ("" when none)."""
    current = request_id.get()
    return current if isinstance(current, str) else current()


def detached_context() -> Context:
    """A copy of the current context for a task that outlives the call that
    starts it: the request id is read now, so that the task holds the id, not
    the call (whose metadata holds its key)."""
    context = copy_context()
    context.run(request_id.set, current_request_id())
    return context


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, then ``request_id=<id>`` when set."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = _request_id(record)
        if not rid:
            return text
        # After the message's first line, so that a traceback stays below it.
        first, newline, rest = text.partition("\n")
        return f"{first} request_id={rid}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = _request_id(record)
        if rid:
            entry["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")


def configure(level: int | str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Sends every log record to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
