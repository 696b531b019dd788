"""JSON <-> protocol messages, in the seed's JSON.

The one place where the gateway turns JSON into messages and back; pure
functions, no I/O.

Out (``message_to_dict``): proto3 JSON names (camelCase), with the seed's
differences: 64-bit counters are numbers, enums are the seed's lowercase words
(``EVENT_TYPE_CLICK`` -> ``"click"``), timestamps are ISO 8601 UTC with
milliseconds and ``Z`` (what a browser's ``Date.toISOString`` writes), every
scalar field is present even when zero, and an unset singular message field is
``null``. Each message type is compiled once into a list of field writers.

In (``decode_event``): an event as the seed's clients send it, leniently: the
event type as a word or an enum name, camelCase or snake_case keys, the time as
ISO 8601 text or epoch milliseconds, numbers as numbers or numeric strings,
unknown metadata keys kept in ``metadata.extra``. An event that cannot be
decoded becomes an ``UndecodableEvent`` (index, field, reason, payload) for the
server to report as rejected and keep, so one bad event never fails a batch.
"""

import base64
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from clients.pb import Campaign, Event, EventMetadata, EventType, UndecodableEvent

__all__ = [
    "BodyError",
    "CodecError",
    "campaign_from_json",
    "decode_event",
    "decode_events",
    "enum_word",
    "message_to_dict",
    "now_text",
    "parse_body",
    "status_details",
    "timestamp_text",
]


class BodyError(ValueError):
    """The request body is not JSON text."""


