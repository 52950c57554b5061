"""API-only settings, read from ``HERALD_API_*`` variables (next to the shared ``Settings``)."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_API_", extra="ignore")

    rate_limit: int = Field(100, ge=1, description="requests per API key per rate window")
    rate_window: int = Field(1, ge=1, description="rate-limit window, seconds")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body (413 beyond)")
    max_webhook_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest webhook body (provider batches)")
    public_url: str | None = Field(
        None, description="the URL providers call (e.g. https://herald.example.com); Twilio signs the full URL it called"
    )
    commit_stall_seconds: float = Field(
        120.0, gt=0, description="/healthz fails when a partition with lag has not committed for this long"
    )
    health_cache_seconds: float = Field(2.0, ge=0, description="how long /healthz reuses its last Kafka offsets sample")
    key_cache_seconds: float = Field(5.0, ge=0, description="how long a looked-up API key is trusted (revocation delay)")
    template_cache_seconds: float = Field(10.0, ge=0, description="how long a known template's channels are cached")
