"""The metric formulas, as pure functions of window totals.

Rates are percentages rounded to 2 decimals; a ratio whose denominator is 0
is 0, so every figure is a number. Money is summed exactly (in millionths)
and reported as a decimal amount.
"""

from dataclasses import dataclass, field
from datetime import datetime

MICROS = 1_000_000


@dataclass(slots=True)
class Totals:
    """What a window holds for one campaign (or, summed, an organization)."""

    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    views: int = 0
    engagements: int = 0
    completions: int = 0
    skips: int = 0
    spent_micros: int = 0
    conversion_value_micros: int = 0
    view_time_sum: float = 0.0
    view_time_count: int = 0
    sessions: int = 0
    bounced_sessions: int = 0

    def __iadd__(self, other: "Totals") -> "Totals":
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def events(self) -> int:
        return (
            self.impressions
            + self.clicks
            + self.conversions
            + self.views
            + self.engagements
            + self.completions
            + self.skips
        )


def ratio(numerator: float, denominator: float, scale: float = 1.0) -> float:
    return numerator * scale / denominator if denominator else 0.0


def percent(numerator: float, denominator: float) -> float:
    return round(ratio(numerator, denominator, 100.0), 2)


@dataclass(slots=True)
class CampaignMetrics:
    """The seed's RealTimeMetrics of one campaign over one window."""

    campaign_id: str
    organization_id: str
    timestamp: datetime
    window_start: datetime
    time_window: int
    totals: Totals = field(default_factory=Totals)

    @property
    def total_spent(self) -> float:
        return round(self.totals.spent_micros / MICROS, 6)

    @property
    def conversion_value(self) -> float:
        return round(self.totals.conversion_value_micros / MICROS, 6)

    @property
    def ctr(self) -> float:
        return percent(self.totals.clicks, self.totals.impressions)

    @property
    def conversion_rate(self) -> float:
        return percent(self.totals.conversions, self.totals.clicks)

    @property
    def cpc(self) -> float:
        return round(ratio(self.totals.spent_micros / MICROS, self.totals.clicks), 4)

    @property
    def cpa(self) -> float:
        return round(ratio(self.totals.spent_micros / MICROS, self.totals.conversions), 4)

    @property
    def engagement_rate(self) -> float:
        return percent(self.totals.engagements, self.totals.views)

    @property
    def completion_rate(self) -> float:
        return percent(self.totals.completions, self.totals.views)

    @property
    def skip_rate(self) -> float:
        return percent(self.totals.skips, self.totals.views)

    @property
    def average_view_time(self) -> float:
        return round(ratio(self.totals.view_time_sum, self.totals.view_time_count), 2)

    @property
    def bounce_rate(self) -> float:
        return percent(self.totals.bounced_sessions, self.totals.sessions)
