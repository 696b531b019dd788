"""The dead-letter table: every rejected event, with its reason and payload,
so bad input loses nothing and can be inspected."""

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
                "field": rejection.field,
                "code": rejection.code,
                "reason": rejection.reason,
                "payload": payload,
            }
            for rejection, payload in rejected
        ]
        async with self._engine.begin() as conn:
            await conn.execute(insert(dead_letters), rows)
        self.recorded += len(rows)
