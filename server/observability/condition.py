"""The pipeline's condition: healthy, degraded or stopping, why, and since
when, as ``GetPipelineStatus`` shows it and the health check follows it.

It joins what the health monitor learns (whether PostgreSQL answers a
query), the writer's own state (it cannot reach PostgreSQL and is
retrying), refusals of a full buffer, and shutdown. The health check
answers NOT_SERVING exactly while PostgreSQL is unreachable or the server is
stopping; a full buffer is degraded but serving (the server answers, and
refuses new events until a flush makes room).
"""

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from server.ingest.pipeline import IngestPipeline
from server.store.database import unreachable_cause

__all__ = ["Condition", "PipelineCondition", "PipelineState"]


class PipelineState(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class Condition:
    state: PipelineState
    cause: str = ""  # what stands in the way; empty while healthy
    since: datetime | None = None
    serving: bool = True  # what the health check answers


HEALTHY = Condition(PipelineState.HEALTHY)


class PipelineCondition:
    def __init__(self, pipeline: IngestPipeline) -> None:
        self._pipeline = pipeline
        self._database_cause = ""
        self._database_since: datetime | None = None
        self._stopping_since: datetime | None = None

    def database_answered(self) -> None:
        self._database_cause = ""
        self._database_since = None

    def database_failed(self, exc: BaseException) -> None:
        if self._database_since is None:
            self._database_since = datetime.now(UTC)
        self._database_cause = unreachable_cause(exc)

    def stopping(self) -> None:
        if self._stopping_since is None:
            self._stopping_since = datetime.now(UTC)

    def current(self) -> Condition:
        """The condition now: the most serious cause first."""
        if self._stopping_since is not None:
            return Condition(
                PipelineState.STOPPING,
                f"the server is stopping since {_text(self._stopping_since)}: it takes no new "
                "calls and commits the buffered events",
                self._stopping_since,
                serving=False,
            )
        writer = self._pipeline.writer
        if writer.stats.degraded_reason:
            return Condition(
                PipelineState.DEGRADED,
                writer.stats.degraded_reason,
                writer.stats.degraded_since,
                serving=False,
            )
        if self._database_since is not None:
            return Condition(
                PipelineState.DEGRADED,
                f"PostgreSQL unreachable since {_text(self._database_since)}: "
                f"{self._database_cause}",
                self._database_since,
                serving=False,
            )
        refusals = self._pipeline.refusals
        full_since = refusals.full_since()
        if full_since is not None:
            return Condition(
                PipelineState.DEGRADED,
                f"buffer full since {_text(full_since)}: the server holds its {writer.capacity} "
                "events (the writer is slower than ingest), so new ones are refused with "
                "RESOURCE_EXHAUSTED (429); retry after a moment",
                full_since,
                serving=True,
            )
        return HEALTHY


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
