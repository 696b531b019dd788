"""API keys: each scoped to one organization with one role, stored hashed.

A key reads ``ca_<key id>_<secret>``; the database keeps only its SHA-256
(keys are random and long, so a slow hash adds nothing). Checked keys are
trusted for ``cache_seconds``.
"""

import hashlib
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain import Principal, Role
from server.errors import Unauthenticated
from server.store.schema import api_keys

KEY_PREFIX = "ca_"


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token(authorization: str | None) -> str:
    """The key in an ``authorization: Bearer <key>`` value."""
    if not authorization:
        raise Unauthenticated("an API key is required: send it as 'authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization value must read 'Bearer <key>'")
    return token.strip()


class KeyStore:
    def __init__(self, engine: AsyncEngine, cache_seconds: float = 5.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an authorization value; raises ``Unauthenticated``."""
        digest = hash_key(bearer_token(authorization))
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        query = select(api_keys.c.organization_id, api_keys.c.role, api_keys.c.key_id).where(
            api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            self._cache.pop(digest, None)
            raise Unauthenticated("the API key is unknown or revoked")
        principal = Principal(row.organization_id, Role(row.role), row.key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._cache_seconds, principal)
        return principal


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
