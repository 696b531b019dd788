"""Key revocations reach every server process at once.

``server.auth.revoke_key`` sends a NOTIFY naming the key inside the
transaction that revokes it. Each server process LISTENs on a connection of
its own and applies every revocation as it is committed: the key store
refuses the key and ends its open streams (UNAUTHENTICATED), and the update
hub removes the subscriptions created with it.

Notices sent while the connection is down are lost. So when it is back, the
listener empties the key cache and applies every revocation made since it
last knew itself connected; until then a process trusts a cached key for at
most ``key_cache_seconds``, and the streams of a key revoked meanwhile end on
reconnection. A connection lost quietly is noticed by a probe every
``PROBE_SECONDS``, itself bounded by as much.
"""

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from server.auth import REVOCATIONS_CHANNEL, KeyStore
from server.updates.hub import UpdateHub

log = logging.getLogger(__name__)

PROBE_SECONDS = 10.0
# The listening connection's application_name, as pg_stat_activity shows it.
LISTENER_NAME = "campaign-analytics revocations"
# A revocation's time is its transaction's start; it commits well within this.
CATCH_UP_MARGIN = timedelta(minutes=1)


class RevocationListener:
    def __init__(self, keys: KeyStore, hub: UpdateHub, database_url: str) -> None:
        self._keys = keys
        self._hub = hub
        self._url = database_url
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts listening; returns once LISTEN is in place (or 10 s passed)."""
        self._task = asyncio.create_task(self._listen(), name="revocations-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def apply(self, key_id: str) -> None:
        """Applies the revocation of ``key_id`` in this process."""
        streams = self._keys.revoked(key_id)
        subscriptions = self._hub.remove_created_with(key_id)
        log.info(
            "API key %s revoked: ended %d open streams and removed %d subscriptions",
            key_id,
            streams,
            subscriptions,
        )

    async def _listen(self) -> None:
        connected_until: datetime | None = None  # the database's clock
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    application_name=LISTENER_NAME,
                    connect_timeout=int(PROBE_SECONDS),
                ) as conn:
                    await conn.execute(f"LISTEN {REVOCATIONS_CHANNEL}")
                    listening_since = await _now(conn)
                    if connected_until is not None:
                        await self._catch_up(conn, connected_until)
                    connected_until = listening_since
                    self.listening.set()
                    delay = 0.1
                    while True:
                        async for note in conn.notifies(timeout=PROBE_SECONDS):
                            self.apply(note.payload)
                        # A connection lost quietly would hang this probe: bound it.
                        async with asyncio.timeout(PROBE_SECONDS):
                            connected_until = await _now(conn)
            except (psycopg.Error, OSError) as exc:  # OSError includes TimeoutError
                self.listening.clear()
                log.warning(
                    "key revocations paused: the connection to PostgreSQL failed (%s); "
                    "reconnecting, and meanwhile a cached key is trusted until its cache "
                    "time ends",
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _catch_up(self, conn: psycopg.AsyncConnection[TupleRow], since: datetime) -> None:
        """Applies the revocations whose notices may have been missed."""
        self._keys.forget_all()
        cursor = await conn.execute(
            "SELECT key_id FROM api_keys WHERE revoked_at >= %s", (since - CATCH_UP_MARGIN,)
        )
        for (key_id,) in await cursor.fetchall():
            self.apply(str(key_id))


async def _now(conn: psycopg.AsyncConnection[TupleRow]) -> datetime:
    row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    now: datetime = row[0]
    return now