class CodecError(ValueError):
    """A value cannot become a message field; ``field`` is its JSON path
    (camelCase). ``code`` is the rejection code the server gives for the same
    mistake in a message, where there is one (``UndecodableEvent.code``)."""

    def __init__(self, field: str, reason: str, code: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
        self.code = code


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
# The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def timestamp_text(seconds: int, nanos: int = 0) -> str:
    """``2025-07-15T12:30:00.000Z`` for a Timestamp's seconds and nanos."""
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment.isoformat(timespec='seconds')}.{nanos // 1_000_000:03d}Z"


def now_text() -> str:
    """The current time as the JSON writes timestamps."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return timestamp_text(seconds, nanos)


# ---------------------------------------------------------------------------
# Messages -> JSON
# ---------------------------------------------------------------------------

_Writer = Callable[[Any], Any]

_WRITERS: dict[str, _Writer] = {}


def message_to_dict(message: Message) -> dict[str, Any]:
    """The message in the seed's JSON shape (a dict ready for orjson)."""
    result: dict[str, Any] = _writer(_descriptor(message))(message)
    return result


def enum_word(enum: EnumDescriptor, number: int) -> str | int:
    """The seed's word for an enum value (``EVENT_TYPE_CLICK`` -> ``click``).

    Numbers the descriptor does not know (sent by a newer peer) stay numbers.
    """
    value = enum.values_by_number.get(number)
    if value is None:
        return number
    prefix = _enum_prefix(enum)
    name = value.name[len(prefix) :] if value.name.startswith(prefix) else value.name
    return name.lower()


def _enum_prefix(enum: EnumDescriptor) -> str:
    # Protocol style prefixes each value with the enum's name: EventType -> EVENT_TYPE_.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def _writer(descriptor: Descriptor) -> _Writer:
    writer = _WRITERS.get(descriptor.full_name)
    if writer is None:
        writer = _WELL_KNOWN.get(descriptor.full_name) or _compile(descriptor)
        _WRITERS[descriptor.full_name] = writer
    return writer


def _descriptor(message: Message) -> Descriptor:
    # The C implementation's descriptor type is not the one the stubs name.
    return cast(Descriptor, message.DESCRIPTOR)


def _write_message(message: Message) -> Any:
    return _writer(_descriptor(message))(message)


def _compile(descriptor: Descriptor) -> _Writer:
    # (attribute, JSON name, value writer or None for as-is, has presence)
    plan: list[tuple[str, str, _Writer | None, bool]] = []
    for field in descriptor.fields:
        write = _value_writer(field)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_writer = _value_writer(entry.fields_by_name["value"])
            plan.append((field.name, field.json_name, _map_writer(value_writer), False))
        elif field.is_repeated:
            plan.append((field.name, field.json_name, _list_writer(write), False))
        else:
            plan.append((field.name, field.json_name, write, field.has_presence))

    def write_message(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, json_name, write, presence in plan:
            if presence and not message.HasField(name):
                out[json_name] = None
            elif write is None:
                out[json_name] = getattr(message, name)
            else:
                out[json_name] = write(getattr(message, name))
        return out

    return write_message


def _value_writer(field: FieldDescriptor) -> _Writer | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _write_message
    if field.enum_type is not None:
        enum = field.enum_type
        words = {value.number: enum_word(enum, value.number) for value in enum.values}
        return lambda number: words.get(number, number)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda data: base64.b64encode(data).decode("ascii")
    return None


def _list_writer(write: _Writer | None) -> _Writer:
    if write is None:
        return list
    return lambda values: [write(value) for value in values]


def _map_writer(write: _Writer | None) -> _Writer:
    if write is None:
        return lambda entries: {str(key): value for key, value in entries.items()}
    return lambda entries: {str(key): write(value) for key, value in entries.items()}


def _write_timestamp(message: Any) -> str:
    return timestamp_text(message.seconds, message.nanos)


def _write_struct(message: Any) -> dict[str, Any]:
    return {key: _write_value(value) for key, value in message.fields.items()}


def _write_list_value(message: Any) -> list[Any]:
    return [_write_value(value) for value in message.values]


def _write_value(message: Any) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "number_value":
        number = message.number_value
        # JSON has no NaN or Infinity; integral numbers read back as integers.
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    if kind == "struct_value":
        return _write_struct(message.struct_value)
    if kind == "list_value":
        return _write_list_value(message.list_value)
    return None


_WELL_KNOWN: dict[str, _Writer] = {
    "google.protobuf.Timestamp": _write_timestamp,
    "google.protobuf.Struct": _write_struct,
    "google.protobuf.ListValue": _write_list_value,
    "google.protobuf.Value": _write_value,
}


# ---------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------


def parse_body(body: bytes) -> Any:
    """The JSON value of a request body.

    NaN and Infinity are let through here (and refused per event later), so
    that one such event does not fail a whole batch.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # orjson is strict; the standard parser below tells NaN from garbage.
    if not body.strip():
        raise BodyError("Request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # Bytes that are not UTF-8 inside strings spoil only the events that
        # hold them: read as lone surrogates, which decoding an event refuses
        # (so in a batch each such event is rejected and kept on its own).
        try:
            return json.loads(body.decode("utf-8", "surrogateescape"))
        except (json.JSONDecodeError, RecursionError):
            raise BodyError(f"Request body is not valid UTF-8 (at byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BodyError(
            f"Request body is not valid JSON: {error.msg} "
            f"(line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise BodyError("Request body is not valid JSON: nested too deeply") from None


# ---------------------------------------------------------------------------
# JSON -> events
# ---------------------------------------------------------------------------

_EVENT_TYPES: dict[str, int] = {
    str(enum_word(EventType.DESCRIPTOR, value.number)): value.number
    for value in EventType.DESCRIPTOR.values
    if value.number != 0
}
_EVENT_TYPE_PREFIX = _enum_prefix(EventType.DESCRIPTOR).lower()
_EVENT_TYPE_WORDS = ", ".join(_EVENT_TYPES)
# The server's code for an event type it does not know (UndecodableEvent.code).
INVALID_EVENT_TYPE = "invalid_event_type"

_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# Integers beyond this lose precision as JSON numbers (doubles).
_SAFE_INTEGER = 2**53


def decode_events(items: list[Any]) -> tuple[list[Event], list[UndecodableEvent]]:
    """The events of a batch, and those that could not be decoded (at their index)."""
    events: list[Event] = []
    undecodable: list[UndecodableEvent] = []
    for index, item in enumerate(items):
        decoded = decode_event(item, index)
        if isinstance(decoded, UndecodableEvent):
            undecodable.append(decoded)
        else:
            events.append(decoded)
    return events, undecodable


def decode_event(value: Any, index: int = 0) -> Event | UndecodableEvent:
    """An event from its JSON value, or why it cannot be one."""
    code = ""
    try:
        return _event(value)
    except CodecError as error:
        field, reason, code = error.field, error.reason, error.code
    except RecursionError:
        field, reason = "", "nested too deeply"
    return UndecodableEvent(
        index=index, field=field, reason=reason, payload=_payload(value), code=code
    )


def _event(value: Any) -> Event:
    if not isinstance(value, dict):
        raise CodecError("", f"an event must be a JSON object, not {_kind(value)}")
    event = Event()
    for key, item in value.items():
        setter = _EVENT_KEYS.get(key)
        if setter is not None and item is not None:
            setter(event, item)
    return event


def _set_event_id(event: Event, value: Any) -> None:
    event.event_id = _string(value, "eventId")


def _set_event_type(event: Event, value: Any) -> None:
    event.event_type = _event_type(value)  # type: ignore[assignment]


def _set_campaign_id(event: Event, value: Any) -> None:
    event.campaign_id = _string(value, "campaignId")


def _set_organization_id(event: Event, value: Any) -> None:
    event.organization_id = _string(value, "organizationId")


def _set_timestamp(event: Event, value: Any) -> None:
    seconds, nanos = _instant(value, "timestamp")
    event.timestamp.seconds = seconds
    event.timestamp.nanos = nanos


def _set_value(event: Event, value: Any) -> None:
    event.value = _number(value, "value")


def _set_metadata(event: Event, value: Any) -> None:
    _metadata(event.metadata, value)


_EventSetter = Callable[[Event, Any], None]
_EVENT_KEYS: dict[str, _EventSetter] = {
    "eventId": _set_event_id,
    "event_id": _set_event_id,
    "eventType": _set_event_type,
    "event_type": _set_event_type,
    "campaignId": _set_campaign_id,
    "campaign_id": _set_campaign_id,
    "organizationId": _set_organization_id,
    "organization_id": _set_organization_id,
    "timestamp": _set_timestamp,
    "value": _set_value,
    "metadata": _set_metadata,
}


def _metadata(metadata: EventMetadata, value: Any) -> None:
    if not isinstance(value, dict):
        raise CodecError("metadata", f"must be a JSON object, not {_kind(value)}")
    extra: dict[str, Any] = {}
    for key, item in value.items():
        known = _METADATA_FIELDS.get(key)
        if known is not None:
            if item is not None:
                attribute, read, field = known
                setattr(metadata, attribute, read(item, field))
        elif key == "extra" and isinstance(item, dict):
            # The proto3 JSON spelling of the free keys.
            for extra_key, extra_item in item.items():
                extra[extra_key] = _free_value(extra_item, f"metadata.{extra_key}")
        else:
            extra[_string(key, "metadata")] = _free_value(item, f"metadata.{key}")
    if extra:
        try:
            metadata.extra.update(extra)
        except (ValueError, TypeError) as error:
            raise CodecError("metadata", f"cannot be kept: {error}") from None


def _free_value(value: Any, field: str) -> Any:
    """A metadata value of the caller's own, checked to fit a Struct."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _string(value, field)
    if isinstance(value, int):
        if abs(value) > _SAFE_INTEGER:
            raise CodecError(field, "is an integer too large to keep exactly (over 2^53)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(field, "must be a finite number (not NaN or Infinity)")
        return value
    if isinstance(value, list):
        return [_free_value(item, field) for item in value]
    if isinstance(value, dict):
        return {
            _string(key, field): _free_value(item, f"{field}.{key}") for key, item in value.items()
        }
    raise CodecError(field, f"cannot be kept: {_kind(value)}")  # pragma: no cover


def _event_type(value: Any) -> int:
    if isinstance(value, str):
        word = value.strip().lower()
        word = word.removeprefix(_EVENT_TYPE_PREFIX)
        number = _EVENT_TYPES.get(word)
        if number is None:
            _fail(
                "eventType",
                f"unknown event type {value!r}; use one of {_EVENT_TYPE_WORDS}",
                INVALID_EVENT_TYPE,
            )
        return number
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _EVENT_TYPES.values():
            _fail(
                "eventType",
                f"unknown event type {value}; use one of {_EVENT_TYPE_WORDS}",
                INVALID_EVENT_TYPE,
            )
        return value
    _fail("eventType", f'must be a string such as "click", not {_kind(value)}')


def _instant(value: Any, field: str) -> tuple[int, int]:
    """Seconds and nanos since the epoch, from ISO 8601 text or epoch milliseconds."""
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            _fail(
                field,
                f"{value!r} is not an ISO 8601 time (such as 2025-07-15T12:30:00.000Z) "
                "nor epoch milliseconds",
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        since = moment - _EPOCH_UTC
        seconds = since.days * 86_400 + since.seconds
        nanos = since.microseconds * 1000
    elif isinstance(value, int) and not isinstance(value, bool):
        whole, millis = divmod(value, 1000)
        seconds, nanos = whole, millis * 1_000_000
    elif isinstance(value, float):
        if not math.isfinite(value):
            _fail(field, "must be a finite number of epoch milliseconds")
        whole_ms = math.floor(value)
        seconds, millis = divmod(whole_ms, 1000)
        nanos = millis * 1_000_000 + round((value - whole_ms) * 1_000_000)
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, nanos - 1_000_000_000
    else:
        _fail(field, f"must be ISO 8601 text or epoch milliseconds, not {_kind(value)}")
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        _fail(field, "is out of range (years 1 to 9999)")
    return seconds, nanos


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        _fail(field, f"must be a string, not {_kind(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            _fail(
                field,
                "is not valid UTF-8 text (it holds bytes that are not UTF-8, or a lone surrogate)",
            )
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        _fail(field, "must be a number, not a boolean")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            _fail(field, "is out of range")
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        if not _NUMBER_TEXT.fullmatch(value):
            _fail(field, f"must be a number, not the text {value!r}")
        number = float(value)
    else:
        _fail(field, f"must be a number, not {_kind(value)}")
    if not math.isfinite(number):
        _fail(field, "must be a finite number (not NaN or Infinity)")
    return number


def _int32(value: Any, field: str) -> int:
    number = _number(value, field)
    if not number.is_integer():
        _fail(field, f"must be a whole number, not {number}")
    if not _INT32_MIN <= number <= _INT32_MAX:
        _fail(field, "is out of range for a 32-bit integer")
    return int(number)


def _payload(value: Any) -> str:
    """The event as JSON text, for the dead-letter table (NaN kept as written)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: escape it so the text stays valid UTF-8.
        text = json.dumps(value, ensure_ascii=True, allow_nan=True, separators=(",", ":"))
    except RecursionError:
        text = ""
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover


def _fail(field: str, reason: str, code: str = "") -> NoReturn:
    raise CodecError(field, reason, code)


_READERS: dict[int, Callable[[Any, str], Any]] = {
    FieldDescriptor.TYPE_STRING: _string,
    FieldDescriptor.TYPE_DOUBLE: _number,
    FieldDescriptor.TYPE_INT32: _int32,
}
# Metadata keys with a field of their own: JSON key -> (attribute, reader, JSON path).
_METADATA_FIELDS: dict[str, tuple[str, Callable[[Any, str], Any], str]] = {}
for _field in EventMetadata.DESCRIPTOR.fields:
    if _field.name != "extra":
        _entry = (_field.name, _READERS[_field.type], f"metadata.{_field.json_name}")
        _METADATA_FIELDS[_field.json_name] = _METADATA_FIELDS[_field.name] = _entry
del _field, _entry


# ---------------------------------------------------------------------------
# JSON -> campaigns
# ---------------------------------------------------------------------------

_CAMPAIGN_KEYS: dict[str, tuple[str, str]] = {
    "campaignId": ("campaign_id", "campaignId"),
    "campaign_id": ("campaign_id", "campaignId"),
    "organizationId": ("organization_id", "organizationId"),
    "organization_id": ("organization_id", "organizationId"),
    "name": ("name", "name"),
}


def campaign_from_json(value: Any) -> Campaign:
    """A campaign to create, from its JSON; raises ``CodecError`` when it cannot be one."""
    if not isinstance(value, Mapping):
        raise CodecError("", f"a campaign must be a JSON object, not {_kind(value)}")
    campaign = Campaign()
    for key, item in value.items():
        known = _CAMPAIGN_KEYS.get(key)
        if known is not None and item is not None:
            attribute, field = known
            setattr(campaign, attribute, _string(item, field))
    return campaign


# ---------------------------------------------------------------------------
# Error details
# ---------------------------------------------------------------------------

# Registers google.rpc's detail messages (BadRequest, RetryInfo, ...) for decoding.
_DETAIL_MESSAGES = error_details_pb2


def status_details(data: bytes) -> list[dict[str, Any]]:
    """The details of a rich gRPC status (``grpc-status-details-bin``) as proto3 JSON."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(data)
    except DecodeError:
        return []
    details: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            details.append(json_format.MessageToDict(detail))
        except (TypeError, KeyError):
            # A detail type this gateway does not know: name it at least.
            details.append({"@type": detail.type_url})
    return details
