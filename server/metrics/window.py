"""A metrics window: the ``seconds`` whole seconds ending with the current one."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.errors import InvalidArgument

DEFAULT_WINDOW = 3600
MAX_WINDOW = 31 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Window:
    seconds: int
    now: datetime  # when the window was read

    @classmethod
    def ending_now(cls, seconds: int) -> "Window":
        if seconds == 0:
            seconds = DEFAULT_WINDOW
        if not 1 <= seconds <= MAX_WINDOW:
            raise InvalidArgument(
                f"timeWindow must be between 1 and {MAX_WINDOW} seconds (31 days); got {seconds}",
                "timeWindow",
            )
        return cls(seconds, datetime.now(UTC))

    @property
    def last_bucket(self) -> datetime:
        """The current second: the newest per-second bucket inside the window."""
        return self.now.replace(microsecond=0)

    @property
    def first_bucket(self) -> datetime:
        return self.last_bucket - timedelta(seconds=self.seconds - 1)
