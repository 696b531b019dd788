"""The streams each API key holds open, so that revoking a key ends them.

A streaming call (StreamEvents, StreamUpdates) registers its task under its
key when it authenticates. Revocation cancels those tasks; the handler, on
seeing that its cancellation came from a revocation (``ended_by_revocation``),
ends the call with UNAUTHENTICATED instead of CANCELLED.

A server stream (an async generator) must not be cancelled while gRPC sends
one of its messages: the cancellation would land in gRPC's code, not in the
handler, and the call would end CANCELLED. Such a stream declares itself
(``ends_between_messages``) and is cancelled only while it waits for news
(``waiting``); revoked at another moment, it ends when it next waits.
"""

import asyncio
import contextlib
import weakref
from collections.abc import Iterator

from server.errors import Unauthenticated

KEY_REVOKED = "the API key was revoked"


class OpenStreams:
    def __init__(self) -> None:
        self._by_key: dict[str, set[asyncio.Task[object]]] = {}
        self._revoked: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self._between_messages: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self._waiting: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()

    def track(self, key_id: str) -> None:
        """Registers the running call (its task) as a stream of ``key_id``
        until it ends."""
        task = asyncio.current_task()
        if task is None:
            return
        tasks = self._by_key.setdefault(key_id, set())
        if task in tasks:
            return
        tasks.add(task)
        task.add_done_callback(lambda done: self._untrack(key_id, done))

    def end(self, key_id: str) -> int:
        """Ends every open stream of ``key_id``; returns how many there were."""
        tasks = self._by_key.pop(key_id, set())
        for task in tasks:
            self._revoked.add(task)
            if task not in self._between_messages or task in self._waiting:
                task.cancel()
        return len(tasks)

    def ends_between_messages(self) -> None:
        """Declares the running call a server stream, ended only while ``waiting``."""
        task = asyncio.current_task()
        if task is not None:
            self._between_messages.add(task)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Where a server stream waits for news, and may be ended; raises
        ``Unauthenticated`` at once if its key was revoked meanwhile."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        if task in self._revoked:
            self._revoked.discard(task)
            raise Unauthenticated(KEY_REVOKED)
        self._waiting.add(task)
        try:
            yield
        finally:
            self._waiting.discard(task)

    def count(self, key_id: str) -> int:
        return len(self._by_key.get(key_id, ()))

    def ended_by_revocation(self) -> bool:
        """Whether the running call was cancelled because its key was revoked;
        if so, the cancellation is withdrawn so that the call can still answer."""
        task = asyncio.current_task()
        if task is None or task not in self._revoked:
            return False
        self._revoked.discard(task)
        task.uncancel()
        return True

    def _untrack(self, key_id: str, task: asyncio.Task[object]) -> None:
        tasks = self._by_key.get(key_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_key[key_id]
