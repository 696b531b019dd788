"""Checks one incoming event against the contract and turns it into a row.

An event is accepted or rejected on its own; a rejection names the field, a
stable code and a reason a person can act on. Limits are explicit.
"""

import dataclasses
import ipaddress
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import uuid_utils

from server.domain import EventType, Rejection
from server.store.events import EventRow
from server.store.staging_copy import jsonb

EVENT_TYPE_WORDS = ", ".join(t.word for t in EventType)


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int = 32 * 1024
    max_future: timedelta = timedelta(hours=24)
    max_age: timedelta = timedelta(days=30)
    max_value: float = 1e9
    max_duration: float = 86_400.0
    max_id_length: int = 128
    max_session_id_length: int = 256
    max_text_length: int = 2048
    # The time limits in microseconds, for the comparisons made per event.
    max_future_us: int = dataclasses.field(init=False)
    max_age_us: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        # A frozen dataclass sets its own derived fields this way.
        object.__setattr__(self, "max_future_us", self.max_future // _MICROSECOND)
        object.__setattr__(self, "max_age_us", self.max_age // _MICROSECOND)


@dataclass(slots=True)
class IncomingEvent:
    """An event as decoded from the wire, not yet checked."""

    index: int
    size: int
    event_id: str
    event_type: int
    campaign_id: str
    organization_id: str
    occurred_us: int | None  # when it happened, microseconds since the Unix epoch
    timestamp_error: str
    value: float | None
    session_id: str
    duration: float | None
    metadata: dict[str, Any] | None
    source: Any = None  # the wire message, for the dead-letter payload
    metadata_error: str = ""  # why metadata.extra could not be read


def _reject(event: IncomingEvent, field: str, code: str, reason: str) -> Rejection:
    return Rejection(event.index, field, code, reason, event.event_id)


def validate(
    event: IncomingEvent,
    now_us: int,
    campaign_owners: dict[str, str | None],
    limits: Limits,
) -> EventRow | Rejection:
    """Returns the event's row for the writer, or why it is rejected.

    ``campaign_owners`` maps each campaign id of the request to the
    organization that owns it (None when there is no such campaign).
    """
    if event.size > limits.max_event_bytes:
        return _reject(
            event,
            "",
            "event_too_large",
            f"event is {event.size} bytes; the limit is {limits.max_event_bytes}",
        )
    if event.event_type not in EVENT_TYPE_NUMBERS:
        return _reject(
            event,
            "eventType",
            "invalid_event_type",
            f"eventType must be one of {EVENT_TYPE_WORDS}",
        )
    for field, text in (
        ("campaignId", event.campaign_id),
        ("organizationId", event.organization_id),
    ):
        if not text:
            return _reject(event, field, "missing_field", f"{field} is required")
        if len(text) > limits.max_id_length:
            return _reject(
                event,
                field,
                "field_too_long",
                f"{field} is longer than {limits.max_id_length} characters",
            )
        if "\x00" in text:
            return _reject(event, field, "invalid_character", f"{field} holds a NUL character")
    if event.event_id:
        event_id = parse_uuid(event.event_id)
        if event_id is None:
            return _reject(
                event,
                "eventId",
                "invalid_event_id",
                "eventId must be a UUID (for example a UUIDv7), or empty to have one assigned",
            )
    else:
        assigned = uuid_utils.uuid7()
        event_id = assigned.bytes
        event.event_id = str(assigned)

    if event.timestamp_error:
        return _reject(event, "timestamp", "invalid_timestamp", event.timestamp_error)
    occurred_us = now_us if event.occurred_us is None else event.occurred_us
    if occurred_us > now_us + limits.max_future_us:
        return _reject(
            event,
            "timestamp",
            "timestamp_in_future",
            f"timestamp is more than {_hours(limits.max_future)} in the future",
        )
    if occurred_us < now_us - limits.max_age_us:
        return _reject(
            event,
            "timestamp",
            "timestamp_too_old",
            f"timestamp is more than {_hours(limits.max_age)} in the past",
        )

    value_micros = None
    if event.value is not None:
        value = event.value
        if not math.isfinite(value) or value < 0 or value > limits.max_value:
            return _reject(
                event,
                "value",
                "invalid_value",
                f"value must be a finite amount between 0 and {limits.max_value:g}",
            )
        value_micros = round(value * 1_000_000)

    duration = event.duration
    if duration is not None and (
        not math.isfinite(duration) or duration < 0 or duration > limits.max_duration
    ):
        return _reject(
            event,
            "metadata.duration",
            "invalid_duration",
            f"metadata.duration must be between 0 and {limits.max_duration:g} seconds",
        )

    if event.metadata_error:
        return _reject(event, "metadata.extra", "invalid_metadata", event.metadata_error)
    if len(event.session_id) > limits.max_session_id_length:
        return _reject(
            event,
            "metadata.sessionId",
            "field_too_long",
            f"metadata.sessionId is longer than {limits.max_session_id_length} characters",
        )
    metadata = event.metadata
    document = None
    if metadata:
        for key, text in metadata.items():
            if isinstance(text, str) and len(text) > limits.max_text_length:
                return _reject(
                    event,
                    f"metadata.{key}",
                    "field_too_long",
                    f"metadata.{key} is longer than {limits.max_text_length} characters",
                )
        # The metadata is encoded once, here, for the writer. JSON spells a
        # NUL character \u0000 wherever it hides (keys, nested values), so
        # only a document holding that text needs the walk that tells a NUL
        # from a literal backslash-u0000.
        document = orjson.dumps(metadata)
        if b"\\u0000" in document and _holds_nul(metadata):
            return _reject(event, "metadata", "invalid_character", "metadata holds a NUL character")
        address = metadata.get("ipAddress")
        if address:
            metadata["ipAddress"] = truncate_ip(address) if isinstance(address, str) else ""
            document = orjson.dumps(metadata)

    owner = campaign_owners.get(event.campaign_id)
    if owner is None:
        return _reject(
            event,
            "campaignId",
            "campaign_not_found",
            f"campaign {event.campaign_id!r} does not exist; create it first",
        )
    if owner != event.organization_id:
        return _reject(
            event,
            "campaignId",
            "campaign_organization_mismatch",
            f"campaign {event.campaign_id!r} does not belong to organization "
            f"{event.organization_id!r}",
        )

    return (
        event.organization_id,
        event_id,
        event.campaign_id,
        event.event_type,
        occurred_us,
        value_micros,
        event.session_id or None,
        duration,
        None if document is None else jsonb(document),
    )


def _holds_nul(value: Any) -> bool:
    """Whether a NUL character hides in a string, key or nested value:
    PostgreSQL's text and jsonb cannot hold one."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def parse_uuid(text: str) -> bytes | None:
    """The 16 bytes of a UUID in canonical (or bare 32-digit hex) form."""
    if len(text) == 36 and text[8:24:5] == "----":  # dashes at 8, 13, 18 and 23
        text = text.replace("-", "")
    if len(text) != 32:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == 16 else None


def truncate_ip(address: str) -> str:
    """Keeps only the network part: IPv4 /24, IPv6 /48 (the address is personal data)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


_MICROSECOND = timedelta(microseconds=1)


def now_us() -> int:
    """The current time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours" if hours < 48 else f"{hours / 24:g} days"


EVENT_TYPE_NUMBERS = frozenset(int(t) for t in EventType)
