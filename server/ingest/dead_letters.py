"""The dead-letter table: every rejected event, with its reason and payload,
so bad input loses nothing and can be inspected.

A rejection can quote what the caller sent (a metadata key in its field, an
undecodable event's own field, reason and payload), and PostgreSQL's text
cannot hold a NUL character: a NUL is stored as the six characters ``\\u0000``
instead, so that the event is kept rather than the request failing."""

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import uuid_utils
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain import Rejection
from server.store.schema import dead_letters


class DeadLetters:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.recorded = 0

    async def record(self, organization_id: str, rejected: Sequence[tuple[Rejection, str]]) -> None:
        """Stores each (rejection, payload) under the caller's organization."""
        if not rejected:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "organization_id": organization_id,
                "dead_letter_id": UUID(bytes=uuid_utils.uuid7().bytes),
                "received_at": now,
                "event_index": rejection.index,
                "field": _storable(rejection.field),
                "code": rejection.code,
                "reason": _storable(rejection.reason),
                "payload": _storable(payload),
            }
            for rejection, payload in rejected
        ]
        async with self._engine.begin() as conn:
            await conn.execute(insert(dead_letters), rows)
        self.recorded += len(rows)


def _storable(text: str) -> str:
    """``text`` as PostgreSQL's text can hold it (NUL spelled out)."""
    return text.replace("\x00", "\\u0000") if "\x00" in text else text
