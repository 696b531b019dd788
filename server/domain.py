"""The product's nouns as plain Python: event types, roles, callers, rejections."""

import enum
from dataclasses import dataclass


class EventType(enum.IntEnum):
    """The seven event types; the numbers are the protocol's enum numbers."""

    IMPRESSION = 1
    CLICK = 2
    CONVERSION = 3
    VIEW = 4
    ENGAGEMENT = 5
    COMPLETION = 6
    SKIP = 7

    @property
    def word(self) -> str:
        """The seed's spelling: ``click``, ``impression``, ..."""
        return self.name.lower()


class Role(enum.StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its API key says: one organization, one role."""

    organization_id: str
    role: Role
    key_id: str

    def may(self, role: Role) -> bool:
        return self.role is Role.ADMIN or self.role is role


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was refused: its index in the request, the field, a code."""

    index: int
    field: str
    code: str
    reason: str
    event_id: str = ""
