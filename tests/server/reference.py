"""A plain reference computation of the metrics, to check the service against."""

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from clients import pb

TYPE = pb.EventType


def _percent(numerator: float, denominator: float) -> float:
    return round(numerator * 100 / denominator, 2) if denominator else 0.0


@dataclass
class Expected:
    counts: Counter[int] = field(default_factory=Counter)
    spent_micros: int = 0
    conversion_value_micros: int = 0
    durations: list[float] = field(default_factory=list)
    sessions: Counter[str] = field(default_factory=Counter)

    def add(self, e: pb.Event) -> None:
        self.counts[e.event_type] += 1
        if e.HasField("value"):
            micros = round(e.value * 1_000_000)
            if e.event_type == TYPE.EVENT_TYPE_CONVERSION:
                self.conversion_value_micros += micros
            else:
                self.spent_micros += micros
        if e.event_type == TYPE.EVENT_TYPE_VIEW and e.metadata.HasField("duration"):
            self.durations.append(e.metadata.duration)
        if e.metadata.session_id:
            self.sessions[e.metadata.session_id] += 1

    def metrics(self) -> dict[str, float]:
        c = self.counts
        imp, clk, conv = (
            c[TYPE.EVENT_TYPE_IMPRESSION],
            c[TYPE.EVENT_TYPE_CLICK],
            c[TYPE.EVENT_TYPE_CONVERSION],
        )
        views = c[TYPE.EVENT_TYPE_VIEW]
        spent = self.spent_micros / 1e6
        return {
            "impressions": imp,
            "clicks": clk,
            "conversions": conv,
            "ad_playbacks": views,
            "engagements": c[TYPE.EVENT_TYPE_ENGAGEMENT],
            "completions": c[TYPE.EVENT_TYPE_COMPLETION],
            "skips": c[TYPE.EVENT_TYPE_SKIP],
            "ctr": _percent(clk, imp),
            "conversion_rate": _percent(conv, clk),
            "total_spent": round(spent, 6),
            "conversion_value": round(self.conversion_value_micros / 1e6, 6),
            "cpc": round(spent / clk, 4) if clk else 0.0,
            "cpa": round(spent / conv, 4) if conv else 0.0,
            "engagement_rate": _percent(c[TYPE.EVENT_TYPE_ENGAGEMENT], views),
            "completion_rate": _percent(c[TYPE.EVENT_TYPE_COMPLETION], views),
            "skip_rate": _percent(c[TYPE.EVENT_TYPE_SKIP], views),
            "average_view_time": (
                round(sum(self.durations) / len(self.durations), 2) if self.durations else 0.0
            ),
            "bounce_rate": _percent(
                sum(1 for n in self.sessions.values() if n == 1), len(self.sessions)
            ),
            "sessions": len(self.sessions),
        }


def expected_by_campaign(events: list[pb.Event]) -> dict[str, dict[str, float]]:
    per: dict[str, Expected] = defaultdict(Expected)
    for e in events:
        per[e.campaign_id].add(e)
    return {campaign: exp.metrics() for campaign, exp in per.items()}
