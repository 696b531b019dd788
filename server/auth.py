"""API keys: each scoped to one organization with one role, stored hashed.

A key reads ``ca_<key id>_<secret>``; the database keeps only its SHA-256
(keys are random and long, so a slow hash adds nothing). Checked keys are
trusted for ``cache_seconds``; the calls that find a key uncached at the same
time share one lookup, however they spell the ``Bearer`` scheme and spaces.

Revoking a key (``revoke_key``) sends, in its transaction, a NOTIFY on
``REVOCATIONS_CHANNEL``; every server process LISTENs
(``server.revocation``) and calls ``KeyStore.revoked``, which drops the key
from the cache and ends its open streams at once. A process whose LISTEN
connection was down catches up when it is back; meanwhile it trusts a
cached key for at most ``cache_seconds``.
"""

import asyncio
import functools
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain import Principal, Role
from server.errors import InvalidArgument, NotFound, Unauthenticated
from server.limits import KeyLimits
from server.open_streams import KEY_REVOKED, OpenStreams
from server.store.schema import api_keys

KEY_PREFIX = "ca_"
# The NOTIFY channel on which a revocation names the key it revoked.
REVOCATIONS_CHANNEL = "campaign_analytics_key_revocations"


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


BEARER = "Bearer"  # the authorization scheme, as clients spell it
# Keys kept checked at most (distinct keys that were found, each for
# ``cache_seconds``): past it the expired ones are dropped.
CACHED_KEYS = 10_000


def bearer_token(authorization: str | None) -> str:
    """The key in an ``authorization: Bearer <key>`` value."""
    if not authorization:
        raise Unauthenticated("an API key is required: send it as 'authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization value must read 'Bearer <key>'")
    return token.strip()


def key_id_of(key: str) -> str:
    """The key id in a key (``ca_<key id>_<secret>``); the argument if it is no key."""
    if key.startswith(KEY_PREFIX):
        key_id, _, secret = key.removeprefix(KEY_PREFIX).partition("_")
        if key_id and secret:
            return key_id
    return key


