"""The tables, as SQLAlchemy Core objects for queries.

The DDL itself lives in the Alembic migrations (``migrations/versions``).
Every primary key starts with ``organization_id`` so the schema can be
distributed by organization (Citus) unchanged; ``campaigns`` is small and can
be a reference table.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

organizations = Table(
    "organizations",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("key_id", Text, primary_key=True),
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("campaign_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("event_id", Uuid, primary_key=True),
    Column("campaign_id", Text, nullable=False),
    Column("event_type", SmallInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("value_micros", BigInteger),
    Column("session_id", Text),
    Column("duration", Float),
    Column("metadata", JSONB),
)

# Event counts per type, in the order of the event type numbers (1 to 7).
COUNTERS = ("impressions", "clicks", "conversions", "views", "engagements", "completions", "skips")
# What a per-second rollup row sums.
ROLLUP_SUMS = (
    *COUNTERS,
    "spent_micros",
    "conversion_value_micros",
    "view_time_sum",
    "view_time_count",
    "sessions",
    "bounced_sessions",
)


def _rollups(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("organization_id", Text, primary_key=True),
        Column("campaign_id", Text, primary_key=True),
        Column("bucket", DateTime(timezone=True), primary_key=True),
        *(Column(c, BigInteger, nullable=False) for c in COUNTERS),
        Column("spent_micros", BigInteger, nullable=False),
        Column("conversion_value_micros", BigInteger, nullable=False),
        Column("view_time_sum", Float, nullable=False),
        Column("view_time_count", BigInteger, nullable=False),
        # Sessions whose first event fell in this bucket, and of them the bounces.
        Column("sessions", BigInteger, nullable=False),
        Column("bounced_sessions", BigInteger, nullable=False),
    )


# Totals of each campaign per second (window queries sum these), and the same
# per minute and per hour (for trends over long ranges). Every flush adds to
# all three.
campaign_rollups = _rollups("campaign_rollups")
campaign_rollups_minute = _rollups("campaign_rollups_minute")
campaign_rollups_hour = _rollups("campaign_rollups_hour")

# The seed's CampaignAnalytics: one row per campaign and UTC date.
campaign_analytics = Table(
    "campaign_analytics",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("campaign_id", Text, primary_key=True),
    Column("date", Date, primary_key=True),
    *(Column(name, BigInteger, nullable=False) for name in COUNTERS),
    Column("spent", Numeric(20, 6), nullable=False),
    Column("conversion_value", Numeric(20, 6), nullable=False),
    Column("ctr", Float, nullable=False),
    Column("conversion_rate", Float, nullable=False),
    Column("cpc", Float, nullable=False),
    Column("cpa", Float, nullable=False),
    Column("engagement_rate", Float, nullable=False),
    Column("completion_rate", Float, nullable=False),
    Column("skip_rate", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Event counts per session of each campaign, for the bounce figures.
campaign_sessions = Table(
    "campaign_sessions",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("campaign_id", Text, primary_key=True),
    Column("session_id", Text, primary_key=True),
    Column("first_event_at", DateTime(timezone=True), nullable=False),
    Column("event_count", SmallInteger, nullable=False),  # 1, or 2 for two or more
)

# Refused events with their reason and the payload as sent.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("dead_letter_id", Uuid, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("event_index", Integer, nullable=False),
    Column("field", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),
)
