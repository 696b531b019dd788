"""Staged event rows as PostgreSQL binary COPY data, in one block.

The writer copies thousands of rows per flush. Handing psycopg one row at a
time (``copy.write_row``) sends every value through its adapters and awaits
per row; packing the rows here into one bytes object and writing it at once
costs a fraction of that, and this is the ingest hot path.

The layout is PostgreSQL's binary COPY format (the "Binary Format" section of
the COPY documentation): a header, then per row a 16-bit field count and each
field as a 32-bit byte length (-1 for NULL) followed by its bytes in the
type's binary representation, then a 16-bit -1 as trailer. The fields are
``server.store.events.STAGING_COLUMNS``, in that order: the values of an
``EventRow`` (its metadata comes already in jsonb's binary form, ``jsonb``),
then ``session_open``: whether the event's session may still change
(``server.store.sessions``).
"""

import struct
from collections.abc import Container, Iterable
from typing import Any

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, extension
TRAILER = struct.pack(">h", -1)

_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_NULL = struct.pack(">i", -1)
_FIELD_COUNT = struct.pack(">h", 10)
_UUID_LENGTH = struct.pack(">i", 16)  # an event id is the uuid's 16 bytes
_length = struct.Struct(">i").pack
# event_type (int2) and occurred_at (timestamptz: int8 microseconds since
# 2000), with value_micros (int8) when it is not NULL.
_type_and_time = struct.Struct(">ihiq").pack
_type_time_and_value = struct.Struct(">ihiqiq").pack
_float8 = struct.Struct(">id").pack
_OPEN = struct.pack(">ib", 1, 1)  # session_open: true
_CLOSED = struct.pack(">ib", 1, 0)  # false


def jsonb(document: bytes) -> bytes:
    """A JSON document (UTF-8) in jsonb's binary form: a version byte (1), then the text."""
    # This also copies the document, which is worth it: holding thousands of
    # orjson results until the flush costs 20 times as much as making them
    # (each keeps a large allocation), and right-sized copies do not (measured).
    return b"\x01" + document


def encode_rows(
    rows: Iterable[tuple[Any, ...]], complete_sessions: Container[tuple[str, str, str]] = ()
) -> bytearray:
    """The COPY data (header to trailer) of event rows; an event's session is
    open unless ``complete_sessions`` holds its (organization, campaign,
    session)."""
    # Organization, campaign and session ids repeat across a batch: each is
    # encoded once. Column order: organization_id, event_id, campaign_id,
    # event_type, occurred_at, value_micros, session_id, duration, metadata,
    # session_open.
    texts: dict[str, bytes] = {}
    # Per organization: the row's start, up to its event id's bytes.
    starts: dict[str, bytes] = {}
    out = bytearray(HEADER)
    for org, event_id, campaign, event_type, occurred_us, value, session, duration, meta in rows:
        start = starts.get(org)
        if start is None:
            start = starts[org] = _FIELD_COUNT + _text(org) + _UUID_LENGTH
        campaign_field = texts.get(campaign)
        if campaign_field is None:
            campaign_field = texts[campaign] = _text(campaign)
        out += start
        out += event_id
        out += campaign_field
        occurred_at = occurred_us - _POSTGRES_EPOCH_US
        if value is None:
            out += _type_and_time(2, event_type, 8, occurred_at)
            out += _NULL
        else:
            out += _type_time_and_value(2, event_type, 8, occurred_at, 8, value)
        if session is None:
            out += _NULL
            session_open = _CLOSED
        else:
            session_field = texts.get(session)
            if session_field is None:
                session_field = texts[session] = _text(session)
            out += session_field
            session_open = _CLOSED if (org, campaign, session) in complete_sessions else _OPEN
        out += _NULL if duration is None else _float8(8, duration)
        if meta is None:
            out += _NULL
        else:
            out += _length(len(meta))
            out += meta
        out += session_open
    out += TRAILER
    return out


def _text(value: str) -> bytes:
    data = value.encode()
    return _length(len(data)) + data