class KeyStore:
    """Who is calling (``authenticate``), the limits every key has, and the
    streams each key holds open."""

    def __init__(
        self, engine: AsyncEngine, cache_seconds: float = 5.0, limits: KeyLimits | None = None
    ) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        # By the authorization value a key is sent in, spelled as clients
        # spell it (``Bearer <key>``; other spellings are read into it): a
        # call whose key is cached is not parsed or hashed again (hashing
        # alone was about 1% of the server's CPU for single-event calls).
        # Only keys that were found are kept, each for ``cache_seconds``
        # (expired ones are dropped at the next lookup, at most one
        # ``cache_seconds`` later): recent callers' keys are in memory, as
        # they are while their calls are served; the database holds hashes
        # only.
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lookups: dict[str, asyncio.Future[Principal]] = {}  # under way
        self._next_sweep = 0.0  # when the next lookup drops expired keys
        # Keys revoked while this process runs: refused even if a check that
        # read the database just before the revocation comes back after it.
        self._revoked: set[str] = set()
        self.limits = limits or KeyLimits()
        self.streams = OpenStreams()

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller of an authorization value, if its key was checked less
        than ``cache_seconds`` ago and it is spelled ``Bearer <key>``; else
        None (``authenticate`` checks it)."""
        cached = self._cache.get(authorization)  # type: ignore[arg-type]
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an authorization value; raises ``Unauthenticated``."""
        principal = self.cached(authorization)
        if principal is not None:
            return principal
        key = bearer_token(authorization)
        canonical = f"{BEARER} {key}"
        principal = self.cached(canonical)
        if principal is not None:
            return principal
        # One lookup per key at a time: when a busy key's cache time ends, the
        # calls that arrive meanwhile wait for that lookup rather than each
        # asking the database (hundreds of queries at once, through a pool of
        # a few connections, every ``cache_seconds``).
        lookup = self._lookups.get(canonical)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(canonical, key))
            self._lookups[canonical] = lookup
            lookup.add_done_callback(functools.partial(self._looked_up, canonical))
        # (Shielded: a caller that gives up does not end the others' lookup.)
        return await asyncio.shield(lookup)

    def _looked_up(self, canonical: str, lookup: "asyncio.Future[Principal]") -> None:
        if self._lookups.get(canonical) is lookup:
            del self._lookups[canonical]
        if not lookup.cancelled():
            lookup.exception()  # heard by its callers, if any are left

    async def _look_up(self, canonical: str, key: str) -> Principal:
        """Checks ``key`` in the database; caches it under ``canonical``."""
        now = time.monotonic()
        digest = hash_key(key)
        query = select(
            api_keys.c.organization_id, api_keys.c.role, api_keys.c.key_id, api_keys.c.revoked_at
        ).where(api_keys.c.key_hash == digest)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            self._cache.pop(canonical, None)
            raise Unauthenticated("the API key is unknown or revoked")
        if row.revoked_at is not None or row.key_id in self._revoked:
            self._cache.pop(canonical, None)
            raise Unauthenticated(KEY_REVOKED)
        principal = Principal(row.organization_id, Role(row.role), row.key_id)
        if now >= self._next_sweep or len(self._cache) >= CACHED_KEYS:
            self._forget_expired(now)
        self._cache[canonical] = (now + self._cache_seconds, principal)
        return principal

    def _forget_expired(self, now: float) -> None:
        """Drops the keys whose time is up (a key is not kept in memory long
        after its calls), and all of them if the cache is still full (each is
        looked up again on its next call)."""
        for authorization, (until, _) in list(self._cache.items()):
            if until <= now:
                del self._cache[authorization]
        if len(self._cache) >= CACHED_KEYS:
            self._cache.clear()
        self._next_sweep = now + self._cache_seconds

    def revoked(self, key_id: str) -> int:
        """Applies a revocation at once: the key is refused from now on and its
        open streams end. Returns how many streams were ended."""
        self._revoked.add(key_id)
        for authorization, (_, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[authorization]
        return self.streams.end(key_id)

    def forget_all(self) -> None:
        """Empties the cache: every key is checked again on its next call."""
        self._cache.clear()


async def create_key(engine: AsyncEngine, organization_id: str, role: Role, name: str = "") -> str:
    """Creates a key and returns it: the only time it is ever shown."""
    key_id, key = new_key()
    async with engine.begin() as conn:
        await conn.execute(
            insert(api_keys).values(
                organization_id=organization_id,
                key_id=key_id,
                key_hash=hash_key(key),
                role=role.value,
                name=name,
                created_at=datetime.now(UTC),
            )
        )
    return key


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What is stored of a key; never its secret (only its hash is stored)."""

    organization_id: str
    key_id: str
    role: Role
    name: str
    created_at: datetime
    revoked_at: datetime | None


_RECORD_COLUMNS = (
    api_keys.c.organization_id,
    api_keys.c.key_id,
    api_keys.c.role,
    api_keys.c.name,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        row.organization_id, row.key_id, Role(row.role), row.name, row.created_at, row.revoked_at
    )


async def list_keys(engine: AsyncEngine, organization_id: str) -> list[KeyRecord]:
    """The organization's keys, oldest first, revoked ones included."""
    query = (
        select(*_RECORD_COLUMNS)
        .where(api_keys.c.organization_id == organization_id)
        .order_by(api_keys.c.created_at, api_keys.c.key_id)
    )
    async with engine.connect() as conn:
        return [_record(row) for row in await conn.execute(query)]


async def revoke_key(
    engine: AsyncEngine, key_id: str, organization_id: str | None = None
) -> tuple[KeyRecord, bool]:
    """Revokes a key; returns its record and whether this call revoked it
    (False: it already was). The NOTIFY that tells every server process is
    sent in the same transaction, so it is delivered exactly when the
    revocation is committed."""
    query = select(*_RECORD_COLUMNS).where(api_keys.c.key_id == key_id).with_for_update()
    if organization_id is not None:
        query = query.where(api_keys.c.organization_id == organization_id)
    async with engine.begin() as conn:
        rows = (await conn.execute(query)).all()
        if not rows:
            where = f" in organization {organization_id!r}" if organization_id else ""
            raise NotFound(
                f"no API key has id {key_id!r}{where}; list-keys shows an organization's keys"
            )
        if len(rows) > 1:
            organizations = ", ".join(sorted(row.organization_id for row in rows))
            raise InvalidArgument(
                f"key id {key_id!r} exists in several organizations ({organizations}); "
                "name the organization"
            )
        record = _record(rows[0])
        if record.revoked_at is not None:
            return record, False
        revoked_at = (
            await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.organization_id == record.organization_id,
                    api_keys.c.key_id == key_id,
                )
                .values(revoked_at=func.now())
                .returning(api_keys.c.revoked_at)
            )
        ).scalar_one()
        await conn.execute(select(func.pg_notify(REVOCATIONS_CHANNEL, key_id)))
    return (
        KeyRecord(
            record.organization_id,
            key_id,
            record.role,
            record.name,
            record.created_at,
            revoked_at,
        ),
        True,
    )
