"""Sessions known to be complete, so a flush need not look them up.

What the flush keeps of a session (``campaign_sessions``: when its first
event came, and whether it has one event or more) stops changing once the
session has a second event stored. Looking each session of a batch up costs
PostgreSQL about a third of a flush; so the writer remembers the sessions a
flush found, or made, complete, and stages their later events with
``session_open`` false: the flush does not look at them again. Being
complete never stops being true (sessions are never deleted), so what a
process remembers stays right whichever process wrote the session. Memory is
bounded: past ``capacity`` sessions the oldest quarter is forgotten (a
forgotten session costs one lookup more, nothing else).
"""

from collections.abc import Iterable

SessionKey = tuple[str, str, str]  # (organization_id, campaign_id, session_id)

CAPACITY = 100_000


class CompleteSessions(dict[SessionKey, None]):
    """The sessions known to be complete, oldest first (a dict, so that the
    encoder's lookup per event is a plain ``in``)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.capacity = capacity

    def add(self, keys: Iterable[SessionKey]) -> None:
        """Remembers sessions found complete by a committed flush."""
        for key in keys:
            self[key] = None
        if len(self) > self.capacity:
            for key in list(self)[: len(self) - self.capacity * 3 // 4]:
                del self[key]
