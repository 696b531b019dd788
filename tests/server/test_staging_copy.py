"""The writer's own binary COPY encoding: PostgreSQL reads back exactly the
values of the rows, NULLs and non-ASCII text included, and whether each
event's session is open."""

from datetime import UTC, datetime
from uuid import UUID

import orjson
import psycopg

from server.store import events as event_store
from server.store.database import libpq_url
from server.store.staging_copy import encode_rows, jsonb


def test_rows_read_back_as_written(database_url: str) -> None:
    metadata = {"sessionId": "s", "nested": {"list": [1, 2.5, None, True]}, "note": "é 中"}
    before_2000 = -86_400_000_000  # 1969-12-31, before PostgreSQL's epoch too
    rows = [
        ("org", b"\x01" * 16, "campaign", 7, 1_700_000_000_123_456, 1_500_000, "s", 30.5,
         jsonb(orjson.dumps(metadata))),
        ("orgé", b"\x02" * 16, "campaign 中", 1, before_2000, None, None, None, None),
        ("org", b"\x03" * 16, "campaign", 1, before_2000, None, "done", None, None),
    ]  # fmt: skip
    complete = {("org", "campaign", "done")}
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(event_store.CREATE_STAGING)
        with conn.cursor() as cur:
            with cur.copy(event_store.COPY_STAGING) as copy:
                copy.write(encode_rows(rows, complete))
            columns = ", ".join(event_store.STAGING_COLUMNS)
            query = f"SELECT {columns} FROM staging_events ORDER BY event_id"
            stored = cur.execute(query).fetchall()
        conn.rollback()
    assert stored == [
        ("org", UUID(bytes=b"\x01" * 16), "campaign", 7,
         datetime(2023, 11, 14, 22, 13, 20, 123_456, tzinfo=UTC), 1_500_000, "s", 30.5, metadata,
         True),
        ("orgé", UUID(bytes=b"\x02" * 16), "campaign 中", 1,
         datetime(1969, 12, 31, tzinfo=UTC), None, None, None, None, False),
        ("org", UUID(bytes=b"\x03" * 16), "campaign", 1,
         datetime(1969, 12, 31, tzinfo=UTC), None, "done", None, None, False),
    ]  # fmt: skip
