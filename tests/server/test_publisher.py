"""The publisher's side of a commit's NOTIFY (``server.updates.publisher``):
only campaigns of organizations someone here follows are marked for a
fresh snapshot."""

import asyncio
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import create_async_engine

from server.metrics.reader import MetricsReader
from server.store.database import libpq_url, sqlalchemy_url
from server.updates.hub import UpdateHub
from server.updates.publisher import UpdatePublisher


def test_a_notify_marks_only_followed_organizations(database_url: str) -> None:
    async def run() -> list[tuple[str, str]]:
        engine = create_async_engine(sqlalchemy_url(database_url))
        hub = UpdateHub()
        hub.create("org_a", ["c1"], 3600, datetime.now(UTC))
        publisher = UpdatePublisher(hub, MetricsReader(engine), libpq_url(database_url))
        publisher.heard("org_a\tc1\norg_a\tc2\norg_b\tc1")
        publisher.heard("org_b\tc3")
        await engine.dispose()
        return list(publisher._dirty)

    # org_a is followed (its campaign c2 too: whose numbers the organization's
    # summary holds); org_b is not.
    assert asyncio.run(run()) == [("org_a", "c1"), ("org_a", "c2")]
