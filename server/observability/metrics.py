"""The server process's own Prometheus metrics (the service's health, not
campaigns' numbers), in one registry per server.

The ingest path handles tens of thousands of events a second, so nothing
here is touched per event: the pipeline counts once per request, the writer
once per flush, and gauges (buffer depth, subscriptions, ...) are read from
the components only when Prometheus scrapes.

The README's Observability section lists them.
"""

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from server.domain import Rejection

__all__ = ["ServerMetrics"]

_FLUSH_EVENTS_BUCKETS = (1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
_FLUSH_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class ServerMetrics:
    """The instruments of one server; ``registry`` is what ``/metrics`` serves.

    ``process=True`` adds the process's own metrics (CPU, memory, file
    descriptors, garbage collection): for the registry a process serves."""

    def __init__(self, *, process: bool = False) -> None:
        self.registry = registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        self.events = Counter(
            "campaign_analytics_events",
            "Events by what became of them: accepted (newly stored), duplicate (eventId "
            "already stored), rejected (reason: the rejection code; dead-lettered), refused "
            "(reason buffer_full: not stored, RESOURCE_EXHAUSTED).",
            ["outcome", "reason"],
            registry=registry,
        )
        # Resolved once: the writer adds to them on every flush (events that
        # repeat an id within one call are counted as duplicates by the
        # pipeline), the pipeline to refusals on every refused call.
        self.events_accepted = self.events.labels("accepted", "")
        self.events_duplicate = self.events.labels("duplicate", "")
        self.events_refused = self.events.labels("refused", "buffer_full")

        self.buffered_events = Gauge(
            "campaign_analytics_buffered_events",
            "Events waiting in the buffer for the next flush.",
            registry=registry,
        )
        self.events_in_flight = Gauge(
            "campaign_analytics_events_in_flight",
            "Events taken from the buffer and being written now.",
            registry=registry,
        )
        self.buffer_capacity = Gauge(
            "campaign_analytics_buffer_capacity_events",
            "Most events buffered and in flight; beyond it ingest answers RESOURCE_EXHAUSTED.",
            registry=registry,
        )
        self.flush_events = Histogram(
            "campaign_analytics_flush_events",
            "Events per committed flush.",
            buckets=_FLUSH_EVENTS_BUCKETS,
            registry=registry,
        )
        self.flush_duration = Histogram(
            "campaign_analytics_flush_duration_seconds",
            "Time from a flush's start to its commit, retries included.",
            buckets=_FLUSH_SECONDS_BUCKETS,
            registry=registry,
        )
        self.commit_errors = Counter(
            "campaign_analytics_commit_errors",
            "Failed attempts to commit a flush: unreachable (PostgreSQL could not be reached; "
            "retried), conflict (met another flush; retried), refused (PostgreSQL refused "
            "the events; they are not stored).",
            ["kind"],
            registry=registry,
        )
        self.commit_retries = Counter(
            "campaign_analytics_commit_retries",
            "Flushes written again after a failed attempt.",
            registry=registry,
        )
        self.writer_degraded = Gauge(
            "campaign_analytics_writer_degraded",
            "1 while the writer cannot reach PostgreSQL (it keeps the events and retries).",
            registry=registry,
        )
        self.serving = Gauge(
            "campaign_analytics_serving",
            "1 while the health check answers SERVING; the pipeline status says why not.",
            registry=registry,
        )
        self.subscriptions = Gauge(
            "campaign_analytics_subscriptions",
            "Live-update subscriptions held by this process.",
            registry=registry,
        )
        self.queued_updates = Gauge(
            "campaign_analytics_queued_updates",
            "Updates waiting in subscriptions' queues (at most maxQueueSize each).",
            registry=registry,
        )
        self.updates_published = Counter(
            "campaign_analytics_updates_published",
            "Updates queued for subscriptions (one per subscription that follows the campaign).",
            registry=registry,
        )
        self.simulations_running = Gauge(
            "campaign_analytics_simulations_running",
            "Continuous simulations running in this process.",
            registry=registry,
        )
        self.simulations_ended = Counter(
            "campaign_analytics_simulations_ended",
            "Continuous simulations ended, by how: completed, stopped or failed.",
            ["state"],
            registry=registry,
        )
        # Every series is there from the start, at 0, so that a rate or an
        # alert over it has data before the first error.
        for kind in ("unreachable", "conflict", "refused"):
            self.commit_errors.labels(kind)
        for state in ("completed", "stopped", "failed"):
            self.simulations_ended.labels(state)

    def count_rejected(self, rejections: Iterable[Rejection]) -> None:
        """Counts rejected events by their code (once per code, not per event)."""
        for code, count in Tally(r.code for r in rejections).items():
            self.events.labels("rejected", code).inc(count)
