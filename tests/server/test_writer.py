"""The writer against a real PostgreSQL: what PostgreSQL refuses fails only
the submission that carried it, and the writer goes on."""

import asyncio

import pytest
import uuid_utils
from support import ServerThread, make_tenant

from server.errors import InvalidArgument
from server.ingest.validation import now_us


def test_a_refused_row_fails_only_its_own_submission(analytics_server: ServerThread) -> None:
    tenant = make_tenant(analytics_server, campaigns=1)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    writer = analytics_server.components.writer

    def row(session: str | None) -> tuple:  # type: ignore[type-arg]
        return (org, uuid_utils.uuid7().bytes, campaign, 1, now_us(), None, session, None, None)

    async def both() -> list[object]:
        # Submitted together, so that they meet in one flush.
        return await asyncio.gather(
            writer.submit([row("good"), row(None)]),
            writer.submit([row("bad\x00session")]),
            return_exceptions=True,
        )

    good, bad = analytics_server.call(both())
    assert good == 0  # committed, no duplicates
    assert isinstance(bad, InvalidArgument)
    assert "refused" in bad.message and "\x00" not in bad.message
    assert not writer.degraded
    assert analytics_server.call(writer.submit([row("after")])) == 0


def test_the_buffer_refuses_what_it_cannot_hold(analytics_server: ServerThread) -> None:
    writer = analytics_server.components.writer
    rows = [("o", uuid_utils.uuid7().bytes, "c", 1, now_us(), None, None, None, None)]
    with pytest.raises(Exception, match="buffer is full"):
        analytics_server.call(writer.submit(rows * (writer.capacity + 1)))
