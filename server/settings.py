"""Server settings, from flags and ``CAMPAIGN_ANALYTICS_*`` environment variables."""

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPAIGN_ANALYTICS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CAMPAIGN_ANALYTICS_DATABASE_URL"),
        description="PostgreSQL URL; unset runs an embedded PostgreSQL in data_dir.",
    )
    data_dir: Path = Field(Path("data"), description="Folder of the embedded PostgreSQL.")
    host: str = Field("127.0.0.1", description="Address the gRPC server listens on.")
    grpc_port: int = Field(50051, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of /metrics for Prometheus (0: none)."
    )
    buffer_size: int = Field(100, ge=1, description="Flush when this many events wait.")
    flush_interval_ms: int = Field(5000, ge=1, description="Flush at least this often.")
    buffer_capacity: int = Field(
        100_000,
        ge=1,
        description="Most events held, from decoding to commit; beyond it ingest answers 429.",
    )
    max_flush_events: int = Field(20_000, ge=1, description="Most events in one transaction.")
    writer_connections: int = Field(2, ge=1, le=16, description="Flushes written at once.")
    commit_delay_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="How long a small flush with several callers waits for more (0: never).",
    )
    max_batch_events: int = Field(5_000, ge=1, description="Most events in one request.")
    max_event_bytes: int = Field(32 * 1024, ge=256, description="Largest event, in bytes.")
    max_future_seconds: int = Field(24 * 3600, description="How far ahead a timestamp may be.")
    max_age_seconds: int = Field(30 * 24 * 3600, description="How old a timestamp may be.")
    key_cache_seconds: float = Field(5.0, ge=0, description="How long a checked key is trusted.")
    rate_limit_calls_per_second: float = Field(
        10_000, ge=0, description="Calls per second per API key (0: no limit)."
    )
    rate_limit_events_per_second: float = Field(
        100_000, ge=0, description="Events per second per API key (0: no limit)."
    )
    rate_limit_burst_seconds: float = Field(
        3.0, gt=0, description="A key may burst this many seconds' worth of its rate limits."
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) of the server; with tls_key, gRPC uses TLS."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    max_queue_size: int = Field(100, ge=1, description="Most updates queued per subscription.")
    update_interval_ms: int = Field(
        250, ge=0, description="Least time between two updates of one campaign."
    )
    subscription_idle_seconds: float = Field(
        1800.0, gt=0, description="Subscriptions unread this long are removed."
    )
    heartbeat_seconds: float = Field(15.0, gt=0, description="Heartbeat of idle update streams.")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="Drain time on SIGTERM.")
    migrate: bool = Field(True, description="Apply database migrations at start-up.")

    @model_validator(mode="after")
    def _tls_cert_and_key_together(self) -> "ServerSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate (tls_cert) and its key (tls_key)")
        return self

    @model_validator(mode="after")
    def _buffer_holds_a_batch(self) -> "ServerSettings":
        if self.buffer_capacity < self.max_batch_events:
            raise ValueError(
                f"buffer_capacity ({self.buffer_capacity}) must be at least max_batch_events "
                f"({self.max_batch_events}), or a full batch could never be accepted"
            )
        return self
