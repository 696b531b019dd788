"""Building events, and giving each one its idempotency key.

Every event the client sends carries an ``event_id``: a time-ordered UUIDv7
in canonical text form, assigned before the first attempt so that the service
recognises a retry as a duplicate. UUIDv7 ids also index far faster than
random ones, since new ids land at the end of the index.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

import uuid_utils

from clients import pb

__all__ = ["assign_event_ids", "make_event", "new_event_id"]

# The seed's words for event types ("click"), mapped to the protocol's values.
EVENT_TYPES: dict[str, pb.EventType.ValueType] = {
    name.removeprefix("EVENT_TYPE_").lower(): number
    for name, number in pb.EventType.items()
    if number != pb.EventType.EVENT_TYPE_UNSPECIFIED
}

# Metadata keys by their Python (session_id) and JSON (sessionId) spellings;
# any other key goes to metadata.extra.
_METADATA_FIELDS: dict[str, str] = {}
for _field in pb.EventMetadata.DESCRIPTOR.fields:
    if _field.name != "extra":
        _METADATA_FIELDS[_field.name] = _field.name
        _METADATA_FIELDS[_field.json_name] = _field.name


def new_event_id() -> str:
    """A new time-ordered event id (UUIDv7, canonical text)."""
    return str(uuid_utils.uuid7())


def assign_event_ids(events: Iterable[pb.Event]) -> list[pb.Event]:
    """Gives each event without an ``event_id`` a new one, in place.

    Returns the events as a list, so that a one-shot iterable can be sent
    again on retry.
    """
    batch = list(events)
    for event in batch:
        if not isinstance(event, pb.Event):
            raise TypeError(f"expected an Event, not {type(event).__name__}")
        if not event.event_id:
            event.event_id = new_event_id()
    return batch


def make_event(
    event_type: str | int,
    campaign_id: str,
    organization_id: str,
    value: float | None = None,
    timestamp: datetime.datetime | float | None = None,
    event_id: str | None = None,
    **metadata: Any,
) -> pb.Event:
    """Builds an event.

    ``event_type`` is one of the seed's words (impression, click, conversion,
    view, engagement, completion, skip) or an ``EventType`` value. ``value``
    is money: the cost of the event, or for a conversion its revenue.
    ``timestamp`` (a timezone-aware datetime, or seconds since the epoch) is
    when the event happened, now when omitted. ``event_id`` defaults to a new
    UUIDv7. Metadata is given by keyword, in either spelling (``session_id``
    or ``sessionId``): session_id, user_agent, device_type, location,
    duration (seconds), position, ad_slot_id, episode_id, show_id,
    ip_address, referrer; any other keyword, and the items of an ``extra``
    mapping, go to ``metadata.extra``. Keywords set to None are left out.

    >>> event = make_event("click", "camp_1", "org_1", value=1.5,
    ...                    session_id="session_abc", device_type="mobile")
    """
    event = pb.Event(
        event_id=event_id or new_event_id(),
        event_type=_event_type(event_type),
        campaign_id=campaign_id,
        organization_id=organization_id,
    )
    if value is not None:
        event.value = value
    _set_timestamp(event, timestamp)
    _set_metadata(event.metadata, metadata)
    return event


def _event_type(event_type: str | int) -> pb.EventType.ValueType:
    if isinstance(event_type, str):
        word = event_type.strip().lower().removeprefix("event_type_")
        if word in EVENT_TYPES:
            return EVENT_TYPES[word]
    elif event_type in EVENT_TYPES.values():
        return pb.EventType.ValueType(event_type)
    raise ValueError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")


def _set_timestamp(event: pb.Event, timestamp: datetime.datetime | float | None) -> None:
    if timestamp is None:
        event.timestamp.GetCurrentTime()
    elif isinstance(timestamp, datetime.datetime):
        if timestamp.tzinfo is None or timestamp.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware (for example datetime.UTC)")
        event.timestamp.FromDatetime(timestamp)
    elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, not {timestamp}")
        # Whole seconds apart from the fraction, so that a float's rounding
        # does not reach the nanoseconds.
        seconds = math.floor(timestamp)
        nanos = round((timestamp - seconds) * 1_000_000_000)
        event.timestamp.FromNanoseconds(seconds * 1_000_000_000 + nanos)
    else:
        kind = type(timestamp).__name__
        raise TypeError(f"timestamp must be a datetime or seconds since the epoch, not {kind}")


def _set_metadata(target: pb.EventMetadata, metadata: Mapping[str, Any]) -> None:
    extra: dict[str, Any] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if key == "extra":
            if not isinstance(value, Mapping):
                raise TypeError(f"extra must be a mapping, not {type(value).__name__}")
            extra.update(value)
        elif key in _METADATA_FIELDS:
            setattr(target, _METADATA_FIELDS[key], value)
        else:
            extra[key] = value
    if extra:
        target.extra.update(extra)
