"""Gateway settings, from ``CAMPAIGN_ANALYTICS_*`` environment variables or arguments."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Logs as text for people, or as JSON lines (one object per record) for "
        "machines.",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain); with tls_key, the gateway serves HTTPS."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    grpc_ca: Path | None = Field(
        default=None,
        description="PEM trust root of the gRPC server's certificate; when set, the gateway "
        "calls the server over TLS.",
    )
    grpc_server_name: str | None = Field(
        default=None,
        description="The name the gRPC server's certificate must carry, when it is not the "
        "host of grpc_target.",
    )
    cors_origins: list[str] = Field(
        default=["*"],
        description="Origins whose pages may call the API from a browser (keys travel in "
        "the authorization header, never in cookies, so any origin is the default).",
    )

    @model_validator(mode="after")
    def _tls_cert_and_key_together(self) -> "GatewaySettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HTTPS needs both a certificate (tls_cert) and its key (tls_key)")
        return self
