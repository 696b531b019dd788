"""Per-minute and per-hour rollups, for trends over long ranges; filled from
the per-second rollups already stored.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUMS = (
    "impressions, clicks, conversions, views, engagements, completions, skips, "
    "spent_micros, conversion_value_micros, view_time_sum, view_time_count, "
    "sessions, bounced_sessions"
)


def _table(name: str, unit: str) -> str:
    sums = ", ".join(f"sum({column.strip()})" for column in SUMS.split(","))
    return f"""
CREATE TABLE {name} (LIKE campaign_rollups INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
WITH (fillfactor = 70);
ALTER TABLE {name} ADD PRIMARY KEY (organization_id, campaign_id, bucket);
CREATE INDEX {name}_bucket ON {name} (organization_id, bucket);
INSERT INTO {name} (organization_id, campaign_id, bucket, {SUMS})
SELECT organization_id, campaign_id, date_trunc('{unit}', bucket), {sums}
FROM campaign_rollups GROUP BY 1, 2, 3;
"""


def upgrade() -> None:
    # Writers take this lock (ROW EXCLUSIVE) to flush: none runs while the
    # existing rollups are copied, so none is missed.
    op.execute("LOCK TABLE campaign_rollups IN SHARE MODE")
    op.execute(_table("campaign_rollups_minute", "minute"))
    op.execute(_table("campaign_rollups_hour", "hour"))


def downgrade() -> None:
    op.execute("DROP TABLE campaign_rollups_hour; DROP TABLE campaign_rollups_minute")
