"""Initial schema: organizations, keys, campaigns, events, rollups,
CampaignAnalytics, sessions and dead letters.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

COUNTERS = """
    impressions bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    conversions bigint NOT NULL DEFAULT 0,
    views bigint NOT NULL DEFAULT 0,
    engagements bigint NOT NULL DEFAULT 0,
    completions bigint NOT NULL DEFAULT 0,
    skips bigint NOT NULL DEFAULT 0,
"""

UPGRADE = f"""
CREATE TABLE organizations (
    organization_id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    organization_id text COLLATE "C" NOT NULL REFERENCES organizations,
    key_id text COLLATE "C" NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (organization_id, key_id)
);

CREATE TABLE campaigns (
    organization_id text COLLATE "C" NOT NULL REFERENCES organizations,
    campaign_id text COLLATE "C" NOT NULL,
    name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, campaign_id)
);
-- Campaign ids are unique across organizations, so that an event naming
-- another organization's campaign is told apart from an unknown one.
CREATE UNIQUE INDEX campaigns_campaign_id_key ON campaigns (campaign_id);

CREATE TABLE events (
    organization_id text COLLATE "C" NOT NULL,
    event_id uuid NOT NULL,
    campaign_id text COLLATE "C" NOT NULL,
    event_type smallint NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    value_micros bigint,
    session_id text COLLATE "C",
    duration double precision,
    metadata jsonb,
    PRIMARY KEY (organization_id, event_id)
);

CREATE TABLE campaign_rollups (
    organization_id text COLLATE "C" NOT NULL,
    campaign_id text COLLATE "C" NOT NULL,
    bucket timestamptz NOT NULL,
    {COUNTERS}
    spent_micros bigint NOT NULL DEFAULT 0,
    conversion_value_micros bigint NOT NULL DEFAULT 0,
    view_time_sum double precision NOT NULL DEFAULT 0,
    view_time_count bigint NOT NULL DEFAULT 0,
    -- Sessions whose first event fell in this second, and how many of them
    -- have had exactly one event so far (bounces).
    sessions bigint NOT NULL DEFAULT 0,
    bounced_sessions bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, campaign_id, bucket)
) WITH (fillfactor = 70);
CREATE INDEX campaign_rollups_bucket ON campaign_rollups (organization_id, bucket);

CREATE TABLE campaign_analytics (
    organization_id text COLLATE "C" NOT NULL,
    campaign_id text COLLATE "C" NOT NULL,
    date date NOT NULL,
    {COUNTERS}
    spent numeric(20, 6) NOT NULL DEFAULT 0,
    conversion_value numeric(20, 6) NOT NULL DEFAULT 0,
    ctr double precision NOT NULL DEFAULT 0,
    conversion_rate double precision NOT NULL DEFAULT 0,
    cpc double precision NOT NULL DEFAULT 0,
    cpa double precision NOT NULL DEFAULT 0,
    engagement_rate double precision NOT NULL DEFAULT 0,
    completion_rate double precision NOT NULL DEFAULT 0,
    skip_rate double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, campaign_id, date)
) WITH (fillfactor = 70);

-- Sessions of each campaign, for the bounce figures kept in campaign_rollups.
-- event_count counts to 2 (one event, or more): all a bounce needs, so a
-- session is written at most twice, and its update stays on the page (HOT).
CREATE TABLE campaign_sessions (
    organization_id text COLLATE "C" NOT NULL,
    campaign_id text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    first_event_at timestamptz NOT NULL,
    event_count smallint NOT NULL CHECK (event_count IN (1, 2)),
    PRIMARY KEY (organization_id, campaign_id, session_id)
) WITH (fillfactor = 70);

CREATE TABLE dead_letters (
    organization_id text COLLATE "C" NOT NULL,
    dead_letter_id uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    event_index integer NOT NULL,
    field text NOT NULL,
    code text NOT NULL,
    reason text NOT NULL,
    payload text NOT NULL,
    PRIMARY KEY (organization_id, dead_letter_id)
);
"""

DOWNGRADE = """
DROP TABLE dead_letters, campaign_sessions, campaign_analytics, campaign_rollups,
    events, campaigns, api_keys, organizations;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
