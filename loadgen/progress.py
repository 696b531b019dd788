"""The live progress of a load, on stderr.

On a terminal: a ``rich`` progress bar over the bound that will end the load
first (time, or events when ``--events`` is given), with events/s (acknowledged,
since the start), sent, acknowledged and rejected events, and elapsed time
against the time bound. Elsewhere (a log, CI): a plain line every
``PLAIN_INTERVAL`` seconds.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from loadgen.workers import Counters

PLAIN_INTERVAL = 5.0
STEPS = 1000  # the bar's resolution


class ProgressView:
    def __init__(
        self, console: Console, start_at: float, seconds: float, max_events: int | None
    ) -> None:
        self._console = console
        self._start_at = start_at  # time.monotonic() when the load starts
        self._seconds = seconds
        self._max_events = max_events
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._printed_at = 0.0

    def __enter__(self) -> ProgressView:
        if self._console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]load"),
                BarColumn(),
                TextColumn("{task.fields[elapsed]}"),
                TextColumn("{task.fields[rate]} events/s"),
                TextColumn("sent {task.fields[sent]}"),
                TextColumn("acknowledged {task.fields[acked]}"),
                TextColumn("rejected {task.fields[rejected]}"),
                console=self._console,
                refresh_per_second=4,
            )
            self._bar.start()
            self._task = self._bar.add_task("load", total=STEPS, **self._fields(Counters(), 0.0))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, counters: Counters) -> None:
        elapsed = max(0.0, time.monotonic() - self._start_at)
        if self._bar is not None and self._task is not None:
            done = elapsed / self._seconds
            if self._max_events:
                done = max(done, counters.sent / self._max_events)
            self._bar.update(
                self._task, completed=min(1.0, done) * STEPS, **self._fields(counters, elapsed)
            )
        elif elapsed - self._printed_at >= PLAIN_INTERVAL:
            self._printed_at = elapsed
            fields = self._fields(counters, elapsed)
            self._console.print(
                f"load: {fields['elapsed']}, {fields['rate']} events/s, sent {fields['sent']}, "
                f"acknowledged {fields['acked']}, rejected {fields['rejected']}",
                highlight=False,
                soft_wrap=True,
            )

    def say(self, text: str) -> None:
        self._console.print(text, highlight=False)

    def _fields(self, counters: Counters, elapsed: float) -> dict[str, Any]:
        rate = counters.acked / elapsed if elapsed > 0 else 0.0
        return {
            "elapsed": f"{elapsed:.1f} s of {self._seconds:g} s",
            "rate": f"{rate:,.0f}",
            "sent": f"{counters.sent:,}",
            "acked": f"{counters.acked:,}",
            "rejected": f"{counters.rejected:,}",
        }
