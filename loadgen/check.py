"""The exact-count check: what the replies acknowledged against what the
metrics count.

Before the load and after it, each campaign's metrics are read
(MetricsService.GetCampaignMetrics) over windows that start at the same
second, so the difference of the two reads is exactly the events with a
timestamp from that second on. A metrics read includes every event
acknowledged before it, so the difference must equal what the load's replies
acknowledged: per campaign and event type when every acknowledging reply
accepted all of its events, in total otherwise (a reply that reports
duplicates or rejections does not say which events it accepted). Events of
calls that failed without an answer (a deadline, a broken connection) may or
may not be stored: then the total may exceed the acknowledged events by at
most that many.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clients import AnalyticsClient, pb
from loadgen.workers import Load

# Event types, and the metrics field that counts each.
COUNTED_BY = {
    "impression": "impressions",
    "view": "ad_playbacks",
    "click": "clicks",
    "completion": "completions",
    "engagement": "engagements",
    "skip": "skips",
    "conversion": "conversions",
}
# Seconds the first read's window reaches back: how far the client's clock
# (the events' timestamps) may lag the server's.
FIRST_WINDOW = 3600
ATTEMPTS = 3  # reads of one campaign until its window starts at the anchor

Counts = dict[str, dict[str, int]]  # campaign id -> event type -> events


class WindowReader:
    """Reads campaigns' event counts over windows that all start at one
    second: the start of the first window read (the anchor)."""

    def __init__(self, client: AnalyticsClient) -> None:
        self._client = client
        self.anchor: int | None = None  # epoch second the windows start at
        self._server_clock = (0.0, 0.0)  # the server's time, and time.monotonic() then

    def read(self, campaign_ids: list[str]) -> Counts:
        return {campaign_id: self._campaign(campaign_id) for campaign_id in campaign_ids}

    def _campaign(self, campaign_id: str) -> dict[str, int]:
        window = self._window()
        for _ in range(ATTEMPTS):
            reply = self._client.get_campaign_metrics(campaign_id, window)
            now = reply.timestamp.seconds + reply.timestamp.nanos / 1e9
            self._server_clock = (now, time.monotonic())
            start = reply.timestamp.seconds - reply.time_window + 1
            if self.anchor is None:
                self.anchor = start
            if start == self.anchor:
                return _counts(reply)
            window += start - self.anchor  # the second turned between estimate and read
        raise RuntimeError(f"could not read {campaign_id}'s metrics from the run's start")

    def _window(self) -> int:
        """Seconds from the anchor to the server's current second."""
        if self.anchor is None:
            return FIRST_WINDOW
        now, at = self._server_clock
        return int(now + time.monotonic() - at) - self.anchor + 1


def _counts(reply: pb.GetCampaignMetricsResponse) -> dict[str, int]:
    if not reply.HasField("metrics"):  # no events in the window
        return dict.fromkeys(COUNTED_BY, 0)
    return {t: getattr(reply.metrics, name) for t, name in COUNTED_BY.items()}


@dataclass(slots=True)
class Check:
    passed: bool
    per_type: bool  # compared per campaign and type (else in total)
    acknowledged: dict[str, int]  # per event type (over all campaigns)
    counted: dict[str, int]
    acknowledged_total: int
    counted_total: int
    message: str
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "per_type": self.per_type,
            "acknowledged": self.acknowledged,
            "counted": self.counted,
            "acknowledged_total": self.acknowledged_total,
            "counted_total": self.counted_total,
            "message": self.message,
            "notes": self.notes,
        }


def compare(load: Load, before: Counts, after: Counts, *, fresh: bool) -> Check:
    counted = {
        c: {t: after[c][t] - before[c][t] for t in COUNTED_BY} for c in after
    }  # fmt: skip
    acked = {c: {t: load.acked_by_campaign.get(c, {}).get(t, 0) for t in COUNTED_BY} for c in after}
    counted_total = sum(sum(types.values()) for types in counted.values())
    notes = []
    if not fresh:
        notes.append(
            "existing campaigns: counted = after - before; other traffic to these campaigns "
            "during the run shows as a mismatch"
        )
    per_type = load.unattributed == 0
    if not per_type:
        notes.append(
            f"{load.unattributed:,} acknowledged events came in replies that also reported "
            "duplicates or rejections, which do not say which events they accepted: "
            "compared in total, not per type"
        )
    if load.unknown:
        notes.append(
            f"{load.unknown:,} events were in calls that failed without an answer and may or "
            "may not be stored: the count may exceed the acknowledged events by that many"
        )
        passed = load.acked <= counted_total <= load.acked + load.unknown
    elif per_type:
        passed = acked == counted
    else:
        passed = counted_total == load.acked
    if passed:
        message = f"PASS: acknowledged {load.acked:,}, counted {counted_total:,}"
    else:
        message = (
            f"MISMATCH: sent/acknowledged {load.sent:,}/{load.acked:,}, counted {counted_total:,}"
        )
        if per_type:
            notes += _differences(acked, counted)
    return Check(
        passed=passed,
        per_type=per_type,
        acknowledged=_by_type(acked),
        counted=_by_type(counted),
        acknowledged_total=load.acked,
        counted_total=counted_total,
        message=message,
        notes=notes,
    )


def _by_type(counts: Counts) -> dict[str, int]:
    return {t: sum(types[t] for types in counts.values()) for t in COUNTED_BY}


def _differences(acked: Counts, counted: Counts, most: int = 5) -> list[str]:
    lines = [
        f"{campaign_id} {t}: acknowledged {acked[campaign_id][t]:,}, "
        f"counted {counted[campaign_id][t]:,}"
        for campaign_id in sorted(counted)
        for t in COUNTED_BY
        if acked[campaign_id][t] != counted[campaign_id][t]
    ]
    if len(lines) > most:
        lines = [*lines[:most], f"... and {len(lines) - most} more campaign and type pairs"]
    return lines
