"""The publisher's side of a commit's NOTIFY (``server.updates.publisher``):
only campaigns of organizations someone here follows are marked for a
fresh snapshot."""

import asyncio
import socket
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from server.metrics.reader import MetricsReader
from server.store.database import libpq_url, sqlalchemy_url
from server.updates import publisher as publisher_module
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


def test_follow_waits_for_an_unanswering_database_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL that takes the connection but never answers holds up the
    first subscription for ``LISTEN_WAIT`` at most, and no later one; once
    the publisher has stopped, a subscription starts no listener."""
    monkeypatch.setattr(publisher_module, "LISTEN_WAIT", 1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts (in the kernel's backlog), never answers
    port = silent.getsockname()[1]

    async def run() -> tuple[float, float, bool]:
        hub = UpdateHub()
        engine = create_async_engine("postgresql+psycopg://127.0.0.1:1/none")
        publisher = UpdatePublisher(
            hub, MetricsReader(engine), f"postgresql://127.0.0.1:{port}/none"
        )
        await publisher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await publisher.follow()
        first = loop.time() - started
        started = loop.time()
        await publisher.follow()
        second = loop.time() - started
        await publisher.stop()
        await publisher.follow()
        listener_after_stop = any(
            not task.done() for task in asyncio.all_tasks() if task.get_name() == "updates-listen"
        )
        await engine.dispose()
        return first, second, listener_after_stop

    try:
        first, second, listener_after_stop = asyncio.run(run())
    finally:
        silent.close()
    assert 0.9 <= first < 5
    assert second < 0.5
    assert not listener_after_stop
