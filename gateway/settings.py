"""Gateway settings, from ``CAMPAIGN_ANALYTICS_*`` environment variables or arguments."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPAIGN_ANALYTICS_", extra="ignore")

    grpc_target: str = Field(
        default="127.0.0.1:50051", description="Address of the analytics gRPC server (host:port)."
    )
    host: str = Field(default="127.0.0.1", description="Address the REST gateway listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="REST port (0 picks a free one).")
    request_timeout: float = Field(
        default=10.0, gt=0, description="Deadline of each gRPC call, in seconds."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Largest request body; larger ones get 413."
    )
    access_log: bool = Field(default=False, description="Log one line per request.")
    cors_origins: list[str] = Field(
        default=["*"],
        description="Origins whose pages may call the API from a browser (keys travel in "
        "the authorization header, never in cookies, so any origin is the default).",
    )
